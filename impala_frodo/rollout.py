"""Acting: a behaviour policy mu stepping a batched env, cut into [T, B] unrolls.

:class:`Roller` is shared by the synchronous trainer and the Ray rollout
actors, so both produce the same :class:`~impala_frodo.trajectory.Trajectory`.
Episodes cross unroll boundaries: the last observation of one unroll is the
first of the next, and returns accumulate until the episode ends.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from impala_frodo.envs.batched import BatchedEnv
from impala_frodo.networks import AgentNet
from impala_frodo.trajectory import Trajectory, to_network_input

Policy = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class ActingPolicy:
    """mu: a CPU copy of the agent that samples actions and reports their log-probs.

    It takes observations as the env stores them (``observation_dtype``) and feeds the agent
    ``obs_scale * obs`` as float32, as :class:`~impala_frodo.trajectory.Batch` does.
    """

    def __init__(self, agent: AgentNet, seed: int = 0, obs_scale: float = 1.0) -> None:
        self.agent = agent.eval()
        self.version = 0
        self.obs_scale = obs_scale
        self._generator = torch.Generator().manual_seed(seed)

    def load(self, params: dict[str, Tensor], version: int) -> None:
        self.agent.load_state_dict(params, strict=True)
        self.version = version

    @torch.inference_mode()
    def __call__(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``obs [B, *obs_shape]`` to sampled ``actions [B]`` and ``log mu(a|x) [B]``."""
        logits, _ = self.agent(to_network_input(torch.from_numpy(obs), self.obs_scale))
        log_probs = torch.log_softmax(logits, dim=-1)
        # Gumbel-max sampling: argmax(log p + Gumbel noise) ~ Categorical(p).
        uniform = torch.rand(log_probs.shape, generator=self._generator).clamp_(min=1e-20)
        actions = torch.argmax(log_probs - torch.log(-torch.log(uniform)), dim=-1)
        chosen = log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        return actions.numpy(), chosen.numpy()


class DelayedWeights:
    """Hands out acting weights ``lag`` policy versions old: a policy lag set on purpose.

    ``push(version, params)`` records the learner's weights and returns the newest
    recorded ``(version, params)`` at least ``lag`` versions older than ``version``
    (the oldest recorded until there is one). With ``lag = 0`` it returns what it
    was given. Versions must not decrease.
    """

    def __init__(self, lag: int) -> None:
        if isinstance(lag, bool) or not isinstance(lag, int) or lag < 0:
            raise ValueError(f"lag must be an integer >= 0, got {lag!r}")
        self.lag = lag
        self._history: deque[tuple[int, dict[str, Tensor]]] = deque()

    def push(self, version: int, params: dict[str, Tensor]) -> tuple[int, dict[str, Tensor]]:
        if self._history and version < self._history[-1][0]:
            raise ValueError(f"versions must not decrease: {version} after {self._history[-1][0]}")
        self._history.append((version, params))
        # Drop snapshots once a newer one is itself old enough.
        while len(self._history) > 1 and self._history[1][0] <= version - self.lag:
            self._history.popleft()
        return self._history[0]


class Roller:
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
            self._episode_return += step.rewards
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

        true_values, steps_since_switch = None, None
        if hasattr(env, "true_values"):
            true_values = np.asarray(env.true_values())[0].astype(np.float32)
        if hasattr(env, "steps_since_switch"):
            steps_since_switch = int(env.steps_since_switch()[0])
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
            true_values=true_values,
            steps_since_switch=steps_since_switch,
        )
