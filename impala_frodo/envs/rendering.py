"""One env that draws itself: the agent's observations and a picture of each step.

A video of the agent needs every frame of an episode, its last one included, which a
batched env (auto-resetting within the step) never shows. :class:`RenderingEnv` is one
Gymnasium env made with ``render_mode="rgb_array"``, stepped until the episode ends, whose
observations are what the batched env of the same id gives the agent (same shape, dtype
and scale), so the policy acts on it as in training:

- Catch and the random walk draw pixel pictures of their boards
  (:mod:`impala_frodo.envs.pictures`);
- MinAtar draws its channels in its own palette;
- Atari (``ALE/<Game>-v5``) shows the game's colour screen, while the agent sees
  :class:`~impala_frodo.envs.atari.BatchedAtari`'s frames (Gymnasium's
  ``AtariPreprocessing`` and ``FrameStackObservation`` with the run's settings);
- any other Gymnasium env draws what its own ``rgb_array`` mode draws.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

from impala_frodo.envs import catch, random_walk
from impala_frodo.envs.atari import AtariSettings, is_atari_id
from impala_frodo.envs.gymnasium_batched import ObservationFormat, check_registered

#: Frames per second of a video where the env does not say (``metadata["render_fps"]``).
DEFAULT_FPS = 15


class RenderingEnv:
    """One env with ``render_mode="rgb_array"``: ``reset``, ``step`` and ``frame``.

    Observations as the batched env of ``env_id`` stores them (``observation_shape``,
    ``observation_dtype``, ``observation_scale``); rewards are the raw score (Atari's
    unclipped). ``fps``: the rate at which the frames play in real time.
    """

    def __init__(self, env_id: str, **env_kwargs: Any) -> None:
        self.env_id = env_id
        if is_atari_id(env_id):
            self._env, self.fps = _atari_env(env_id, env_kwargs)
        else:
            check_registered(env_id)
            try:
                self._env = gymnasium.make(
                    env_id, render_mode="rgb_array", disable_env_checker=True, **env_kwargs
                )
            except gymnasium.error.Error as e:
                raise ValueError(f"env {env_id!r} cannot draw frames (rgb_array): {e}") from None
            self.fps = int(self._env.metadata.get("render_fps") or DEFAULT_FPS)
        space = self._env.action_space
        if not isinstance(space, gymnasium.spaces.Discrete):
            raise ValueError(f"env {env_id!r} has action space {space}; only Discrete is supported")
        self.num_actions = int(space.n)
        self._action_start = int(space.start)
        self._format = ObservationFormat(env_id, self._env.observation_space)
        # Our own envs' batched versions keep their observations' shapes (Catch's board).
        self._native = env_id in (catch.ENV_ID, random_walk.ENV_ID)
        self.observation_shape = (
            self._env.observation_space.shape if self._native else self._format.shape
        )
        self.observation_dtype = self._format.dtype
        self.observation_scale = self._format.scale

    def reset(self, seed: int | None = None) -> np.ndarray:
        obs, _ = self._env.reset(seed=seed)
        return self._observation(obs)

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        """``(observation, reward, episode over)``: terminated or truncated."""
        obs, reward, terminated, truncated, _ = self._env.step(self._action_start + int(action))
        return self._observation(obs), float(reward), bool(terminated or truncated)

    def frame(self) -> np.ndarray:
        """The current state as uint8 ``[H, W, 3]`` RGB."""
        try:
            image = np.asarray(self._env.render())
        except gymnasium.error.Error as e:  # e.g. a renderer's package missing
            raise ValueError(f"env {self.env_id!r} cannot draw frames: {e}") from None
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"env {self.env_id!r} renders {image.shape}, not an RGB image")
        if image.dtype != np.uint8:  # MinAtar's palette: floats in [0, 1]
            image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
        return image

    def close(self) -> None:
        self._env.close()

    def __enter__(self) -> RenderingEnv:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _observation(self, obs: Any) -> np.ndarray:
        if self._native:
            return np.asarray(obs, dtype=np.float32)
        return np.asarray(self._format.convert(obs), dtype=self.observation_dtype)


class _ChannelsLast(gymnasium.ObservationWrapper):
    """``[C, H, W]`` frame stacks as ``[H, W, C]``, the layout of every image here."""

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        shape = (*space.shape[1:], space.shape[0])
        self.observation_space = gymnasium.spaces.Box(0, 255, shape, np.uint8)

    def observation(self, observation: Any) -> np.ndarray:
        return np.moveaxis(np.asarray(observation), 0, -1)


def _atari_env(env_id: str, env_kwargs: dict[str, Any]) -> tuple[gymnasium.Env, int]:
    """Gymnasium's ``ALE/<Game>-v5`` with the preprocessing of
    :class:`~impala_frodo.envs.atari.BatchedAtari` (``tests/test_atari.py`` holds the two
    equal, frame by frame), and its real-time frame rate."""
    import ale_py
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

    from impala_frodo.envs.atari import check_atari_id

    check_atari_id(env_id)
    s = AtariSettings(**env_kwargs)
    gymnasium.register_envs(ale_py)
    env = gymnasium.make(
        env_id,
        frameskip=1,
        repeat_action_probability=float(s.repeat_action_probability),
        full_action_space=s.full_action_space,
        max_num_frames_per_episode=s.max_episode_frames,
        render_mode="rgb_array",
    )
    env = AtariPreprocessing(
        env, noop_max=s.noop_max, frame_skip=s.frameskip, screen_size=s.frame_size
    )
    return _ChannelsLast(FrameStackObservation(env, s.stack)), max(1, 60 // s.frameskip)
