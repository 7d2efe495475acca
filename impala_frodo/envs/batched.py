"""Batched, auto-resetting environments for the rollout code.

A ``BatchedEnv`` steps B environments at once. Where an episode ends, the env is reset within
the same step, so ``BatchStep.obs`` is always the observation the next action is taken from.
Terminal observations are dropped (their value is irrelevant: the discount is 0); the last
observations of *truncated* episodes (time limits, not terminals) are kept in
``BatchStep.final_obs`` so that the learner can bootstrap from them.

Seeding, for every implementation: ``seed`` at construction seeds the first ``reset()``;
``reset(seed=s)`` reseeds; ``reset()`` without a seed continues the current random streams.

- ``BatchedCatch``, ``BatchedRandomWalk``: pure numpy, vectorised over B, with the dynamics of
  ``Catch`` and ``NonStationaryRandomWalk``. With B = 1 and the same seed they reproduce the
  single env's random draws exactly (one shared ``np.random.Generator``, drawn with
  ``size=n`` where the single env draws scalars).
- ``GymnasiumBatchedEnv``: B ``gymnasium.make`` instances stepped in a loop, for any env with a
  ``Discrete`` action space; observations flattened to float32 1-D, except images (a ``Box`` of
  rank 3, ``[H, W, C]``), which keep their shape and, when they are bool or uint8 (MinAtar's
  bool channels, Atari's pixels), their bytes: one byte per pixel, not four.

Storage dtype: ``observation_dtype`` is what ``reset`` and ``step`` return and what unrolls
carry (float32 by default, uint8 for byte images); ``observation_scale`` times the stored value
is the network's input (1/255 for uint8 pixels in [0, 255], else 1). The consumers, the acting
policy and :class:`~impala_frodo.batch.Batch`, convert to float once, on their side.
  MinAtar's ids (``MinAtar/Breakout-v0`` ...) are registered on first use when the
  ``minatar`` package is installed (the ``minatar`` extra).
"""

from __future__ import annotations

import abc
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from impala_frodo.envs import catch, minatar_envs, random_walk
from impala_frodo.trajectory import GroundTruth


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


def _check_num_envs(num_envs: Any) -> int:
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


class _NumpyBatchedEnv(BatchedEnv):
    """Shared seeding and reset bookkeeping of the numpy envs."""

    def __init__(self, num_envs: int, seed: int | None) -> None:
        self.num_envs = _check_num_envs(num_envs)
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


class GymnasiumBatchedEnv(BatchedEnv):
    """B instances of any Gymnasium env with a ``Discrete`` action space, stepped in a loop.

    Observations are flattened (``gymnasium.spaces.flatten``) to float32 ``[flatdim]``, except
    images: a ``Box`` of rank 3 (``[H, W, C]``, channels last) keeps its shape and is written
    straight into the batch array (no flattening copy). Bool and uint8 images are kept as uint8
    (``observation_dtype``), uint8 pixels in [0, 255] with ``observation_scale = 1/255``; other
    images are float32. An action
    ``a`` in ``[0, n)`` is passed to the env as ``space.start + a``. A step that is both
    terminated and truncated counts as terminated.

    Args:
        env_id: a registered Gymnasium id (e.g. ``"CartPole-v1"``).
        num_envs: B.
        seed: seeds the first ``reset()``; env i gets the i-th seed drawn from
            ``np.random.SeedSequence(seed)``.
        **env_kwargs: passed to ``gymnasium.make`` (e.g. ``max_episode_steps``).
    """

    def __init__(
        self, env_id: str, num_envs: int, seed: int | None = None, **env_kwargs: Any
    ) -> None:
        self.num_envs = _check_num_envs(num_envs)
        self.env_id = _check_registered(env_id)
        self._envs: list[gymnasium.Env] = []
        try:
            for _ in range(self.num_envs):
                self._envs.append(gymnasium.make(env_id, **env_kwargs))
            self._setup_spaces(self._envs[0])
        except Exception:
            self.close()
            raise
        self._pending_seed = seed
        self._started = False

    def _setup_spaces(self, env: gymnasium.Env) -> None:
        action_space = env.action_space
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(
                f"env {self.env_id!r} has action space {action_space}; only Discrete action "
                "spaces are supported"
            )
        self.num_actions = int(action_space.n)
        self._action_start = int(action_space.start)
        self._obs_space = env.observation_space
        self._image = _is_image_space(self._obs_space)
        if self._image:
            self.observation_shape = tuple(int(s) for s in self._obs_space.shape)
            self.observation_dtype, self.observation_scale = _image_storage(self._obs_space)
            return
        try:
            flat_dim = spaces.flatdim(self._obs_space)
        except (ValueError, NotImplementedError, TypeError) as exc:
            raise ValueError(
                f"env {self.env_id!r} has observation space {self._obs_space}, which cannot be "
                "flattened to a vector"
            ) from exc
        self.observation_shape = (int(flat_dim),)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every env; ``[B, *observation_shape]`` in ``observation_dtype``."""
        if seed is None:
            seed, self._pending_seed = self._pending_seed, None
        seeds: list[int | None] = [None] * self.num_envs
        if seed is not None:
            state = np.random.SeedSequence(seed).generate_state(self.num_envs)
            seeds = [int(s) for s in state]
        obs = np.empty((self.num_envs, *self.observation_shape), dtype=self.observation_dtype)
        for i, (env, s) in enumerate(zip(self._envs, seeds, strict=True)):
            obs[i] = self._convert(env.reset(seed=s)[0])
        self._started = True
        return obs

    def step(self, actions: np.ndarray) -> BatchStep:
        """Step every env; reset the ones that ended; keep truncated episodes' last obs."""
        if not self._started:
            raise RuntimeError("GymnasiumBatchedEnv.step() called before reset()")
        actions = self._check_actions(actions)
        obs = np.empty((self.num_envs, *self.observation_shape), dtype=self.observation_dtype)
        rewards = np.empty(self.num_envs, dtype=np.float32)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        final_obs = []
        for i, env in enumerate(self._envs):
            ob, reward, term, trunc, _ = env.step(self._action_start + int(actions[i]))
            rewards[i] = reward
            terminated[i] = bool(term)
            truncated[i] = bool(trunc) and not terminated[i]
            if truncated[i]:
                final_obs.append(np.asarray(self._convert(ob), dtype=self.observation_dtype))
            if term or trunc:
                ob, _ = env.reset()
            obs[i] = self._convert(ob)
        return BatchStep(
            obs=obs,
            rewards=rewards,
            terminated=terminated,
            truncated=truncated,
            final_obs=np.stack(final_obs) if final_obs else self._empty_final_obs(),
        )

    def close(self) -> None:
        """Close every env."""
        for env in self._envs:
            env.close()
        self._envs = []

    def _convert(self, obs: Any) -> np.ndarray:
        """One observation as an array of ``observation_shape`` (an image: as it is, no copy)."""
        if self._image:
            return np.asarray(obs)
        return np.asarray(spaces.flatten(self._obs_space, obs), dtype=np.float32)


