"""Acting: a behaviour policy mu stepping a batched env, cut into [T, B] unrolls.

:class:`Unroller` is what every rollout actor runs (:class:`~actors.rollout.RolloutActor`,
under Ray or driven directly by the synchronous trainer), so all produce the same
:class:`~impala_frodo.acting.trajectory.Trajectory`. Episodes cross unroll boundaries: the last
observation of one unroll is the first of the next, and returns accumulate until the
episode ends.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from impala_frodo.acting.trajectory import Trajectory
from impala_frodo.envs.base import BatchedEnv

#: ``obs [B, *obs_shape] -> (actions [B] int64, log mu(a|x) [B] float32)``.
Policy = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class Unroller:
    """Unrolls ``env`` for T steps at a time with whatever policy it is given."""

    def __init__(self, env: BatchedEnv, unroll_length: int, seed: int | None = None) -> None:
        if unroll_length < 1:
            raise ValueError(f"unroll_length must be >= 1, got {unroll_length}")
        self.env = env
        self.unroll_length = unroll_length
        self._obs = env.reset(seed=seed)
        self._episode_return = np.zeros(env.num_envs, np.float64)
        self._episode_length = np.zeros(env.num_envs, np.int64)
        self.total_steps = 0

    def unroll(self, policy: Policy, policy_version: int = 0) -> Trajectory:
        env, steps, width = self.env, self.unroll_length, self.env.num_envs
        obs = np.empty((steps + 1, width, *env.observation_shape), env.observation_dtype)
        actions = np.empty((steps, width), np.int64)
        rewards = np.empty((steps, width), np.float32)
        continues = np.empty((steps, width), np.float32)
        log_probs = np.empty((steps, width), np.float32)
        trunc_index: list[np.ndarray] = []
        trunc_obs: list[np.ndarray] = []
        returns: list[float] = []
        lengths: list[int] = []

        obs[0] = self._obs
        for t in range(steps):
            actions[t], log_probs[t] = policy(obs[t])
            step = env.step(actions[t])
            obs[t + 1] = step.obs
            rewards[t] = step.rewards
            done = step.terminated | step.truncated
            continues[t] = ~done
            # Episode returns are the raw score where rewards are clipped (Atari).
            self._episode_return += step.rewards if step.raw_rewards is None else step.raw_rewards
            self._episode_length += 1
            if done.any():
                ended = np.flatnonzero(done)
                returns.extend(self._episode_return[ended].tolist())
                lengths.extend(self._episode_length[ended].tolist())
                self._episode_return[ended] = 0.0
                self._episode_length[ended] = 0
                if step.truncated.any():
                    trunc_index.append(t * width + np.flatnonzero(step.truncated))
                    trunc_obs.append(step.final_obs)
        self._obs = obs[steps]
        self.total_steps += steps * width

        return Trajectory(
            obs=obs,
            actions=actions,
            rewards=rewards,
            continues=continues,
            behaviour_log_probs=log_probs,
            policy_version=policy_version,
            truncation_index=np.concatenate(trunc_index) if trunc_index else np.zeros(0, np.int64),
            truncation_obs=np.concatenate(trunc_obs) if trunc_obs else None,
            obs_scale=env.observation_scale,
            episode_returns=returns,
            episode_lengths=lengths,
            ground_truth=env.ground_truth(),
        )
