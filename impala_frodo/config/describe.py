"""What makes a run distinct: its settings, less bookkeeping, and their short names.

A run's *setting* is its config flattened to dotted keys (``run.num_learners``,
``env.kwargs.rows``), without :data:`BOOKKEEPING` (the seed, where it logs, how long it
runs, timeouts, evaluation): two runs of one setting are seeds of one experiment. Its
*distinct* settings are those that differ from its preset (or from the defaults): what a
run's name and a plot's legend add to the preset's name, e.g. ``catch-frodo`` with
``num_learners=2``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from impala_frodo.config.checks import ConfigError
from impala_frodo.config.schema import Config

#: Keys that say how a run is kept, not what it learns.
BOOKKEEPING = frozenset(
    {
        "preset",
        "run.seed",
        "run.logdir",
        "run.total_env_steps",
        "run.device",
        "run.checkpoint_every_s",
        "run.log_every_s",
        "run.log_every_updates",
        "run.returns_window",
        "run.progress_timeout_s",
        "run.connect_timeout_s",
        "run.max_learner_restarts",
        "run.restart_window_s",
        "meta.max_restarts",
        # where processes run and what they reserve, not what is learned
        "run.actor_num_cpus",
        "run.learner_num_cpus",
        "run.learner_placement",
        "run.actor_inference",
        "meta.learner_num_cpus",
    }
)
_BOOKKEEPING_SECTIONS = ("eval.",)
#: A run name's part for its distinct settings is cut to this many characters.
MAX_NAME_PART = 60


def flat_settings(cfg: Config) -> dict[str, Any]:
    """``{dotted key: value}`` of everything but :data:`BOOKKEEPING`; ``env.kwargs``
    entries one by one (``env.kwargs.rows``)."""
    flat: dict[str, Any] = {}
    for key, value in cfg.to_dict().items():
        if isinstance(value, dict):
            for name, item in value.items():
                if key == "env" and name == "kwargs":
                    flat.update({f"env.kwargs.{k}": v for k, v in item.items()})
                else:
                    flat[f"{key}.{name}"] = item
        else:
            flat[key] = value
    return {
        k: v
        for k, v in flat.items()
        if k not in BOOKKEEPING and not k.startswith(_BOOKKEEPING_SECTIONS)
    }


def setting_key(cfg: Config) -> str:
    """A hashable text of :func:`flat_settings`: equal for runs of one setting."""
    return json.dumps(flat_settings(cfg), sort_keys=True, default=str)


@lru_cache(maxsize=256)
def _base_settings(preset: str) -> dict[str, Any]:
    from impala_frodo.config.presets import load_preset

    if preset:
        try:
            return flat_settings(load_preset(preset))
        except ConfigError:  # a preset renamed or removed since the run
            pass
    return flat_settings(Config())


def distinct_settings(cfg: Config) -> dict[str, Any]:
    """The settings of ``cfg`` that differ from its preset's (or from the defaults)."""
    base = _base_settings(cfg.preset)
    return {k: v for k, v in flat_settings(cfg).items() if base.get(k, _MISSING) != v}


_MISSING = object()


def short_key(key: str) -> str:
    """``run.num_learners`` -> ``num_learners``, ``env.kwargs.rows`` -> ``rows``; the other
    sections keep their name (``meta.mode``, ``optim.lr``)."""
    for prefix in ("run.", "env.kwargs."):
        if key.startswith(prefix):
            return key.removeprefix(prefix)
    return key


def describe(settings: Mapping[str, Any]) -> str:
    """``num_learners=2, meta.mode=async`` (values as TOML would write them, roughly)."""
    return ", ".join(f"{short_key(k)}={_text(v)}" for k, v in settings.items())


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ",".join(_text(v) for v in value) + "]"
    return str(value)


def _name_text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "x".join(_name_text(v) for v in value) or "none"
    return _text(value)


def run_stem(cfg: Config, env_short: str) -> str:
    """A run's name before its seed and time: the preset (or ``<algo>-<env>``) and its
    distinct settings, e.g. ``catch-frodo-num_learners=2-meta.mode=async``."""
    stem = cfg.preset or f"{cfg.algo}-{env_short}"
    if cfg.preset:
        settings = distinct_settings(cfg)
    else:  # the algorithm and env are in the stem already
        settings = {k: v for k, v in distinct_settings(cfg).items() if k not in ("algo", "env.id")}
    if not settings:
        return stem
    # No characters a shell reads (lists as 32x32: brackets are glob patterns).
    words = (f"{short_key(k)}={_name_text(v)}" for k, v in settings.items())
    part = re.sub(r"[^A-Za-z0-9._=+-]", "", "-".join(words))
    if len(part) > MAX_NAME_PART:
        part = part[: MAX_NAME_PART - 3].rstrip("-") + "..."
    return f"{stem}-{part}"
