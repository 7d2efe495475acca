"""A distributed training run, set up and torn down: :func:`train`.

:func:`train` claims the run directory (or loads the checkpoint to resume), opens
the Ray session (:mod:`learner.cluster.session`), starts the rollout actors
(:class:`~learner.cluster.actor_pool.ActorPool`: the trajectory queue, weight
publication, actor faults), builds the :class:`~learner.training.learner.Learner`, and
runs the loop (:mod:`learner.training.loop`); whatever happens, it closes them again in
the reverse order. Signals are :mod:`learner.control.signals`'; the outcome is a
:class:`~learner.training.result.TrainResult` whose stop reason carries the exit code
(:data:`learner.control.exit_codes.EXIT_CODES_HELP` says what each code means).

**Learner placement.** One learner runs in the driver process (no extra hop
for trajectories): on CUDA when ``run.device`` is ``auto``/``cuda`` and the
driver's machine has a GPU. Under ``ray job submit`` give the entrypoint a
GPU with ``--entrypoint-num-gpus 1``. With ``run.num_learners`` N > 1 the learners
are N Ray actors in a placement group (:mod:`learner.training.group`), one GPU each
where ``run.device`` is ``cuda``, or ``auto`` and the cluster has N GPUs; the driver
deals them their shards, logs and checkpoints. Actors are CPU-only.

**Faults.** Actor deaths are the pool's (:mod:`learner.cluster.actor_pool`). No wait
is unbounded: with no unroll back for ``run.progress_timeout_s`` the run fails
with a message saying which actors it waited on (:class:`~learner.training.loop.StallWatchdog`);
connecting to a cluster gives up after ``run.connect_timeout_s``
(:mod:`learner.cluster.session`); SIGINT/SIGTERM are seen within about a second whatever
the driver waits on (connecting included), and a second one aborts at once without
a final checkpoint. A checkpoint or log write refused by the disk stops the run with
the last good checkpoint kept and nothing saved. The run directory is held by one
session at a time (:class:`~impala_frodo.records.runlog.RunLock`) and checked to be writable
before Ray starts. Unrolls are accounted for in :attr:`TrainResult.unrolls`: each
one asked of an actor is consumed, lost with a dead actor (``perf/lost_unrolls``) or
abandoned at the end of the session.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import ray
import torch

from actors.rollout import DEFAULT_MAX_RESTARTS, EnvSpec, RolloutSpec
from impala_frodo.config.schema import Config
from impala_frodo.networks.agent import agent_layout
from impala_frodo.records.checkpoint import CheckpointError, CheckpointManager
from impala_frodo.records.runlog import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    RunDirError,
    RunLogger,
    StorageError,
    write_config,
)
from impala_frodo.rule.meta_learner import MetaLearnerError, MetaLink
from impala_frodo.rule.updater import Updater
from impala_frodo.utils import os_error_reason, resolve_device, seed_everything
from learner.app.env_check import env_spec_or_config_error
from learner.app.preflight import check_cluster_memory, check_memory
from learner.app.run_dir import claim_run_dir, resume_count
from learner.cluster.actor_pool import ActorPool, TrainingError
from learner.cluster.resources import (
    check_resources,
    fit_local_cpus,
    learner_threads,
    meta_learner_cpus,
    torch_threads,
)
from learner.cluster.session import ClusterConnectError, ray_session
from learner.control.progress import Mode, Progress
from learner.control.signals import StopSignal, stop_signal
from learner.training.books import Books
from learner.training.evaluator import evaluation_hook
from learner.training.group import LearnerFailure, LearnerGroup
from learner.training.learner import Learner
from learner.training.loop import LoopCallback, LoopContext, TrainingLoop, run_session
from learner.training.meta_actor import MetaLearnerSpec, RayMetaLink
from learner.training.result import StopReason, TrainResult, describe_result, failure_of

log = logging.getLogger("impala_frodo")

#: Trajectories from Ray are read-only numpy views; the learner only reads them.
_READ_ONLY_WARNING = "The given NumPy array is not writable"


@dataclass
class TrainOptions:
    """How to run (not what to learn: that is the Config)."""

    resume_dir: Path | None = None  # continue this run directory from its checkpoint
    #: A new run's directory, already made with its config.json (a sweep makes its seeds'
    #: directories up front); default: a new one under ``run.logdir``.
    run_dir: Path | None = None
    #: A specific .pt to resume from (default: <resume_dir>/checkpoints/latest.pt).
    resume_checkpoint: Path | None = None
    address: str | None = None
    #: "bar" (a tqdm bar), "lines" (a plain line every ~10 s, for logs) or "off";
    #: True and False mean "bar" and "off".
    progress: bool | Mode = True
    stop_at_return: float | None = None  # stop once the return window's mean reaches it
    max_actor_restarts: int = DEFAULT_MAX_RESTARTS
    handle_signals: bool = True
    learner_threads: int | None = None  # default: the CPUs the actors leave free, at least 1
    #: Dotted keys the user set (``learner.app.args.explicit_keys``): on a local instance
    #: their CPU shares are kept and only the others fitted; empty, every share may be.
    explicit_keys: frozenset[str] = frozenset()
    #: Called after every update with the LoopContext (tests kill actors from here).
    callback: LoopCallback | None = None


def train(cfg: Config, options: TrainOptions | None = None) -> TrainResult:
    """Run (or resume) a distributed training run; the result's reason says how it ended.

    Raises :class:`ConfigError` / :class:`CheckpointError` / :class:`RunDirError` for bad
    input (before Ray starts), :class:`ClusterConnectError` for a cluster that cannot be
    reached.
    """
    options = options or TrainOptions()
    device = resolve_device(cfg.run.device)
    spec = env_spec_or_config_error(cfg)
    local = not ray.is_initialized() and not (options.address or os.environ.get("RAY_ADDRESS"))
    if local:
        cfg = fit_local_cpus(cfg, options.explicit_keys)  # the shares not set, fitted: a line
    check_memory(cfg, spec, local=local)  # before Ray starts and before any file is written
    with (
        claim_run_dir(
            cfg,
            resume_dir=options.resume_dir,
            run_dir=options.run_dir,
            resume_checkpoint=options.resume_checkpoint,
        ) as (run_dir, state),
        torch_threads(learner_threads(cfg, options.learner_threads, local=local)),
        stop_signal(options.handle_signals) as stop,
    ):
        session = ray_session(
            options.address,
            connect_timeout_s=cfg.run.connect_timeout_s,
            should_stop=lambda: stop.requested,
            # learners of their own fetch unrolls from the object store, not the driver
            inline_results=cfg.run.num_learners == 1,
        )
        with session, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_READ_ONLY_WARNING, category=UserWarning)
            if options.handle_signals:
                stop.install()  # over the failure-signal handler Ray's core worker set
            check_resources(cfg, learner_gpus=_learners_use_gpus(cfg))
            if not local:
                check_cluster_memory(cfg, spec)
            return _train_in_session(cfg, spec, device, run_dir, state, options, stop)


def _train_in_session(
    cfg: Config,
    spec: EnvSpec,
    device: torch.device,
    run_dir: Path,
    state: dict[str, Any] | None,
    options: TrainOptions,
    stop: StopSignal,
) -> TrainResult:
    """The actors, the async meta-learner (if any) and the learner started, in this order
    (the actors' and the meta-learner's processes come up while the learner is built);
    the loop run; all stopped again in the reverse order."""
    learner: Learner | None = None
    try:
        with (
            _actor_pool(cfg, spec, state, options) as pool,
            _meta_link(cfg, spec) as meta_link,
            _learner(cfg, spec, device, run_dir, state, meta_link) as learner,
            evaluation_hook(cfg, learner, options.callback) as callback,  # eval.*
        ):
            if meta_link is not None:  # started while the actors and the learner were built
                meta_link.wait_started(lambda: stop.requested)
            progress = Progress(
                _progress_mode(options.progress),
                cfg.run.total_env_steps,
                learner.books.counters.env_steps,
            )
            loop = TrainingLoop(
                learner,
                pool,
                stop,
                progress,
                trajectories_per_update=cfg.run.trajectories_per_update,
                progress_timeout_s=cfg.run.progress_timeout_s,
                stop_at_return=options.stop_at_return,
                callback=callback,
            )
            return run_session(loop, run_dir)
    # At start-up (the meta-learner or the learners not placed, or dead); later,
    # run_session's result.
    except (MetaLearnerError, LearnerFailure) as error:
        log.error("training stopped: %s", error)
        books = learner.books if learner is not None else _resumed_books(cfg, state)
        return TrainResult.from_books(
            books, failure_of(error).reason, run_dir=run_dir, message=str(error)
        )


def _resumed_books(cfg: Config, state: dict[str, Any] | None) -> Books:
    """The run's books as its checkpoint left them (a new run's, empty): what a session
    that ended before its learner was built reports."""
    books = Books(cfg.run, is_meta=cfg.is_meta)
    if state is not None:
        counters = state["counters"]
        books.load_state_dict(
            state, updates=counters["updates"], meta_updates=counters["meta_updates"]
        )
    return books


@contextmanager
def _actor_pool(
    cfg: Config, spec: EnvSpec, state: dict[str, Any] | None, options: TrainOptions
) -> Iterator[ActorPool]:
    """The rollout actors, started (seeded by the resume count), shut down after."""
    pool = ActorPool(
        cfg.run,
        RolloutSpec.from_config(cfg, num_envs=cfg.run.envs_per_actor),
        agent_layout(spec.observation_shape, spec.num_actions, cfg.agent),
        resume_count=resume_count(state),
        max_restarts=options.max_actor_restarts,
    )
    try:
        yield pool
    finally:
        pool.shutdown()


@contextmanager
def _learner(
    cfg: Config,
    spec: EnvSpec,
    device: torch.device,
    run_dir: Path,
    state: dict[str, Any] | None,
    meta_link: MetaLink | None,
) -> Iterator[Learner]:
    """:func:`_make_learner`'s learner, closed after (its run logger flushed and closed)."""
    learner = _make_learner(cfg, spec, device, run_dir, state, meta_link)
    try:
        yield learner
    finally:
        _close_learner(learner)


