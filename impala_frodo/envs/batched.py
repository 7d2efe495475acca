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
policy and :class:`~impala_frodo.rule.batch.Batch`, convert to float once, on their side.
  MinAtar's ids (``MinAtar/Breakout-v0`` ...) are registered on first use when the
  ``minatar`` package is installed (the ``minatar`` extra).
"""

from __future__ import annotations

from typing import Any

from impala_frodo.envs import catch, random_walk
from impala_frodo.envs.base import BatchedEnv
from impala_frodo.envs.gymnasium_batched import GymnasiumBatchedEnv
from impala_frodo.envs.numpy_batched import BatchedCatch, BatchedRandomWalk


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


def evaluation_kwargs(env_id: str, env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The env as an evaluation plays it: training's kwargs, but Catch without its
    desynchronised first episodes (``random_start_row``, a device for training's batches: a
    ball dropped one row above the paddle cannot be caught), so that every episode
    evaluated is bsuite's."""
    if env_id == catch.ENV_ID:
        return {**env_kwargs, "random_start_row": False}
    return dict(env_kwargs)
