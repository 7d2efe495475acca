"""Catch and the random walk as B envs in numpy, vectorised over B.

With B = 1 and the same seed they reproduce the single env's random draws exactly
(one shared ``np.random.Generator``, drawn with ``size=n`` where the single env draws
scalars).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np

from impala_frodo.envs import catch, random_walk
from impala_frodo.envs.base import BatchedEnv, BatchStep, GroundTruth, check_num_envs


class _NumpyBatchedEnv(BatchedEnv):
    """Shared seeding and reset bookkeeping of the numpy envs."""

    def __init__(self, num_envs: int, seed: int | None) -> None:
        self.num_envs = check_num_envs(num_envs)
        self._rng = np.random.default_rng(seed)
        self._env_index = np.arange(self.num_envs)
        self._started = False

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every env (reseeding if ``seed`` is given); float32 ``[B, *obs_shape]``."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._reset_envs(self._env_index)
        self._started = True
        return self._observations()

    def _require_reset(self) -> None:
        if not self._started:
            raise RuntimeError(f"{type(self).__name__}.step() called before reset()")

    @abc.abstractmethod
    def _reset_envs(self, index: np.ndarray) -> None:
        """Start new episodes in the envs ``index`` (int ``[n]``)."""

    @abc.abstractmethod
    def _observations(self) -> np.ndarray:
        """Float32 ``[B, *obs_shape]`` of the current states."""


class BatchedCatch(_NumpyBatchedEnv):
    """B Catch games in numpy; the dynamics of ``catch.Catch`` (bsuite).

    Observations float32 ``[B, rows, columns]``; 3 actions (left, stay, right).
    ``random_start_row``: each env's first episode after ``reset()`` drops its ball from its
    own random row, so the envs end their episodes at different steps (``catch.Catch``).
    """

    def __init__(
        self,
        num_envs: int,
        rows: int = 10,
        columns: int = 5,
        random_start_row: bool = False,
        seed: int | None = None,
    ) -> None:
        catch.validate_catch_args(rows, columns, random_start_row)
        super().__init__(num_envs, seed)
        self.rows = int(rows)
        self.columns = int(columns)
        self.random_start_row = bool(random_start_row)
        self.observation_shape = (self.rows, self.columns)
        self.num_actions = len(catch.ACTION_DELTAS)
        self._deltas = np.asarray(catch.ACTION_DELTAS, dtype=np.int64)
        self._ball_x = np.zeros(self.num_envs, dtype=np.int64)
        self._ball_y = np.zeros(self.num_envs, dtype=np.int64)
        self._paddle_x = np.full(self.num_envs, self.columns // 2, dtype=np.int64)

    def step(self, actions: np.ndarray) -> BatchStep:
        """Move paddles, drop balls; terminal rewards +1 (caught) / -1 (missed), else 0."""
        self._require_reset()
        actions = self._check_actions(actions)
        moved = self._paddle_x + self._deltas[actions]
        self._paddle_x = np.minimum(np.maximum(moved, 0), self.columns - 1)  # np.clip, faster
        self._ball_y += 1
        terminated = self._ball_y == self.rows - 1
        caught = self._paddle_x == self._ball_x
        rewards = np.where(terminated, np.where(caught, 1.0, -1.0), 0.0).astype(np.float32)
        ended = np.flatnonzero(terminated)
        if ended.size:
            self._reset_envs(ended)
        return BatchStep(
            obs=self._observations(),
            rewards=rewards,
            terminated=terminated,
            truncated=np.zeros(self.num_envs, dtype=bool),
            final_obs=self._empty_final_obs(),
        )

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every env; with ``random_start_row`` each ball starts on its own random row."""
        obs = super().reset(seed)
        if self.random_start_row:
            self._ball_y[:] = self._rng.integers(self.rows - 1, size=self.num_envs)
            obs = self._observations()
        return obs

    def _reset_envs(self, index: np.ndarray) -> None:
        self._ball_x[index] = self._rng.integers(self.columns, size=index.size)
        self._ball_y[index] = 0
        self._paddle_x[index] = self.columns // 2

    def _observations(self) -> np.ndarray:
        obs = np.zeros((self.num_envs, self.rows, self.columns), dtype=np.float32)
        obs[self._env_index, self._ball_y, self._ball_x] = 1.0
        obs[self._env_index, self.rows - 1, self._paddle_x] = 1.0
        return obs