def _learners_use_gpus(cfg: Config) -> bool:
    """Data-parallel learners take a GPU each: with ``run.device = "cuda"``, or ``"auto"``
    where the cluster has one per learner."""
    if cfg.run.num_learners == 1:
        return False
    if cfg.run.device == "auto":
        return ray.cluster_resources().get("GPU", 0.0) >= cfg.run.num_learners
    return cfg.run.device == "cuda"


def _make_learner(
    cfg: Config,
    spec: EnvSpec,
    device: torch.device,
    run_dir: Path,
    state: dict[str, Any] | None,
    meta_link: MetaLink | None = None,
) -> Learner:
    """The learner, its checkpoints and its run logger; resumed from ``state`` if given.

    With ``run.num_learners`` > 1 it drives a :class:`LearnerGroup` (the driver deals out
    references to the unrolls; each learner fetches its own); in async mode its updater
    sends its windows through ``meta_link``.
    """
    seed_everything(cfg.run.seed)
    group = None
    if cfg.run.num_learners > 1:
        use_gpus = _learners_use_gpus(cfg)
        rule = partial(Updater, cfg, spec.observation_shape, spec.num_actions)
        group = LearnerGroup(
            cfg.run, rule, use_gpus=use_gpus, state_observations=spec.state_observations
        )
        device = torch.device("cpu")
        log.info(
            "%d learners on %d node(s), %s",
            group.size,
            len(set(group.node_ids)),
            "one GPU each" if use_gpus else "CPU",
        )
    try:
        learner = Learner(
            cfg,
            spec.observation_shape,
            spec.num_actions,
            device=device,
            state_observations=spec.state_observations,
            checkpoints=CheckpointManager(run_dir / CHECKPOINT_DIR),
            updater=_updater(cfg, spec, device, meta_link) if group is None else None,
            group=group,
        )
        resume_step = None
        if state is not None:
            learner.load_state_dict(state)  # every learner from the checkpoint
            resume_step = learner.books.counters.env_steps
            learner.books.count_resume()  # resume_count(state), as the actors were seeded
            # The resumed run's config (e.g. a larger budget) replaces config.json once this
            # session has a checkpoint of its own: until then the old one still describes it.
            learner.after_next_checkpoint = lambda: _write_config(run_dir, cfg)
        learner.run_logger = RunLogger(run_dir, resume_step=resume_step)
        learner.run_logger.add_config(cfg, learner.books.counters.env_steps)
    except BaseException:
        if group is not None:
            group.shutdown()
        raise
    return learner


