"""Any Gymnasium env with a ``Discrete`` action space as B envs stepped in a loop."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from impala_frodo.envs import minatar_envs
from impala_frodo.envs.base import BatchedEnv, BatchStep, check_num_envs


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
        self.num_envs = check_num_envs(num_envs)
        self.env_id = check_registered(env_id)
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
        self._format = ObservationFormat(self.env_id, env.observation_space)
        self.observation_shape = self._format.shape
        self.observation_dtype = self._format.dtype
        self.observation_scale = self._format.scale

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
        return self._format.convert(obs)


class ObservationFormat:
    """How a Gymnasium observation space is stored (see :class:`GymnasiumBatchedEnv`):
    ``shape``, ``dtype``, ``scale`` and :meth:`convert`. A one-line ``ValueError`` for a
    space that cannot be flattened to a vector."""

    def __init__(self, env_id: str, space: spaces.Space) -> None:
        self.space = space
        self.image = _is_image_space(space)
        if self.image:
            self.shape: tuple[int, ...] = tuple(int(s) for s in space.shape)
            self.dtype, self.scale = _image_storage(space)
            return
        try:
            flat_dim = spaces.flatdim(space)
        except (ValueError, NotImplementedError, TypeError) as exc:
            raise ValueError(
                f"env {env_id!r} has observation space {space}, which cannot be "
                "flattened to a vector"
            ) from exc
        self.shape = (int(flat_dim),)
        self.dtype, self.scale = np.dtype(np.float32), 1.0

    def convert(self, obs: Any) -> np.ndarray:
        """One observation as an array of ``shape`` (an image: as it is, no copy)."""
        if self.image:
            return np.asarray(obs)
        return np.asarray(spaces.flatten(self.space, obs), dtype=np.float32)


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


def check_registered(env_id: Any) -> str:
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
