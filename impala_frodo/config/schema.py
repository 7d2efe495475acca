"""Run configuration: dataclasses validated on construction.

A :class:`Config` is built from defaults, a preset file (TOML or JSON) and
command-line overrides, in that order. Every field is checked in
``__post_init__`` with a message that names the field, the allowed values
and what was given, so a user can fix the config without reading code.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from impala_frodo.config.checks import (
    ALGOS,
    AUTO_EVERY,
    META_ALGOS,
    RESIDUAL_FORMS,
    TASKS,
    ConfigError,
    one_of,
    require,
)
from impala_frodo.config.sections import (
    AgentConfig,
    EnvConfig,
    EvalConfig,
    LossConfig,
    MetaConfig,
    OptimConfig,
    RunConfig,
)
from impala_frodo.utils import os_error_reason

_SECTIONS: dict[str, type] = {
    "env": EnvConfig,
    "agent": AgentConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "meta": MetaConfig,
    "run": RunConfig,
    "eval": EvalConfig,
}


@dataclass
class Config:
    """Everything a run needs. ``algo`` picks the learning rule, ``task`` the loss family.

    - ``task = "control"``: actor-critic losses (policy, value, entropy).
    - ``task = "prediction"``: value losses only; the behaviour's actions do
      not matter (the random walk). IMPALA in prediction is the fixed n-step
      (lambda = 1) or TD(lambda) target baseline.
    """

    algo: str = "frodo"
    task: str = "control"
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    run: RunConfig = field(default_factory=RunConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    #: The preset the run started from ("" for none): what its name and plots call it.
    preset: str = ""

    def __post_init__(self) -> None:
        one_of("algo", self.algo, ALGOS)
        require(isinstance(self.preset, str), f"preset must be a name, got {self.preset!r}")
        one_of("task", self.task, TASKS)
        require(
            not (self.task == "prediction" and self.algo == "mgrl"),
            "algo 'mgrl' is a control algorithm; use task = 'control' (prediction supports "
            "impala, frodo, frodo-ext)",
        )
        require(
            self.meta.mode == "inline" or self.is_meta,
            f"meta.mode = 'async' needs an algorithm with meta-parameters "
            f"({', '.join(META_ALGOS)}); algo {self.algo!r} has none",
        )
        require(
            self.meta.mode == "inline" or self.run.num_learners == 1,
            f"meta.mode = 'async' runs one learner beside its meta-learner; "
            f"run.num_learners = {self.run.num_learners} needs meta.mode = 'inline'",
        )

        for name, width in (
            ("run.num_envs (the synchronous trainer's batch)", self.run.num_envs),
            (
                "run.envs_per_actor x run.batches_per_update (a learner's batch)",
                self.run.envs_per_actor * self.run.batches_per_update,
            ),
        ):
            require(
                not self.is_meta or self.meta.batch_fraction * width >= 1,
                f"meta.batch_fraction = {self.meta.batch_fraction:g} leaves no column of a "
                f"batch of {width} columns ({name}); use at least {1 / width:.3g}",
            )

    @property
    def is_meta(self) -> bool:
        return self.algo in META_ALGOS

    @property
    def meta_every(self) -> int:
        """``meta.every`` as a number: ``"auto"`` is :data:`AUTO_EVERY` for FRODO with a
        residual target form, where a meta step in one window of four learned as well as
        one in every window, and 1 (every window) for the paper's plain target, the
        extension and MGRL (docs/results-price.md)."""
        if self.meta.every != "auto":
            return self.meta.every
        residual = self.algo == "frodo" and self.meta.target in RESIDUAL_FORMS
        return AUTO_EVERY if residual else 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        """Build a config from nested mappings, rejecting unknown keys by name."""
        return merge(cls(), data)


def merge(config: Config, overrides: Mapping[str, Any]) -> Config:
    """Return ``config`` with ``overrides`` (nested, like the TOML file) applied and validated."""
    require(
        isinstance(overrides, Mapping),
        f"a config must be a table of sections, got {type(overrides).__name__}",
    )
    top_fields = {f.name for f in fields(Config)}
    unknown = sorted(set(overrides) - top_fields)
    require(not unknown, f"unknown config key(s) {unknown}; known: {sorted(top_fields)}")
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in _SECTIONS:
            section = getattr(config, key)
            require(
                isinstance(value, Mapping), f"config section [{key}] must be a table, got {value!r}"
            )
            known = {f.name for f in fields(section)}
            bad = sorted(set(value) - known)
            close = [m for b in bad for m in difflib.get_close_matches(b, known, n=1)]
            hint = f"; did you mean {', '.join(f'{key}.{m}' for m in close)}?" if close else ""
            require(not bad, f"unknown key(s) {bad} in [{key}]{hint}; known: {sorted(known)}")
            changes[key] = dataclasses.replace(section, **value)
        else:
            changes[key] = value
    return dataclasses.replace(config, **changes)


#: Config fields that hold a table whose entries a dotted key may set one by one
#: (``env.kwargs.rows = 6`` changes ``rows`` and keeps the other kwargs).
_TABLE_FIELDS = (("env", "kwargs"),)


def parse_value(text: str) -> Any:
    """A TOML literal (``3``, ``1e-3``, ``true``, ``[32, 32]``, ``{ rows = 6 }``), else a string.

    How ``--set KEY=VALUE`` and the experiment scripts read a value given as text.
    """
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except ValueError:  # not TOML (TOMLDecodeError), or an integer too long to convert
        return text


def nest_dotted(dotted: Mapping[str, Any], base: Config) -> dict[str, Any]:
    """``{"run.seed": 1, "env.kwargs.rows": 6}`` -> nested overrides for :func:`merge`.

    ``section.field`` and top-level keys (``algo``) map one to one; an entry of a table
    field (``env.kwargs.<name>``) is merged into ``base``'s table, so that it changes that
    entry only. Anything deeper is a :class:`ConfigError`.
    """
    nested: dict[str, Any] = {}
    for key, value in dotted.items():
        parts = key.split(".")
        if len(parts) == 3 and tuple(parts[:2]) in _TABLE_FIELDS:
            section, name, entry = parts
            current = dict(getattr(getattr(base, section), name))
            nested.setdefault(section, {}).setdefault(name, current)[entry] = value
        elif len(parts) == 2:
            nested.setdefault(parts[0], {})[parts[1]] = value
        elif len(parts) == 1:
            nested[parts[0]] = value
        else:
            raise ConfigError(f"unknown config key {key!r} (use section.field, e.g. run.seed)")
    return nested


def set_dotted(config: Config, dotted: Mapping[str, Any]) -> Config:
    """Apply overrides given as ``{"run.seed": 3, "algo": "frodo", "env.kwargs.rows": 6}``.

    The one reader of dotted keys: the command line's flags and ``--set``, sweeps, the
    experiment scripts and the tests all go through it (:func:`nest_dotted`).
    """
    return merge(config, nest_dotted(dotted, config))


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON config file into nested dicts; a clear error if it cannot be read."""
    path = Path(path)
    kind = "JSON" if path.suffix == ".json" else "TOML"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {os_error_reason(e)}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file {str(path)!r} is not UTF-8 text (byte {e.start}); {kind} must be"
        ) from None
    try:
        data = json.loads(text) if kind == "JSON" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"config file {str(path)!r} is not valid {kind.lower()}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a JSON object of sections, "
            f"got {type(data).__name__}"
        )
    return data


def load_config(path: str | Path) -> Config:
    return Config.from_dict(load_file(path))