def _updater(
    cfg: Config, spec: EnvSpec, device: torch.device, meta_link: MetaLink | None
) -> Updater:
    return Updater(cfg, spec.observation_shape, spec.num_actions, device, meta_link=meta_link)


@contextmanager
def _meta_link(cfg: Config, spec: EnvSpec) -> Iterator[RayMetaLink | None]:
    """In async mode, the link to a meta-learner actor, started (not waited for: see
    :meth:`RayMetaLink.wait_started`) and closed after; the learner's schedule loads its
    eta into it. ``None`` in inline mode."""
    if meta_learner_cpus(cfg) == 0:
        yield None
        return
    link = RayMetaLink(
        MetaLearnerSpec.of(cfg, spec.observation_shape, spec.num_actions),
        num_cpus=cfg.meta.learner_num_cpus,
        timeout_s=cfg.run.progress_timeout_s,
        max_restarts=cfg.meta.max_restarts,
        restart_window_s=cfg.run.restart_window_s,
    )
    try:
        yield link
    finally:
        link.close()


def _close_learner(learner: Learner) -> None:
    """Close the run logger (a disk error here is reported, not raised over the result)
    and stop data-parallel learners."""
    try:
        learner.close()
    except StorageError as e:
        log.error("%s; the last log records may be missing", e)
    finally:
        if isinstance(learner.updater, LearnerGroup):
            learner.updater.shutdown()


def _write_config(run_dir: Path, cfg: Config) -> None:
    try:
        write_config(run_dir, cfg)
    except OSError as e:
        raise StorageError(
            f"cannot write {str(run_dir / CONFIG_FILE)!r}: {os_error_reason(e)}"
        ) from None


def _progress_mode(progress: bool | Mode) -> Mode:
    if isinstance(progress, bool):
        return "bar" if progress else "off"
    return progress


__all__ = [
    "CheckpointError",
    "ClusterConnectError",
    "LoopContext",
    "RunDirError",
    "StopReason",
    "StopSignal",
    "TrainOptions",
    "TrainResult",
    "TrainingError",
    "describe_result",
    "resume_count",
    "train",
]
