"""Atari through the ALE's native vector env (``ale-py``): the optional ``atari`` extra.

:class:`BatchedAtari` steps B games in ``ale_py.vector_env.AtariVectorEnv``, which runs the
emulators and the standard preprocessing in C++ threads and returns uint8 frames. The frames
stay uint8 from the emulator to the learner's device (``observation_dtype``, with
``observation_scale = 1/255``), as MinAtar's do.

Channel order is handled here and only here: the ALE returns stacks channels first,
``[B, 4, 84, 84]``; :func:`channels_last` views them as ``[B, 84, 84, 4]``, the
``[H, W, C]`` layout of every image in this project (no copy: the unroll's buffer write is
the one copy, as for any env).

Settings (:class:`AtariSettings`), IMPALA's Atari protocol (Espeholt et al. 2018, which
follows DQN's, Mnih et al. 2015), unless a preset says otherwise:

- action repeat 4 (``frameskip``), the observation the max over the last two frames;
- 84 x 84 grayscale, the last 4 such frames stacked (``[84, 84, 4]``);
- up to 30 no-op actions at the start of each episode (``noop_max``; a random number in
  ``[0, noop_max]``, drawn per episode from the env's seed);
- the full action set of 18 (``full_action_space``), whatever the game's minimal set;
- an episode ends at game over (not at a life lost);
- rewards clipped to ``[-1, 1]`` for learning (``clip_rewards``) while the raw score is what
  the episode returns report (``BatchStep.raw_rewards``);
- an episode is cut after 108,000 frames (30 minutes of play; ``max_episode_frames``), a
  truncation the learner bootstraps from;
- sticky actions (Machado et al. 2018) as an option: ``repeat_action_probability``
  (0 here, IMPALA's setting; 0.25 is Machado et al.'s recommendation and Gymnasium's
  ``-v5`` default).

An env id ``ALE/<Game>-v5`` names the game only (Gymnasium's names, ``ALE/MsPacman-v5``);
the settings are the ones above, not Gymnasium's ``-v5`` defaults. Importing this module
does not import ``ale_py``.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from impala_frodo.envs.atari_scores import ATARI_57, GAMES_BY_GYM_NAME, gym_name
from impala_frodo.envs.base import BatchedEnv, BatchStep, check_num_envs

PREFIX = "ALE/"
INSTALL_HINT = "pip install 'impala-frodo[atari]' (python3 run.py installs it)"
_ID = re.compile(r"ALE/([A-Za-z0-9]+)(?:-v(\d+))?")
#: The env ids the presets use: ``ALE/<Game>-v5``.
ID_VERSION = 5


@dataclass(frozen=True)
class AtariSettings:
    """The ALE protocol, IMPALA's by default (see the module docstring)."""

    frameskip: int = 4
    noop_max: int = 30
    repeat_action_probability: float = 0.0
    full_action_space: bool = True
    max_episode_frames: int = 108_000
    clip_rewards: bool = True
    frame_size: int = 84
    stack: int = 4
    #: C++ threads stepping this env's games (one per actor process by default).
    num_threads: int = 1

    def __post_init__(self) -> None:
        for name in ("frameskip", "max_episode_frames", "frame_size", "stack", "num_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Atari setting {name} must be an integer >= 1, got {value!r}")
        if isinstance(self.noop_max, bool) or not isinstance(self.noop_max, int):
            raise ValueError(
                f"Atari setting noop_max must be an integer >= 0, got {self.noop_max!r}"
            )
        if self.noop_max < 0:
            raise ValueError(f"Atari setting noop_max must be an integer >= 0, got {self.noop_max}")
        p = self.repeat_action_probability
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p < 1.0:
            raise ValueError(f"repeat_action_probability must be in [0, 1), got {p!r}")
        for name in ("full_action_space", "clip_rewards"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"Atari setting {name} must be true or false")

    def to_kwargs(self) -> dict[str, Any]:
        """As ``env.kwargs`` (what a preset states)."""
        return asdict(self)


def is_atari_id(env_id: str) -> bool:
    """An id of the form ``ALE/...`` (the game is checked by :func:`atari_game`)."""
    return isinstance(env_id, str) and env_id.startswith(PREFIX)


def atari_installed() -> bool:
    return importlib.util.find_spec("ale_py") is not None


def atari_game(env_id: str) -> str:
    """The ROM id of ``ALE/<Game>-v5`` (``ALE/MsPacman-v5`` -> ``ms_pacman``); a one-line
    ``ValueError`` naming the games for an unknown one."""
    match = _ID.fullmatch(env_id)
    game = match and GAMES_BY_GYM_NAME.get(match.group(1))
    if game is None or (match.group(2) is not None and int(match.group(2)) != ID_VERSION):
        names = ", ".join(gym_name(g) for g in ATARI_57)
        raise ValueError(
            f"unknown Atari env id {env_id!r}: use ALE/<Game>-v{ID_VERSION} with one of the "
            f"57 games: {names}"
        )
    return game


