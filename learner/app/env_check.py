"""Is the configured env usable? Checked before anything starts: bad input otherwise."""

from __future__ import annotations

import gymnasium

from actors.rollout import EnvSpec, env_spec
from impala_frodo.config.checks import ConfigError
from impala_frodo.config.schema import Config
from impala_frodo.envs import atari, minatar_envs  # (importing impala_frodo.envs registers ids)
from impala_frodo.utils import first_line


def check_env_id(env_id: str) -> None:
    """The id is registered with Gymnasium (MinAtar's on first use); :class:`ConfigError` if not."""
    if minatar_envs.is_minatar_id(env_id):
        try:
            minatar_envs.register_minatar_envs()  # on first use; says how to install minatar
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if atari.is_atari_id(env_id):  # not in gymnasium's registry: our ALE vector env
        try:
            atari.check_atari_id(env_id)  # a known game; says how to install ale-py
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return
    if env_id not in gymnasium.registry:
        ours = [k for k in gymnasium.registry if k.startswith("impala_frodo/")]
        raise ConfigError(
            f"unknown env id {env_id!r}: not registered with gymnasium "
            f"(ours: {', '.join(sorted(ours))}; any registered id with discrete actions works)"
        )


def env_spec_or_config_error(cfg: Config) -> EnvSpec:
    """The env's shapes, from one env built; :class:`ConfigError` if it cannot be built
    (extra dependencies missing, kwargs refused, actions not discrete)."""
    try:
        return env_spec(cfg)
    except (ValueError, TypeError, ImportError, gymnasium.error.Error) as e:
        raise ConfigError(
            f"cannot build env {cfg.env.id!r} with {cfg.env.kwargs}: {first_line(e)}"
        ) from None


def check_env(cfg: Config) -> None:
    """The env id is registered and one env can be built; :class:`ConfigError` otherwise."""
    check_env_id(cfg.env.id)
    env_spec_or_config_error(cfg)
