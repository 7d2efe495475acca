"""The sections of a run's config, one dataclass each, validated on construction:
``env``, ``agent``, ``loss``, ``optim``, ``meta``, ``run`` and ``eval``.

Every field is checked in ``__post_init__`` (:mod:`impala_frodo.config.checks`), so a
user can fix the config without reading code. Parts of the system take the section
they use, not the whole :class:`~impala_frodo.config.schema.Config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from impala_frodo.config.checks import (
    ACTOR_INFERENCE,
    BETA_MODES,
    CONSISTENCY_FORMS,
    DEVICES,
    INNER_OPTIMIZERS,
    LEARNER_PLACEMENTS,
    MAX_SEED,
    META_MODES,
    META_SCHEDULES,
    TARGET_FORMS,
    TORSOS,
    in_range,
    is_utf8,
    one_of,
    positive_int,
    positive_int_or_auto,
    require,
)
from impala_frodo.utils import path_too_long, shorten


@dataclass
class EnvConfig:
    """Which environment, with keyword arguments for its constructor."""

    id: str = "impala_frodo/Catch-v0"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(
            isinstance(self.id, str) and self.id != "",
            f"env.id must be a non-empty string, got {self.id!r}",
        )
        require(
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
        require(
            isinstance(self.hidden_sizes, list | tuple),
            f"agent.hidden_sizes must be a list of layer widths (e.g. [64, 64], or [] for a "
            f"linear agent), got {self.hidden_sizes!r}",
        )
        self.hidden_sizes = tuple(self.hidden_sizes)
        for i, h in enumerate(self.hidden_sizes):
            positive_int(f"agent.hidden_sizes[{i}]", h)
        one_of("agent.torso", self.torso, TORSOS)
        positive_int("agent.conv_channels", self.conv_channels)


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
        in_range("loss.gamma", self.gamma, 0.0, 1.0)
        in_range("loss.lambda_", self.lambda_, 0.0, 1.0)
        for name in ("value_cost", "outer_value_cost", "entropy_cost"):
            in_range(f"loss.{name}", getattr(self, name), 0.0, 1e6)
        for name in ("clip_rho_threshold", "clip_c_threshold", "clip_pg_rho_threshold"):
            in_range(f"loss.{name}", getattr(self, name), 0.0, 1e9, low_open=True)


@dataclass
class OptimConfig:
    """The agent's (inner) optimizer. It is differentiable for the meta-algorithms.

    For RMSProp the running average of squared gradients is treated as a
    constant of eta (it is built from detached gradients), see
    :mod:`impala_frodo.rule.metagrad`.
    """

    name: str = "rmsprop"
    lr: float = 3e-3
    rmsprop_alpha: float = 0.99
    rmsprop_eps: float = 1e-5
    max_grad_norm: float = 0.0  # 0 disables clipping

    def __post_init__(self) -> None:
        one_of("optim.name", self.name, INNER_OPTIMIZERS)
        in_range("optim.lr", self.lr, 0.0, 10.0, low_open=True)
        in_range("optim.rmsprop_alpha", self.rmsprop_alpha, 0.0, 1.0)
        in_range("optim.rmsprop_eps", self.rmsprop_eps, 0.0, 1.0, low_open=True)
        in_range("optim.max_grad_norm", self.max_grad_norm, 0.0, 1e9)


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
    - ``consistency_cost`` w: adds a consistency term, w times one of
      ``consistency_form``'s, on the held-out batch to the outer loss, a guard against
      the target drifting away from returns. ``"canonical"``: 1/2 (g - sg(v_s))^2, g held
      to the canonical V-trace target. ``"self"``: 1/2 (g_t - sg(r_t + d_t g_{t+1}))^2,
      g held to its own one-step bootstrap (sg(V(x_T)) after the last step), the
      bootstrap side a constant. ``"self-unstopped"``: the same with the gradient through
      both sides. The FRODO paper adds a consistency term to its outer loss; its exact
      form could not be read for this project, so both are this project's reading.
    - ``embed_size``, ``embed_channels``: G_eta's embedding phi(x) of image observations
      (a 3x3 convolution with ``embed_channels`` channels, then ``embed_size`` ReLU
      units, learned with eta); flat observations enter G_eta as they are.

    ``schedule = "chain"``: one outer step per M inner steps, which form one
    differentiable chain (the paper's). ``"sliding"``: an outer step after every
    inner update, differentiated through the last M inner updates (recomputed from
    the parameters M updates ago with the current eta): M times the meta-steps, at
    about M times the meta-step cost.

    Cadence and size of the meta-gradient (docs/results-price.md for their price and
    effect): ``every`` k: a meta step in one window of M inner steps out of every k (the
    others are plain inner steps, no graph kept); ``"auto"`` (the default) is
    :data:`AUTO_EVERY` for FRODO with a residual target form and 1 for everything else
    (:meth:`~impala_frodo.config.schema.Config.meta_every`): with the residual target a
    meta step in one window of four learned as well as one in every window (Catch 11 x 6
    and the random walk, 10 seeds; MinAtar Breakout and Space Invaders, 3 seeds), at 0.61x
    IMPALA's env steps/s against 0.385x (end to end, Catch 11 x 6); the paper's plain
    target needs every window (7/10 Catch seeds solved fall to 1/10), and the extension
    and MGRL were not measured at other cadences. ``batch_fraction`` f: the meta-gradient
    on a random f of the batch's columns (at least one), the window's inner steps
    recomputed on those columns from the window's start (the learner's own steps are
    then plain); 1 is the whole batch through the learner's own graph.

    ``mode = "inline"``: the learner takes the outer step itself (the schedule above).
    ``"async"``: the learner takes first-order inner steps only, with the newest eta it
    has, and hands every window (theta and the optimizer state at its start, its M
    batches and the held-out batch) to a meta-learner, which recomputes the chain with its
    eta, steps eta and sends it back (the chain schedule's windows; docs/design.md, "The
    async meta-learner"). ``delay_windows``: in the synchronous trainer (the meta-learner
    in process), deliver each new eta this many windows late, a model of a meta-learner
    that lags; 0 is lock-step, equal to the chain schedule. ``learner_num_cpus``: the Ray
    CPUs the meta-learner process reserves in the distributed trainer. ``max_restarts``:
    a meta-learner lost there (its process dead, or no answer within
    ``run.progress_timeout_s``) is replaced from the learner's eta this many times within
    ``run.restart_window_s``; one more loss stops the run (0: the first does).
    """

    num_inner_steps: int = 5  # M
    lr: float = 1e-2  # Adam on eta
    hidden_size: int = 32  # LSTM width
    max_grad_norm: float = 0.0  # clip of the meta-gradient; 0 disables
    target: str = "residual"
    ratio_input: bool = False
    consistency_cost: float = 0.0
    consistency_form: str = "canonical"
    schedule: str = "chain"
    every: int | str = "auto"  # a meta step every k windows ("auto": see above)
    batch_fraction: float = 1.0  # the meta-gradient on this fraction of the batch's columns
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
    # A lost meta-learner (dead, or no answer within run.progress_timeout_s) is replaced
    # at most this often within run.restart_window_s; past it the run stops (exit 1).
    max_restarts: int = 3

    def __post_init__(self) -> None:
        positive_int("meta.num_inner_steps", self.num_inner_steps)
        positive_int("meta.hidden_size", self.hidden_size)
        in_range("meta.lr", self.lr, 0.0, 10.0, low_open=True)
        in_range("meta.max_grad_norm", self.max_grad_norm, 0.0, 1e9)
        one_of("meta.target", self.target, TARGET_FORMS)
        one_of("meta.schedule", self.schedule, META_SCHEDULES)
        positive_int_or_auto("meta.every", self.every)
        in_range("meta.batch_fraction", self.batch_fraction, 0.0, 1.0, low_open=True)
        positive_int("meta.embed_size", self.embed_size)
        positive_int("meta.embed_channels", self.embed_channels)
        require(
            isinstance(self.ratio_input, bool),
            f"meta.ratio_input must be true or false, got {self.ratio_input!r}",
        )
        in_range("meta.consistency_cost", self.consistency_cost, 0.0, 1e6)
        one_of("meta.consistency_form", self.consistency_form, CONSISTENCY_FORMS)
        in_range("meta.ext_b1", self.ext_b1, 0.0, 1e6)
        one_of("meta.ext_beta_mode", self.ext_beta_mode, BETA_MODES)
        in_range("meta.ext_beta_max", self.ext_beta_max, 0.0, 1e9, low_open=True)
        in_range("meta.ext_eps", self.ext_eps, 0.0, 1.0, low_open=True)
        # Sigmoid-parameterised: the ends 0 and 1 are not reachable.
        in_range("meta.mgrl_init_gamma", self.mgrl_init_gamma, 0.0, 0.9999, low_open=True)
        in_range("meta.mgrl_init_lambda", self.mgrl_init_lambda, 0.0, 0.9999, low_open=True)
        one_of("meta.mode", self.mode, META_MODES)
        require(
            isinstance(self.delay_windows, int)
            and not isinstance(self.delay_windows, bool)
            and 0 <= self.delay_windows <= 10_000,
            f"meta.delay_windows must be an integer in [0, 10000], got {self.delay_windows!r}",
        )
        in_range("meta.learner_num_cpus", self.learner_num_cpus, 0.0, 64.0, low_open=True)
        require(
            isinstance(self.max_restarts, int)
            and not isinstance(self.max_restarts, bool)
            and 0 <= self.max_restarts <= 10_000,
            f"meta.max_restarts must be an integer in [0, 10000], got {self.max_restarts!r}",
        )
        require(
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
    # mu in the actors: numpy, or torch ("auto": torch for the Atari ResNet, where it is
    # faster: docs/results-atari.md).
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
    # A lost data-parallel learner is replaced at most this often within the window
    # (0: never; the run stops with a final checkpoint of a survivor's state).
    max_learner_restarts: int = 3
    # Restarts of lost processes are counted within this many seconds
    # (run.max_learner_restarts, meta.max_restarts).
    restart_window_s: float = 600.0

    def __post_init__(self) -> None:
        require(
            isinstance(self.seed, int)
            and not isinstance(self.seed, bool)
            and 0 <= self.seed <= MAX_SEED,
            f"run.seed must be an integer in [0, {MAX_SEED}], got {self.seed!r}",
        )
        require(
            isinstance(self.logdir, str) and self.logdir != "" and is_utf8(self.logdir),
            f"run.logdir must be a non-empty path in UTF-8 text (it is saved in config.json), "
            f"got {self.logdir!r}",
        )
        too_long = path_too_long(self.logdir)
        require(
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
            positive_int(f"run.{name}", getattr(self, name))
        for name in ("policy_lag", "max_learner_restarts"):
            value = getattr(self, name)
            require(
                isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                f"run.{name} must be an integer >= 0, got {value!r}",
            )
        in_range("run.actor_num_cpus", self.actor_num_cpus, 0.0, 64.0, low_open=True)
        in_range("run.learner_num_cpus", self.learner_num_cpus, 0.0, 1024.0, low_open=True)
        one_of("run.learner_placement", self.learner_placement, LEARNER_PLACEMENTS)
        require(
            self.num_learners <= self.num_actors,
            f"run.num_learners = {self.num_learners} is more than run.num_actors = "
            f"{self.num_actors}: give every learner at least one actor",
        )
        one_of("run.device", self.device, DEVICES)
        one_of("run.actor_inference", self.actor_inference, ACTOR_INFERENCE)
        in_range("run.checkpoint_every_s", self.checkpoint_every_s, 0.0, 1e9, low_open=True)
        in_range("run.log_every_s", self.log_every_s, 0.0, 1e9, low_open=True)
        in_range("run.progress_timeout_s", self.progress_timeout_s, 0.0, 1e9, low_open=True)
        in_range("run.connect_timeout_s", self.connect_timeout_s, 0.0, 1e9, low_open=True)
        in_range("run.restart_window_s", self.restart_window_s, 0.0, 1e9, low_open=True)

    @property
    def trajectories_per_update(self) -> int:
        """Actor batches one update consumes: ``batches_per_update`` per learner."""
        return self.batches_per_update * self.num_learners


@dataclass
class EvalConfig:
    """Evaluation during training: the current weights play whole episodes on fresh seeds
    in an evaluator process of their own, logged as ``eval/return`` (off by default)."""

    every_s: float = 0.0  # seconds between evaluations (0: not by time)
    every_env_steps: int = 0  # env steps between evaluations (0: not by steps)
    episodes: int = 10  # episodes an evaluation plays
    greedy: bool = False  # the most likely action (else sampled, as training acts)
    num_cpus: float = 0.5  # Ray CPUs the evaluator reserves
    video_every_s: float = 0.0  # a video of an evaluation into TensorBoard this often (0: none)
    timeout_s: float = 300.0  # an evaluation still playing after this is abandoned

    def __post_init__(self) -> None:
        in_range("eval.every_s", self.every_s, 0.0, 1e9)
        require(
            isinstance(self.every_env_steps, int)
            and not isinstance(self.every_env_steps, bool)
            and self.every_env_steps >= 0,
            f"eval.every_env_steps must be an integer >= 0, got {self.every_env_steps!r}",
        )
        positive_int("eval.episodes", self.episodes)
        require(
            isinstance(self.greedy, bool), f"eval.greedy must be true or false, got {self.greedy!r}"
        )
        in_range("eval.num_cpus", self.num_cpus, 0.0, 64.0, low_open=True)
        in_range("eval.video_every_s", self.video_every_s, 0.0, 1e9)
        in_range("eval.timeout_s", self.timeout_s, 0.0, 1e9, low_open=True)

    @property
    def enabled(self) -> bool:
        return self.every_s > 0 or self.every_env_steps > 0
