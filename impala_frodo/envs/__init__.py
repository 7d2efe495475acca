"""Environments: Catch (bsuite), the non-stationary random walk, and batched versions.

Importing this package registers two Gymnasium ids (safe to import or call ``register_envs``
again):

- ``impala_frodo/Catch-v0`` -> ``Catch`` (kwargs ``rows``, ``columns``). No ``TimeLimit``:
  every episode terminates by itself after ``rows - 1`` steps.
- ``impala_frodo/RandomWalk-v0`` -> ``NonStationaryRandomWalk`` (kwargs ``switch_every``,
  ``left_rewards``). No ``TimeLimit`` either: the walk terminates with probability 1, and a
  time limit would cut the long episodes that the prediction metric is about.

Both draw themselves (``render_mode="rgb_array"``, :mod:`impala_frodo.envs.pictures`);
:class:`~impala_frodo.envs.rendering.RenderingEnv` films any family, one env at a time.

Atari's ``ALE/<Game>-v5`` ids (the ``atari`` extra) are served by :class:`BatchedAtari`
(``impala_frodo.envs.atari``), not through Gymnasium's registry.
"""

from __future__ import annotations

import gymnasium

from impala_frodo.envs.atari import AtariSettings, BatchedAtari
from impala_frodo.envs.base import BatchedEnv, BatchStep
from impala_frodo.envs.batched import make_batched_env
from impala_frodo.envs.catch import ENV_ID as CATCH_ID
from impala_frodo.envs.catch import Catch
from impala_frodo.envs.gymnasium_batched import GymnasiumBatchedEnv
from impala_frodo.envs.numpy_batched import BatchedCatch, BatchedRandomWalk
from impala_frodo.envs.random_walk import ENV_ID as RANDOM_WALK_ID
from impala_frodo.envs.random_walk import NonStationaryRandomWalk, random_walk_true_values

_ENTRY_POINTS: dict[str, str] = {
    CATCH_ID: "impala_frodo.envs.catch:Catch",
    RANDOM_WALK_ID: "impala_frodo.envs.random_walk:NonStationaryRandomWalk",
}


def register_envs() -> None:
    """Register our ids with Gymnasium unless they already are (idempotent)."""
    for env_id, entry_point in _ENTRY_POINTS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry_point)


register_envs()

__all__ = [
    "CATCH_ID",
    "RANDOM_WALK_ID",
    "AtariSettings",
    "BatchStep",
    "BatchedAtari",
    "BatchedCatch",
    "BatchedEnv",
    "BatchedRandomWalk",
    "Catch",
    "GymnasiumBatchedEnv",
    "NonStationaryRandomWalk",
    "make_batched_env",
    "random_walk_true_values",
    "register_envs",
]
