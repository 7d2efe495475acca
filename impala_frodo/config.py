"""Run configuration: dataclasses validated on construction.

A :class:`Config` is built from defaults, a preset file (TOML or JSON) and
command-line overrides, in that order. Every field is checked in
``__post_init__`` with a message that names the field, the allowed values
and what was given, so a user can fix the config without reading code.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from impala_frodo.utils import os_error_reason, path_too_long, shorten

ALGOS = ("impala", "frodo", "frodo-ext", "mgrl")
META_ALGOS = ("frodo", "frodo-ext", "mgrl")
TASKS = ("control", "prediction")
INNER_OPTIMIZERS = ("sgd", "rmsprop")
BETA_MODES = ("constant", "annealed")
DEVICES = ("auto", "cpu", "cuda")
TARGET_FORMS = ("residual", "plain", "plain-zero-head", "residual-centred")
#: The target forms that add the learned correction to the canonical V-trace target v_s.
RESIDUAL_FORMS = ("residual", "residual-centred")
META_SCHEDULES = ("chain", "sliding")
#: Where the outer (meta) step is taken: inline in the learner's update, or by a
#: meta-learner beside it (impala_frodo.meta_learner; docs/design.md, "The async meta-learner").
META_MODES = ("inline", "async")
TORSOS = ("auto", "mlp", "conv", "resnet")  # impala_frodo.torsos
#: How actors evaluate mu (impala_frodo.torch_policy): auto = torch for a ResNet, else numpy.
ACTOR_INFERENCE = ("auto", "numpy", "torch")
#: How data-parallel learners are placed over nodes (Ray placement-group strategies).
LEARNER_PLACEMENTS = ("pack", "spread", "strict-spread")
#: numpy seeds are 32-bit.
MAX_SEED = 2**32 - 1


class ConfigError(ValueError):
    """A configuration value a user must fix; the message says which and how."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _positive_int(name: str, value: Any) -> None:
    _require(
        isinstance(value, int) and not isinstance(value, bool) and value >= 1,
        f"{name} must be an integer >= 1, got {value!r}",
    )