class BatchedRandomWalk(_NumpyBatchedEnv):
    """B non-stationary random walks in numpy; the dynamics of ``NonStationaryRandomWalk``.

    Each env has its own step counter; they all step together, so their left rewards switch
    together. Observations float32 ``[B, 5]`` one-hot; 2 actions, ignored.
    """

    def __init__(
        self,
        num_envs: int,
        switch_every: int = 960,
        left_rewards: Sequence[float] = (0.0, -1.0),
        seed: int | None = None,
    ) -> None:
        rewards = random_walk.validate_random_walk_args(switch_every, left_rewards)
        super().__init__(num_envs, seed)
        self.switch_every = int(switch_every)
        self._left_reward_cycle = np.asarray(rewards, dtype=np.float64)
        self.observation_shape = (random_walk.NUM_STATES,)
        self.num_actions = 2
        self._eye = random_walk.state_observations()
        self._state = np.full(self.num_envs, random_walk.START_STATE, dtype=np.int64)
        self._num_steps = np.zeros(self.num_envs, dtype=np.int64)

    @property
    def num_steps(self) -> np.ndarray:
        """Int ``[B]``: steps taken by each env since construction (``reset`` keeps them)."""
        return self._num_steps.copy()

    @property
    def left_rewards(self) -> np.ndarray:
        """Float64 ``[B]``: the left-exit reward each env's next step uses."""
        return random_walk.left_reward_at(
            self._num_steps, self.switch_every, self._left_reward_cycle
        )

    def true_values(self, gamma: float = 1.0) -> np.ndarray:
        """Float64 ``[B, 5]``: each env's true state values for its current left reward."""
        cycle_values = np.stack(
            [random_walk.random_walk_true_values(r, gamma) for r in self._left_reward_cycle]
        )
        phase = (self._num_steps // self.switch_every) % len(self._left_reward_cycle)
        return cycle_values[phase]

    def steps_since_switch(self) -> np.ndarray:
        """Int ``[B]``: env steps since each env's left reward last switched (-1 before the
        first switch)."""
        return np.where(
            self._num_steps >= self.switch_every, self._num_steps % self.switch_every, -1
        )

    def state_observations(self) -> np.ndarray:
        """Float32 ``[5, 5]``: row i is the observation of state index i."""
        return random_walk.state_observations()

    def ground_truth(self) -> GroundTruth:
        """Env 0's true state values now, and its steps since the reward last switched."""
        return GroundTruth(
            true_values=self.true_values()[0].astype(np.float32),
            steps_since_switch=int(self.steps_since_switch()[0]),
        )

    def step(self, actions: np.ndarray) -> BatchStep:
        """Move every walk left or right w.p. 1/2; +1 on a right exit, L on a left exit."""
        self._require_reset()
        self._check_actions(actions)
        left_rewards = self.left_rewards
        move_right = self._rng.random(self.num_envs) < 0.5
        self._num_steps += 1
        nxt = self._state + np.where(move_right, 1, -1)
        exit_right = nxt >= random_walk.NUM_STATES
        exit_left = nxt < 0
        rewards = np.where(exit_right, 1.0, np.where(exit_left, left_rewards, 0.0))
        terminated = exit_right | exit_left
        self._state = np.where(terminated, random_walk.START_STATE, nxt)
        return BatchStep(
            obs=self._observations(),
            rewards=rewards.astype(np.float32),
            terminated=terminated,
            truncated=np.zeros(self.num_envs, dtype=bool),
            final_obs=self._empty_final_obs(),
        )

    def _reset_envs(self, index: np.ndarray) -> None:
        self._state[index] = random_walk.START_STATE

    def _observations(self) -> np.ndarray:
        return self._eye[self._state]