def _is_image_space(space: spaces.Space) -> bool:
    """A ``Box`` of rank 3: an image ``[H, W, C]``, channels last."""
    return isinstance(space, spaces.Box) and len(space.shape) == 3


def _image_storage(space: spaces.Box) -> tuple[np.dtype, float]:
    """``(observation_dtype, observation_scale)`` for an image space.

    Bool images and uint8 images are stored as uint8, a quarter of float32's bytes in every
    unroll; uint8 pixels reaching 255 are scaled by 1/255 where they are read as float.
    Any other image is stored as float32, as it is.
    """
    if space.dtype == np.bool_:
        return np.dtype(np.uint8), 1.0
    if space.dtype == np.uint8:
        return np.dtype(np.uint8), 1.0 / 255.0 if int(space.high.max()) == 255 else 1.0
    return np.dtype(np.float32), 1.0


def _check_registered(env_id: Any) -> str:
    """Return ``env_id`` if Gymnasium knows it, else raise a one-line ``ValueError``.

    MinAtar's ids are registered here on first use (``minatar`` itself registers them only
    when asked); without the package the error says how to install it.
    """
    if not isinstance(env_id, str):
        raise ValueError(f"env id must be a string, got {env_id!r}")
    if minatar_envs.is_minatar_id(env_id):
        minatar_envs.register_minatar_envs()
    try:
        gymnasium.spec(env_id)
    except gymnasium.error.Error as exc:
        raise ValueError(f"unknown env id {env_id!r}: not registered with gymnasium") from exc
    return env_id


def make_batched_env(
    env_id: str, num_envs: int, seed: int | None = None, **env_kwargs: Any
) -> BatchedEnv:
    """Build B auto-resetting envs: the numpy versions for our ids, Gymnasium for the rest.

    ``impala_frodo/Catch-v0`` takes ``rows``, ``columns``, ``random_start_row``;
    ``impala_frodo/RandomWalk-v0`` takes ``switch_every``, ``left_rewards``; ``ALE/<Game>-v5``
    (Atari, :class:`~impala_frodo.envs.atari.BatchedAtari`) takes the fields of
    :class:`~impala_frodo.envs.atari.AtariSettings`; any other id gets
    ``env_kwargs`` passed to ``gymnasium.make``. Raises ``ValueError`` for an unknown id.
    """
    if env_id == catch.ENV_ID:
        return BatchedCatch(num_envs, seed=seed, **env_kwargs)
    if env_id == random_walk.ENV_ID:
        return BatchedRandomWalk(num_envs, seed=seed, **env_kwargs)
    if env_id.startswith("ALE/"):  # Atari: the ALE's vector env (impala_frodo.envs.atari)
        from impala_frodo.envs.atari import BatchedAtari

        return BatchedAtari(env_id, num_envs, seed=seed, **env_kwargs)
    return GymnasiumBatchedEnv(env_id, num_envs, seed=seed, **env_kwargs)