def check_atari_id(env_id: str) -> str:
    """:func:`atari_game`, and the ``atari`` extra installed; one-line ``ValueError`` s."""
    game = atari_game(env_id)
    if not atari_installed():
        raise ValueError(f"Atari envs need the ale-py package: {INSTALL_HINT}")
    return game


def channels_last(frames: np.ndarray) -> np.ndarray:
    """``[N, C, H, W]`` (the ALE's stacks) as ``[N, H, W, C]``: a view, no copy.

    The one place the channel order changes.
    """
    return frames.transpose(0, 2, 3, 1)


class BatchedAtari(BatchedEnv):
    """B Atari games of one ROM in the ALE's C++ vector env, auto-resetting.

    Observations uint8 ``[B, 84, 84, 4]`` (channels last, the last 4 frames, oldest first);
    18 actions. ``BatchStep.rewards`` are clipped to ``[-1, 1]`` (with ``clip_rewards``),
    ``BatchStep.raw_rewards`` are the game's score changes. Seeding: env i's episodes are
    seeded from the i-th value of ``np.random.SeedSequence(seed)`` at ``reset(seed)``
    (no-op counts and sticky actions draw from it); the ALE reseeds nothing after that.

    Args:
        env_id: ``ALE/<Game>-v5`` (Gymnasium's game names).
        num_envs: B.
        seed: seeds the first ``reset()``.
        **settings: fields of :class:`AtariSettings`.
    """

    observation_dtype = np.dtype(np.uint8)
    observation_scale = 1.0 / 255.0

    def __init__(
        self, env_id: str, num_envs: int, seed: int | None = None, **settings: Any
    ) -> None:
        self.num_envs = check_num_envs(num_envs)
        self.env_id = env_id
        self.game = check_atari_id(env_id)
        unknown = sorted(set(settings) - set(AtariSettings.__dataclass_fields__))
        if unknown:
            known = ", ".join(AtariSettings.__dataclass_fields__)
            raise ValueError(f"unknown Atari setting(s) {unknown}; known: {known}")
        self.settings = AtariSettings(**settings)
        from ale_py.vector_env import AtariVectorEnv  # the atari extra, on first use

        s = self.settings
        self._env = AtariVectorEnv(
            self.game,
            self.num_envs,
            num_threads=s.num_threads,
            max_num_frames_per_episode=s.max_episode_frames,
            repeat_action_probability=float(s.repeat_action_probability),
            full_action_space=s.full_action_space,
            autoreset_mode="SameStep",  # obs is the next episode's first; final_obs in info
            img_height=s.frame_size,
            img_width=s.frame_size,
            grayscale=True,
            stack_num=s.stack,
            frameskip=s.frameskip,
            maxpool=True,
            noop_max=s.noop_max,
            episodic_life=False,  # an episode ends at game over
            reward_clipping=False,  # clipped here, so that the raw score is kept too
            use_fire_reset=False,
        )
        self.num_actions = int(self._env.single_action_space.n)
        self.observation_shape = (s.frame_size, s.frame_size, s.stack)
        self._pending_seed = seed
        self._started = False

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every game; uint8 ``[B, 84, 84, 4]``."""
        if seed is None:
            seed, self._pending_seed = self._pending_seed, None
        seeds = None
        if seed is not None:  # the ALE takes seeds below 2^31
            seeds = np.random.SeedSequence(seed).generate_state(self.num_envs) >> 1
            seeds = seeds.astype(np.int64)
        obs, _ = self._env.reset(seed=seeds)
        self._started = True
        return channels_last(obs)

    def step(self, actions: np.ndarray) -> BatchStep:
        """Step every game (resetting the ones that ended); clipped and raw rewards."""
        if not self._started:
            raise RuntimeError("BatchedAtari.step() called before reset()")
        actions = self._check_actions(actions).astype(np.int64, copy=False)
        obs, raw, terminated, truncated, info = self._env.step(actions)
        raw_rewards = np.asarray(raw, dtype=np.float32)
        rewards = np.clip(raw_rewards, -1.0, 1.0) if self.settings.clip_rewards else raw_rewards
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool) & ~terminated
        final_obs = self._empty_final_obs()
        if truncated.any():
            final_obs = np.ascontiguousarray(channels_last(info["final_obs"][truncated]))
        return BatchStep(
            obs=channels_last(obs),
            rewards=rewards,
            terminated=terminated,
            truncated=truncated,
            final_obs=final_obs,
            raw_rewards=raw_rewards,
        )

    def close(self) -> None:
        env, self._env = getattr(self, "_env", None), None
        if env is not None:
            env.close()
