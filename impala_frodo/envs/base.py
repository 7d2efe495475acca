"""What every batched env is: :class:`BatchedEnv`, its :class:`BatchStep`, and the
:class:`GroundTruth` an env may know and an agent never sees.

Semantics shared by every implementation (auto-reset, terminal versus truncated steps,
seeding, storage dtype) are described in :mod:`impala_frodo.envs.batched`.
"""

from __future__ import annotations

import abc
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class GroundTruth:
    """What an env knows that an agent cannot observe, for evaluation only: the true state
    values (the random walk), read by the learner's probe
    (:class:`~impala_frodo.reports.probes.GroundTruthProbe`) and by nothing that learns."""

    true_values: np.ndarray  # [S] float32, the true value of each state at the unroll's end
    steps_since_switch: int  # env 0's steps since its reward last switched (-1: never)


@dataclass(frozen=True)
class BatchStep:
    """One step of B environments.

    Attributes:
        obs: ``[B, *obs_shape]`` in ``observation_dtype``: the next observation; where an
            episode ended at this step it is already the first observation of the next episode.
        rewards: float32 ``[B]``.
        terminated: bool ``[B]``: the episode reached a terminal state (discount 0).
        truncated: bool ``[B]``: the episode was cut by a time limit and is *not* terminal
            (bootstrap from ``final_obs``). Never true where ``terminated`` is.
        final_obs: ``[N, *obs_shape]`` in ``observation_dtype``: the last observations of the
            episodes truncated at this step, rows in the order of ``np.flatnonzero(truncated)``
            (N may be 0).
        raw_rewards: float32 ``[B]`` or None: the unclipped rewards where ``rewards`` are
            clipped for learning (Atari); episode returns sum these. None: ``rewards`` are.
    """

    obs: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_obs: np.ndarray
    raw_rewards: np.ndarray | None = None


def check_num_envs(num_envs: Any) -> int:
    if isinstance(num_envs, bool) or not isinstance(num_envs, numbers.Integral):
        raise ValueError(f"num_envs must be an int, got {num_envs!r}")
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    return int(num_envs)


class BatchedEnv(abc.ABC):
    """B environments stepped together, auto-resetting.

    Attributes:
        num_envs: B.
        observation_shape: the shape of one env's observation.
        num_actions: actions are ints in ``[0, num_actions)``.
        observation_dtype: the dtype observations are returned and stored in.
        observation_scale: the network's input is ``observation_scale * obs`` as float.
    """

    num_envs: int
    observation_shape: tuple[int, ...]
    num_actions: int
    observation_dtype: np.dtype = np.dtype(np.float32)
    observation_scale: float = 1.0

    @abc.abstractmethod
    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every env; returns ``[B, *observation_shape]`` in ``observation_dtype``."""

    @abc.abstractmethod
    def step(self, actions: np.ndarray) -> BatchStep:
        """Take int actions ``[B]`` in every env (auto-resetting the ones that end)."""

    def close(self) -> None:  # noqa: B027 (an optional hook, not abstract)
        """Release resources (nothing to do for the numpy envs)."""

    def ground_truth(self) -> GroundTruth | None:
        """What the env knows that the agent cannot observe, for evaluation (the random
        walk's true values); ``None`` for most envs."""
        return None

    def state_observations(self) -> np.ndarray | None:
        """``[S, *observation_shape]``: the observation of every state, where the env has
        few enough to list (the random walk); ``None`` otherwise."""
        return None

    def __enter__(self) -> BatchedEnv:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_actions(self, actions: Any) -> np.ndarray:
        """Validate ``actions``: integers of shape ``[B]`` in ``[0, num_actions)``."""
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(
                f"actions must have shape ({self.num_envs},) (one per env), got {actions.shape}"
            )
        if not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"actions must be integers, got dtype {actions.dtype}")
        low, high = actions.min(), actions.max()
        if low < 0 or high >= self.num_actions:
            raise ValueError(
                f"actions must be in [0, {self.num_actions}), got values in [{low}, {high}]"
            )
        return actions

    def _empty_final_obs(self) -> np.ndarray:
        return np.zeros((0, *self.observation_shape), dtype=self.observation_dtype)
