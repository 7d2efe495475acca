"""The unit of experience an actor produces: a time-major ``[T, B]`` batch of unrolls.

:class:`Trajectory` is numpy only, cheap to pickle and to put in Ray's object store, and
importing this module does not import torch (the rollout actors never do).
:class:`~impala_frodo.rule.batch.Batch` is the learner's view of several of them.

:class:`UnrollSummary` is what the run's books need of one (steps, episodes, the policy
version, who made it and where), without its arrays: with data-parallel learners the
driver reads only summaries and each learner fetches its own unrolls
(:class:`UnrollSource` is either: a trajectory in hand, or a reference to one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from impala_frodo.envs.base import GroundTruth


@dataclass
class Trajectory:
    """T steps of B envs acted on by the behaviour policy mu.

    Observations stay in the env's storage dtype (uint8 for byte images: a quarter of the
    bytes to pickle and ship); :meth:`~impala_frodo.rule.batch.Batch.from_trajectories` converts
    them to float on the learner's device, times ``obs_scale``.

    ``continues[t, b]`` is 0 where an episode ended at step t (terminated or
    truncated) and 1 elsewhere; the objectives multiply it by gamma. For a
    truncated (time-limit) end the learner bootstraps from V of the last
    observation, ``truncation_obs``, listed at flat indices
    ``truncation_index = t * B + b``.
    """

    obs: np.ndarray  # [T+1, B, *obs_shape]: x_0 .. x_T, float32 or uint8 (byte images)
    actions: np.ndarray  # [T, B] int64
    rewards: np.ndarray  # [T, B] float32, the reward after a_t
    continues: np.ndarray  # [T, B] float32, 1 - (terminated or truncated)
    behaviour_log_probs: np.ndarray  # [T, B] float32, log mu(a_t | x_t)
    policy_version: int = 0
    truncation_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [N]
    truncation_obs: np.ndarray | None = None  # [N, *obs_shape], obs's dtype
    episode_returns: list[float] = field(default_factory=list)  # episodes finished in this unroll
    episode_lengths: list[int] = field(default_factory=list)
    ground_truth: GroundTruth | None = None  # the env's, at the unroll's end (random walk)
    actor_id: int = 0
    actor_pid: int = 0  # the acting process: a new one on the same actor is a restart
    obs_scale: float = 1.0  # the network's input is obs_scale * obs (1/255 for uint8 pixels)

    @property
    def unroll_length(self) -> int:
        return self.actions.shape[0]

    @property
    def num_envs(self) -> int:
        return self.actions.shape[1]

    @property
    def num_steps(self) -> int:
        """Env steps in this trajectory: T * B."""
        return self.actions.size

    @property
    def nbytes(self) -> int:
        """Bytes of its arrays (what shipping it moves, pickling's framing aside)."""
        arrays = [self.obs, self.actions, self.rewards, self.continues, self.behaviour_log_probs]
        arrays.append(self.truncation_index)
        if self.truncation_obs is not None:
            arrays.append(self.truncation_obs)
        return sum(int(a.nbytes) for a in arrays)

    @property
    def summary(self) -> UnrollSummary:
        return UnrollSummary.of(self)

    def trajectory(self) -> Trajectory:
        """Itself: a trajectory in hand is its own :class:`UnrollSource`."""
        return self


@dataclass(frozen=True)
class UnrollSummary:
    """What the books and the driver read of an unroll: no observations, no actions.

    ``node_id``: the Ray node whose object store holds the unroll ("" outside Ray), so a
    learner on that node can be given it; ``nbytes``: the unroll's :attr:`Trajectory.nbytes`.
    """

    num_steps: int
    policy_version: int
    episode_returns: list[float]
    episode_lengths: list[int]
    actor_id: int
    actor_pid: int
    nbytes: int
    ground_truth: GroundTruth | None = None
    node_id: str = ""

    @classmethod
    def of(cls, trajectory: Trajectory, node_id: str = "") -> UnrollSummary:
        return cls(
            num_steps=trajectory.num_steps,
            policy_version=trajectory.policy_version,
            episode_returns=list(trajectory.episode_returns),
            episode_lengths=list(trajectory.episode_lengths),
            actor_id=trajectory.actor_id,
            actor_pid=trajectory.actor_pid,
            nbytes=trajectory.nbytes,
            ground_truth=trajectory.ground_truth,
            node_id=node_id,
        )


class UnrollSource(Protocol):
    """An unroll the learner can account for (``summary``) and fetch (``trajectory()``):
    a :class:`Trajectory` in hand, or a reference to one in Ray's object store
    (:class:`~learner.cluster.actor_pool.Unroll`)."""

    @property
    def summary(self) -> UnrollSummary: ...

    def trajectory(self) -> Trajectory: ...