def _in_range(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and (low < value if low_open else low <= value) and value <= high
    bracket = "(" if low_open else "["
    _require(ok, f"{name} must be a number in {bracket}{low}, {high}], got {value!r}")


def _is_utf8(text: str) -> bool:
    """False for names with undecodable bytes (``surrogateescape``d from a non-UTF-8 argv)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    _require(value in allowed, f"{name} must be one of {', '.join(allowed)}; got {value!r}")


@dataclass
class EnvConfig:
    """Which environment, with keyword arguments for its constructor."""

    id: str = "impala_frodo/Catch-v0"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(
            isinstance(self.id, str) and self.id != "",
            f"env.id must be a non-empty string, got {self.id!r}",
        )
        _require(
            isinstance(self.kwargs, dict), f"env.kwargs must be a table/dict, got {self.kwargs!r}"
        )


@dataclass
class AgentConfig:
    """The agent network: a torso with policy and value heads.

    ``torso``: ``"mlp"`` (the flat observation into ``hidden_sizes``; none = linear),
    ``"conv"`` (MinAtar's: a 3x3 convolution with ``conv_channels`` channels on
    ``[H, W, C]`` images, then ``hidden_sizes``; MinAtar's dense layer is ``[128]``),
    ``"resnet"`` (IMPALA's deep ResNet, sections of 16, 32 and 32 channels, then
    ``hidden_sizes``; IMPALA's dense layer is ``[256]``), ``"auto"`` (the ResNet for images
    of at least 32 x 32 pixels such as Atari's frames, conv for smaller images, else mlp).
    """

    hidden_sizes: tuple[int, ...] = (64, 64)
    torso: str = "auto"
    conv_channels: int = 16

    def __post_init__(self) -> None:
        _require(
            isinstance(self.hidden_sizes, list | tuple),
            f"agent.hidden_sizes must be a list of layer widths (e.g. [64, 64], or [] for a "
            f"linear agent), got {self.hidden_sizes!r}",
        )
        self.hidden_sizes = tuple(self.hidden_sizes)
        for i, h in enumerate(self.hidden_sizes):
            _positive_int(f"agent.hidden_sizes[{i}]", h)
        _one_of("agent.torso", self.torso, TORSOS)
        _positive_int("agent.conv_channels", self.conv_channels)


@dataclass
class LossConfig:
    """Coefficients of the actor-critic losses and of V-trace (DESIGN sections 4 and 5)."""

    gamma: float = 0.99
    lambda_: float = 1.0
    value_cost: float = 0.5
    outer_value_cost: float = 0.5
    entropy_cost: float = 0.01
    clip_rho_threshold: float = 1.0
    clip_c_threshold: float = 1.0
    clip_pg_rho_threshold: float = 1.0

    def __post_init__(self) -> None:
        _in_range("loss.gamma", self.gamma, 0.0, 1.0)
        _in_range("loss.lambda_", self.lambda_, 0.0, 1.0)
        for name in ("value_cost", "outer_value_cost", "entropy_cost"):
            _in_range(f"loss.{name}", getattr(self, name), 0.0, 1e6)
        for name in ("clip_rho_threshold", "clip_c_threshold", "clip_pg_rho_threshold"):
            _in_range(f"loss.{name}", getattr(self, name), 0.0, 1e9, low_open=True)


@dataclass
class OptimConfig:
    """The agent's (inner) optimizer. It is differentiable for the meta-algorithms.

    For RMSProp the running average of squared gradients is treated as a
    constant of eta (it is built from detached gradients), see
    :mod:`impala_frodo.metagrad`.
    """

    name: str = "rmsprop"
    lr: float = 3e-3
    rmsprop_alpha: float = 0.99
    rmsprop_eps: float = 1e-5
    max_grad_norm: float = 0.0  # 0 disables clipping

    def __post_init__(self) -> None:
        _one_of("optim.name", self.name, INNER_OPTIMIZERS)
        _in_range("optim.lr", self.lr, 0.0, 10.0, low_open=True)
        _in_range("optim.rmsprop_alpha", self.rmsprop_alpha, 0.0, 1.0)
        _in_range("optim.rmsprop_eps", self.rmsprop_eps, 0.0, 1.0, low_open=True)
        _in_range("optim.max_grad_norm", self.max_grad_norm, 0.0, 1e9)


@dataclass
class MetaConfig:
    """The meta-learner: FRODO's meta-network, its optimizer, the extension and MGRL.

    FRODO's target forms (docs/design.md, "Target forms"), ``target =``:

    - ``"residual"`` (the default, chosen from 10-seed evidence, docs/results.md):
      g = sg(v_s) + G_eta(tau), a learned correction on the canonical V-trace target
      v_s (gamma, lambda of ``[loss]``), with G_eta's output layer zero-initialised so
      that g starts at v_s.
    - ``"plain"``: g = G_eta(tau), the paper's form (default initialisation).
    - ``"plain-zero-head"``: the paper's form with the output layer zero-initialised
      (g starts at 0).
    - ``"residual-centred"``: the residual form with the correction centred over each
      batch, g = sg(v_s) + G - mean_{T,B}(G): it cannot shift all targets at once, a
      shift that bootstrapping turns into a value drift of shift / (1 - gamma)
      (docs/results-minatar.md).

    Further options:

    - ``ratio_input``: G_eta also sees the clipped log importance ratio log(pi/mu).
    - ``consistency_cost`` w: adds w 1/2 (g - sg(v_s))^2 on the held-out batch to the
      outer loss, a guard against the target drifting away from returns.
    - ``embed_size``, ``embed_channels``: G_eta's embedding phi(x) of image observations
      (a 3x3 convolution with ``embed_channels`` channels, then ``embed_size`` ReLU
      units, learned with eta); flat observations enter G_eta as they are.

    ``schedule = "chain"``: one outer step per M inner steps, which form one
    differentiable chain (the paper's). ``"sliding"``: an outer step after every
    inner update, differentiated through the last M inner updates (recomputed from
    the parameters M updates ago with the current eta): M times the meta-steps, at
    about M times the meta-step cost.

    ``mode = "inline"``: the learner takes the outer step itself (the schedule above).
    ``"async"``: the learner takes first-order inner steps only, with the newest eta it
    has, and hands every window (theta and the optimizer state at its start, its M
    batches and the held-out batch) to a meta-learner, which recomputes the chain with its
    eta, steps eta and sends it back (the chain schedule's windows; docs/design.md, "The
    async meta-learner"). ``delay_windows``: in the synchronous trainer (the meta-learner
    in process), deliver each new eta this many windows late, a model of a meta-learner
    that lags; 0 is lock-step, equal to the chain schedule. ``learner_num_cpus``: the Ray
    CPUs the meta-learner process reserves in the distributed trainer.
    """

    num_inner_steps: int = 5  # M
    lr: float = 1e-2  # Adam on eta
    hidden_size: int = 32  # LSTM width
    max_grad_norm: float = 0.0  # clip of the meta-gradient; 0 disables
    target: str = "residual"
    ratio_input: bool = False
    consistency_cost: float = 0.0
    schedule: str = "chain"
    embed_size: int = 32
    embed_channels: int = 16
    # The report's extension (DESIGN section 5): beta * L_revise added to L_outer.
    ext_b1: float = 0.1
    ext_beta_mode: str = "annealed"  # "constant": beta = b1; "annealed": b1 / |sg(L_outer)|
    ext_beta_max: float = 1.0
    ext_eps: float = 1e-6
    # MGRL: initial meta-parameters (gamma, lambda), learned through sigmoids.
    mgrl_init_gamma: float = 0.99
    mgrl_init_lambda: float = 0.95
    # The async meta-learner.
    mode: str = "inline"
    delay_windows: int = 0
    learner_num_cpus: float = 1.0

    def __post_init__(self) -> None:
        _positive_int("meta.num_inner_steps", self.num_inner_steps)
        _positive_int("meta.hidden_size", self.hidden_size)
        _in_range("meta.lr", self.lr, 0.0, 10.0, low_open=True)
        _in_range("meta.max_grad_norm", self.max_grad_norm, 0.0, 1e9)
        _one_of("meta.target", self.target, TARGET_FORMS)
        _one_of("meta.schedule", self.schedule, META_SCHEDULES)
        _positive_int("meta.embed_size", self.embed_size)
        _positive_int("meta.embed_channels", self.embed_channels)
        _require(
            isinstance(self.ratio_input, bool),
            f"meta.ratio_input must be true or false, got {self.ratio_input!r}",
        )
        _in_range("meta.consistency_cost", self.consistency_cost, 0.0, 1e6)
        _in_range("meta.ext_b1", self.ext_b1, 0.0, 1e6)
        _one_of("meta.ext_beta_mode", self.ext_beta_mode, BETA_MODES)
        _in_range("meta.ext_beta_max", self.ext_beta_max, 0.0, 1e9, low_open=True)
        _in_range("meta.ext_eps", self.ext_eps, 0.0, 1.0, low_open=True)
        # Sigmoid-parameterised: the ends 0 and 1 are not reachable.
        _in_range("meta.mgrl_init_gamma", self.mgrl_init_gamma, 0.0, 0.9999, low_open=True)
        _in_range("meta.mgrl_init_lambda", self.mgrl_init_lambda, 0.0, 0.9999, low_open=True)
        _one_of("meta.mode", self.mode, META_MODES)
        _require(
            isinstance(self.delay_windows, int)
            and not isinstance(self.delay_windows, bool)
            and 0 <= self.delay_windows <= 10_000,
            f"meta.delay_windows must be an integer in [0, 10000], got {self.delay_windows!r}",
        )
        _in_range("meta.learner_num_cpus", self.learner_num_cpus, 0.0, 64.0, low_open=True)
        _require(
            self.mode == "inline" or self.schedule == "chain",
            f"meta.mode = 'async' hands out the chain schedule's windows; use "
            f"meta.schedule = 'chain', got {self.schedule!r}",
        )


@dataclass
class RunConfig:
    """How long, where and with how many actors a run goes."""

    seed: int = 0
    total_env_steps: int = 500_000
    unroll_length: int = 20  # T
    num_envs: int = 32  # envs per learner batch in the synchronous trainer
    num_actors: int = 2
    envs_per_actor: int = 32
    batches_per_update: int = 1  # actor batches concatenated into one learner's batch
    # Data-parallel learners (distributed trainer): each takes batches_per_update actor
    # batches per update, so the global batch is num_learners times one learner's.
    num_learners: int = 1
    learner_num_cpus: float = 1.0  # per learner process when num_learners > 1
    learner_placement: str = "pack"  # pack | spread | strict-spread (over nodes)
    queue_size: int = 8  # bounded trajectory queue, in actor batches
    broadcast_every: int = 1  # learner updates between weight publications
    policy_lag: int = 0  # act with weights this many versions old, on purpose (0: newest)
    actor_num_cpus: float = 0.5
    # mu in the actors: numpy, or torch (measured faster for the Atari ResNet; "auto").
    actor_inference: str = "auto"
    device: str = "auto"
    logdir: str = "runs"
    checkpoint_every_s: float = 60.0
    log_every_s: float = 2.0  # a log record every log_every_s or log_every_updates,
    log_every_updates: int = 20  # whichever comes first (and one after the first update)
    returns_window: int = 500  # episodes in the "mean return" shown and used for "solved"
    # Faults: no wait is unbounded (exit 1 without a trajectory for this long; exit 2 if a
    # cluster given by address does not answer within connect_timeout_s).
    progress_timeout_s: float = 300.0
    connect_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        _require(
            isinstance(self.seed, int)
            and not isinstance(self.seed, bool)
            and 0 <= self.seed <= MAX_SEED,
            f"run.seed must be an integer in [0, {MAX_SEED}], got {self.seed!r}",
        )
        _require(
            isinstance(self.logdir, str) and self.logdir != "" and _is_utf8(self.logdir),
            f"run.logdir must be a non-empty path in UTF-8 text (it is saved in config.json), "
            f"got {self.logdir!r}",
        )
        too_long = path_too_long(self.logdir)
        _require(
            too_long is None,
            f"run.logdir {shorten(self.logdir)} is too long for the file system ({too_long})",
        )
        for name in (
            "total_env_steps",
            "unroll_length",
            "num_envs",
            "num_actors",
            "envs_per_actor",
            "batches_per_update",
            "num_learners",
            "queue_size",
            "broadcast_every",
            "log_every_updates",
            "returns_window",
        ):
            _positive_int(f"run.{name}", getattr(self, name))
        _require(
            isinstance(self.policy_lag, int)
            and not isinstance(self.policy_lag, bool)
            and self.policy_lag >= 0,
            f"run.policy_lag must be an integer >= 0, got {self.policy_lag!r}",
        )
        _in_range("run.actor_num_cpus", self.actor_num_cpus, 0.0, 64.0, low_open=True)
        _in_range("run.learner_num_cpus", self.learner_num_cpus, 0.0, 1024.0, low_open=True)
        _one_of("run.learner_placement", self.learner_placement, LEARNER_PLACEMENTS)
        _require(
            self.num_learners <= self.num_actors,
            f"run.num_learners = {self.num_learners} is more than run.num_actors = "
            f"{self.num_actors}: give every learner at least one actor",
        )
        _one_of("run.device", self.device, DEVICES)
        _one_of("run.actor_inference", self.actor_inference, ACTOR_INFERENCE)
        _in_range("run.checkpoint_every_s", self.checkpoint_every_s, 0.0, 1e9, low_open=True)
        _in_range("run.log_every_s", self.log_every_s, 0.0, 1e9, low_open=True)
        _in_range("run.progress_timeout_s", self.progress_timeout_s, 0.0, 1e9, low_open=True)
        _in_range("run.connect_timeout_s", self.connect_timeout_s, 0.0, 1e9, low_open=True)

    @property
    def trajectories_per_update(self) -> int:
        """Actor batches one update consumes: ``batches_per_update`` per learner."""
        return self.batches_per_update * self.num_learners


_SECTIONS: dict[str, type] = {
    "env": EnvConfig,
    "agent": AgentConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "meta": MetaConfig,
    "run": RunConfig,
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

    def __post_init__(self) -> None:
        _one_of("algo", self.algo, ALGOS)
        _one_of("task", self.task, TASKS)
        _require(
            not (self.task == "prediction" and self.algo == "mgrl"),
            "algo 'mgrl' is a control algorithm; use task = 'control' (prediction supports "
            "impala, frodo, frodo-ext)",
        )
        _require(
            self.meta.mode == "inline" or self.is_meta,
            f"meta.mode = 'async' needs an algorithm with meta-parameters "
            f"({', '.join(META_ALGOS)}); algo {self.algo!r} has none",
        )
        _require(
            self.meta.mode == "inline" or self.run.num_learners == 1,
            f"meta.mode = 'async' runs one learner beside its meta-learner; "
            f"run.num_learners = {self.run.num_learners} needs meta.mode = 'inline'",
        )

    @property
    def is_meta(self) -> bool:
        return self.algo in META_ALGOS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        """Build a config from nested mappings, rejecting unknown keys by name."""
        return merge(cls(), data)


def merge(config: Config, overrides: Mapping[str, Any]) -> Config:
    """Return ``config`` with ``overrides`` (nested, like the TOML file) applied and validated."""
    _require(
        isinstance(overrides, Mapping),
        f"a config must be a table of sections, got {type(overrides).__name__}",
    )
    top_fields = {f.name for f in fields(Config)}
    unknown = sorted(set(overrides) - top_fields)
    _require(not unknown, f"unknown config key(s) {unknown}; known: {sorted(top_fields)}")
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in _SECTIONS:
            section = getattr(config, key)
            _require(
                isinstance(value, Mapping), f"config section [{key}] must be a table, got {value!r}"
            )
            known = {f.name for f in fields(section)}
            bad = sorted(set(value) - known)
            _require(not bad, f"unknown key(s) {bad} in [{key}]; known: {sorted(known)}")
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
