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
import math
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch

from actors.rollout import DEFAULT_MAX_RESTARTS, EnvSpec
from impala_frodo.config.schema import Config
from impala_frodo.networks.agent import agent_layout
from impala_frodo.records.checkpoint import CheckpointError, CheckpointManager, load_checkpoint
from impala_frodo.records.runlog import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    RunDirError,
    RunLock,
    RunLogger,
    StorageError,
    check_writable,
    create_run_dir,
    write_config,
)
from impala_frodo.rule.meta_learner import MetaLearnerError
from impala_frodo.utils import os_error_reason, resolve_device, seed_everything
from learner.app.env_check import env_spec_or_config_error
from learner.app.preflight import check_cluster_memory, check_memory, removed_if_refused
from learner.cluster.actor_pool import ActorPool, TrainingError
from learner.cluster.session import (
    ClusterConnectError,
    check_local_cpus,
    check_resources,
    meta_learner_cpus,
    ray_session,
)
from learner.control.progress import Mode, Progress
from learner.control.signals import StopSignal
from learner.training.group import LearnerFailure, LearnerGroup
from learner.training.learner import Counters, Learner, check_resume_state
from learner.training.loop import LoopCallback, LoopContext, run_session
from learner.training.meta_actor import RayMetaLink
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
        check_local_cpus(cfg)
    check_memory(cfg, spec, local=local)  # before Ray starts and before any file is written
    with (
        _claim_run_dir(cfg, options) as (run_dir, state),
        _torch_threads(_learner_threads(cfg, options, local)),
        _stop_signal(options.handle_signals) as stop,
    ):
        session = ray_session(
            options.address,
            connect_timeout_s=cfg.run.connect_timeout_s,
            should_stop=lambda: stop.requested,
        )
        with session, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_READ_ONLY_WARNING, category=UserWarning)
            if options.handle_signals:
                stop.install()  # over the failure-signal handler Ray's core worker set
            check_resources(cfg, learner_gpus=_learners_use_gpus(cfg))
            if not local:
                check_cluster_memory(cfg, spec)
            # The actors start first: their processes come up while the learner is built.
            try:
                with (
                    _actor_pool(cfg, spec, state, options) as pool,
                    _learner(cfg, spec, device, run_dir, state) as learner,
                    _meta_learner(cfg, spec, learner, lambda: stop.requested),
                ):
                    progress = Progress(
                        _progress_mode(options.progress),
                        cfg.run.total_env_steps,
                        learner.counters.env_steps,
                    )
                    return run_session(
                        cfg,
                        learner,
                        pool,
                        run_dir,
                        stop,
                        progress,
                        stop_at_return=options.stop_at_return,
                        callback=options.callback,
                    )
            # At start-up (the meta-learner or the learners not placed, or dead); later,
            # run_session's result.
            except (MetaLearnerError, LearnerFailure) as error:
                log.error("training stopped: %s", error)
                return TrainResult(
                    run_dir=run_dir,
                    reason=failure_of(error).reason,
                    message=str(error),
                    budget=cfg.run.total_env_steps,
                    returns_window=cfg.run.returns_window,
                )


@contextmanager
def _claim_run_dir(
    cfg: Config, options: TrainOptions
) -> Iterator[tuple[Path, dict[str, Any] | None]]:
    """A new run directory, or the resumed one with its checkpoint, held for this session.

    Before Ray starts: the directory is locked (:class:`RunLock`: a second session in it
    is refused), checked to be writable, and a resumed run's checkpoint is loaded.
    """
    made_here = options.resume_dir is None and options.run_dir is None
    if options.resume_dir is None:
        if options.run_dir is not None:  # made by a sweep for this seed
            run_dir = Path(options.run_dir)
        else:
            run_dir = create_run_dir(cfg, cfg.run.logdir)
    else:
        run_dir = Path(options.resume_dir)
    with RunLock(run_dir), removed_if_refused(run_dir, made_here):
        check_writable(run_dir)
        state = None
        if options.resume_dir is not None:
            path = options.resume_checkpoint
            state = (
                load_checkpoint(path)
                if path is not None
                else CheckpointManager(run_dir / CHECKPOINT_DIR).load()
            )
            check_resume_state(state)  # a bad checkpoint is bad input: found before Ray starts
        yield run_dir, state


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Torch uses ``threads`` threads meanwhile (the setting before is put back after).

    Set before the learner's first torch op: OpenMP sizes its thread pool then, and a
    spare pool thread spin-waits on a core the actors need (measured: 2x fewer env
    steps/s with 2 cores when the pool was made with 2 threads and cut to 1).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _stop_signal(handle_signals: bool) -> Iterator[StopSignal]:
    """A :class:`StopSignal`, handling SIGINT/SIGTERM from now (before Ray connects: a stop
    while it connects is seen too) if ``handle_signals``; the old handlers back after."""
    stop = StopSignal()
    if handle_signals:
        stop.install()
    try:
        yield stop
    finally:
        stop.restore()


def _learner_threads(cfg: Config, options: TrainOptions, local: bool) -> int:
    """Torch threads for the learner: on a local Ray, the cores the actors leave free.

    On a cluster (or a Ray someone else started) the current setting stays
    (``OMP_NUM_THREADS``; see ``ENTRYPOINT_NUM_CPUS`` in deploy/submit_job.sh).
    """
    if options.learner_threads is not None:
        return options.learner_threads
    if not local:
        return torch.get_num_threads()
    actor_cpus = math.ceil(cfg.run.num_actors * cfg.run.actor_num_cpus + meta_learner_cpus(cfg))
    return max(1, (os.cpu_count() or 1) - actor_cpus)


@contextmanager
def _actor_pool(
    cfg: Config, spec: EnvSpec, state: dict[str, Any] | None, options: TrainOptions
) -> Iterator[ActorPool]:
    """The rollout actors, started (seeded by the resume count), shut down after."""
    pool = ActorPool(
        cfg,
        agent_layout(spec.observation_shape, spec.num_actions, cfg.agent),
        resume_count=resume_count(state),
        max_restarts=options.max_actor_restarts,
    )
    try:
        yield pool
    finally:
        pool.shutdown()


def resume_count(state: dict[str, Any] | None) -> int:
    """How many times the run was resumed before this session: 0 for a new run.

    It seeds the actors, so that a resumed run does not replay its first session's envs,
    and :func:`_make_learner` records it as ``learner.counters.resumes``.
    """
    return 0 if state is None else Counters.from_dict(state["counters"]).resumes + 1


@contextmanager
def _learner(
    cfg: Config, spec: EnvSpec, device: torch.device, run_dir: Path, state: dict[str, Any] | None
) -> Iterator[Learner]:
    """:func:`_make_learner`'s learner, closed after (its run logger flushed and closed)."""
    learner = _make_learner(cfg, spec, device, run_dir, state)
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
) -> Learner:
    """The learner, its checkpoints and its run logger; resumed from ``state`` if given.

    With ``run.num_learners`` > 1 its updater is a :class:`LearnerGroup` (the batches are
    assembled on the driver's CPU and dealt to the learners).
    """
    seed_everything(cfg.run.seed)
    group = None
    if cfg.run.num_learners > 1:
        use_gpus = _learners_use_gpus(cfg)
        group = LearnerGroup(cfg, spec.observation_shape, spec.num_actions, use_gpus=use_gpus)
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
            updater=group,
        )
        resume_step = None
        if state is not None:
            learner.load_state_dict(state)  # every learner from the checkpoint
            resume_step = learner.counters.env_steps
            learner.counters.resumes = resume_count(state)  # as the actors were seeded
            # The resumed run's config (e.g. a larger budget) replaces config.json once this
            # session has a checkpoint of its own: until then the old one still describes it.
            learner.after_next_checkpoint = lambda: _write_config(run_dir, cfg)
        learner.run_logger = RunLogger(run_dir, resume_step=resume_step)
        learner.run_logger.add_config(cfg, learner.counters.env_steps)
    except BaseException:
        if group is not None:
            group.shutdown()
        raise
    return learner


@contextmanager
def _meta_learner(
    cfg: Config, spec: EnvSpec, learner: Learner, should_stop: Callable[[], bool]
) -> Iterator[None]:
    """In async mode, the meta-learner actor, started from the learner's (restored) eta,
    waited for (:meth:`RayMetaLink.wait_started`) and attached to its updater; stopped
    after. Nothing in inline mode."""
    if meta_learner_cpus(cfg) == 0:
        yield
        return
    link = RayMetaLink(cfg, spec.observation_shape, spec.num_actions, learner.updater.meta_state())
    learner.updater.meta_link = link
    try:
        link.wait_started(should_stop)
        yield
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
