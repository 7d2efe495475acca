"""The training loop of a distributed run: learner, actors, signals and a clean shutdown.

:func:`train` prepares the run directory (or loads the checkpoint to resume),
builds the :class:`~learner.learner.Learner`, opens the Ray session
(:mod:`learner.ray_session`), starts the rollout actors
(:class:`~learner.actor_pool.ActorPool`: the trajectory queue, weight
publication, actor faults) and runs the loop: take batches, update, publish,
refill, log, checkpoint.

**Learner placement.** The learner runs in the driver process (no extra hop
for trajectories): on CUDA when ``run.device`` is ``auto``/``cuda`` and the
driver's machine has a GPU. Under ``ray job submit`` give the entrypoint a
GPU with ``--entrypoint-num-gpus 1``. Actors are CPU-only.

**Faults.** Actor deaths are the pool's (:mod:`learner.actor_pool`). No wait
is unbounded: with no unroll back for ``run.progress_timeout_s`` the run exits 1
with a message saying which actors it waited on; connecting to a cluster gives up
after ``run.connect_timeout_s`` (exit 2, :mod:`learner.ray_session`);
SIGINT/SIGTERM are seen within about a second whatever the driver waits on
(connecting included). The run directory is held by one session at a time
(:class:`~impala_frodo.runlog.RunLock`) and checked to be writable before Ray
starts. Unrolls are accounted for in :attr:`TrainResult.unrolls`: each one asked
of an actor is consumed, lost with a dead actor (``perf/lost_unrolls``) or
abandoned at the end of the session.

**Exit codes** (see :data:`EXIT_OK` etc.): 0 budget reached (or
``stop_at_return`` met); 130 stopped by SIGINT/SIGTERM after a final checkpoint
(resume with ``--resume``); 1 training failed (non-finite loss, or a checkpoint or
log write refused by the disk: the last good checkpoint is kept, nothing is saved;
or actors keep dying, or no progress for ``run.progress_timeout_s``); 2 bad input
(also: a run dir that is not writable, or in use by another session; a cluster that
cannot be reached). A second SIGINT/SIGTERM aborts at once without a final checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium
import ray
import torch

from actors.rollout import DEFAULT_MAX_RESTARTS, EnvSpec, env_spec
from impala_frodo.checkpoint import CheckpointError, CheckpointManager, load_checkpoint
from impala_frodo.config import Config, ConfigError
from impala_frodo.intervals import ScalarMeans
from impala_frodo.networks import agent_layout
from impala_frodo.runlog import (
    CHECKPOINT_DIR,
    RunDirError,
    RunLock,
    RunLogger,
    StorageError,
    check_writable,
    create_run_dir,
    write_config,
)
from impala_frodo.trajectory import Trajectory
from impala_frodo.updater import NonFiniteLossError
from impala_frodo.utils import first_line, resolve_device, seed_everything
from learner.actor_pool import ActorPool, TrainingError
from learner.learner import Counters, History, Learner, check_resume_state
from learner.progress import Mode, Progress
from learner.ray_session import (
    WAIT_SLICE_S,
    ClusterConnectError,
    check_local_cpus,
    check_resources,
    ray_session,
)

log = logging.getLogger("impala_frodo")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Seconds without any trajectory before a warning (actors not placed? all dead?).
STALL_WARNING_S = 60.0

#: Trajectories from Ray are read-only numpy views; the learner only reads them.
_READ_ONLY_WARNING = "The given NumPy array is not writable"


# ---------------------------------------------------------------- signals
class StopSignal:
    """SIGINT/SIGTERM -> a flag the loop checks (graceful stop); a second one aborts."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Handle SIGINT/SIGTERM here; again after ``ray.init``, which puts in its own."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = signal.signal(sig, self._handle)
            self._previous.setdefault(sig, previous)  # restore() puts back the first one

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: aborting")
        self.signum = signum
        log.warning(
            "%s: stopping after this update with a final checkpoint (again to abort)",
            signal.Signals(signum).name,
        )

    @property
    def requested(self) -> bool:
        return self.signum is not None


# ------------------------------------------------------------------ train
@dataclass
class TrainOptions:
    """How to run (not what to learn: that is the Config)."""

    resume_dir: Path | None = None  # continue this run directory from its checkpoint
    #: A new run's directory, already made with its config.json (a sweep makes its seeds'
    #: directories up front); default: a new one under ``run.logdir``.
    run_dir: Path | None = None
    resume_checkpoint: Path | None = (
        None  # a specific .pt (default: <resume_dir>/checkpoints/latest.pt)
    )
    address: str | None = None
    #: "bar" (a tqdm bar), "lines" (a plain line every ~10 s, for logs) or "off";
    #: True and False mean "bar" and "off".
    progress: bool | Mode = True
    stop_at_return: float | None = None  # stop once the return window's mean reaches it
    max_actor_restarts: int = DEFAULT_MAX_RESTARTS
    handle_signals: bool = True
    learner_threads: int | None = None  # default: the CPUs the actors leave free, at least 1
    #: Called after every update with the LoopContext (tests kill actors from here).
    callback: Callable[[LoopContext], None] | None = None


@dataclass
class TrainResult:
    """How a session of a run ended, and where it got (both trainers return one)."""

    run_dir: Path | None  # None: the synchronous trainer wrote no run directory
    exit_code: int
    reason: str  # "budget", "return", "signal", "nan", "disk", "actors"
    env_steps: int = 0
    updates: int = 0
    episodes: int = 0
    mean_return: float | None = None
    session_env_steps: int = 0
    session_wall_s: float = 0.0
    actor_failures: int = 0
    #: This session's unroll calls: submitted = collected + lost + abandoned.
    unrolls: dict[str, int] = field(default_factory=dict)
    message: str = ""
    last_log: dict[str, float] = field(default_factory=dict)
    budget: int = 0  # run.total_env_steps
    returns_window: int = 0  # run.returns_window: episodes in mean_return
    history: History = field(default_factory=History)  # this session's episodes, errors

    @property
    def env_steps_per_s(self) -> float:
        return self.session_env_steps / max(self.session_wall_s, 1e-9)


@dataclass
class LoopContext:
    learner: Learner
    pool: ActorPool
    stop: StopSignal


@contextmanager
def _claim_run_dir(
    cfg: Config, options: TrainOptions
) -> Iterator[tuple[Path, dict[str, Any] | None]]:
    """A new run directory, or the resumed one with its checkpoint, held for this session.

    Before Ray starts: the directory is locked (:class:`RunLock`: a second session in it
    is refused), checked to be writable, and a resumed run's checkpoint is loaded.
    """
    if options.resume_dir is None:
        if options.run_dir is not None:  # made by a sweep for this seed
            run_dir = Path(options.run_dir)
        else:
            run_dir = create_run_dir(cfg, cfg.run.logdir)
    else:
        run_dir = Path(options.resume_dir)
    with RunLock(run_dir):
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


def _learner_threads(cfg: Config, options: TrainOptions, local: bool) -> int:
    """Torch threads for the learner: on a local Ray, the cores the actors leave free.

    On a cluster (or a Ray someone else started) the current setting stays
    (``OMP_NUM_THREADS``; see ``ENTRYPOINT_NUM_CPUS`` in deploy/submit_job.sh).
    """
    if options.learner_threads is not None:
        return options.learner_threads
    if not local:
        return torch.get_num_threads()
    actor_cpus = math.ceil(cfg.run.num_actors * cfg.run.actor_num_cpus)
    return max(1, (os.cpu_count() or 1) - actor_cpus)


def train(cfg: Config, options: TrainOptions | None = None) -> TrainResult:
    """Run (or resume) a distributed training run; see the module docstring for exit codes.

    Raises :class:`ConfigError` / :class:`CheckpointError` / :class:`RunDirError` for bad
    input (before Ray starts), :class:`ClusterConnectError` for a cluster that cannot be
    reached.
    """
    options = options or TrainOptions()
    device = resolve_device(cfg.run.device)
    spec = _env_spec_or_config_error(cfg)
    local = not ray.is_initialized() and not (options.address or os.environ.get("RAY_ADDRESS"))
    if local:
        check_local_cpus(cfg)
    with _claim_run_dir(cfg, options) as (run_dir, state):
        # Torch threads are set before the learner's first torch op: OpenMP sizes its thread
        # pool then, and a spare pool thread spin-waits on a core the actors need (measured:
        # 2x fewer env steps/s with 2 cores when the pool was made with 2 threads and cut
        # to 1).
        threads = torch.get_num_threads()
        torch.set_num_threads(_learner_threads(cfg, options, local))
        stop = StopSignal()
        if options.handle_signals:
            stop.install()  # before connecting: a stop while Ray connects is seen too
        try:
            session = ray_session(
                options.address, connect_timeout_s=cfg.run.connect_timeout_s, stop=stop
            )
            with session, warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_READ_ONLY_WARNING, category=UserWarning)
                if options.handle_signals:
                    stop.install()  # over the failure-signal handler Ray's core worker set
                check_resources(cfg)
                # The actors start first: their processes come up while the learner is built.
                pool = ActorPool(
                    cfg,
                    agent_layout(spec.observation_shape, spec.num_actions, cfg.agent),
                    generation=_resume_generation(state),
                    max_restarts=options.max_actor_restarts,
                )
                try:
                    learner = _make_learner(cfg, spec, device, run_dir, state)
                    try:
                        return _run(cfg, options, learner, pool, run_dir, stop)
                    finally:
                        _close_learner(learner)
                finally:
                    pool.shutdown()
        finally:
            stop.restore()
            torch.set_num_threads(threads)


def _resume_generation(state: dict[str, Any] | None) -> int:
    """Which session of the run this is: 0 for a new run, the resume count after a resume.

    It seeds the actors, so that a resumed run does not replay its first session's envs,
    and :func:`_make_learner` records it as ``learner.counters.resumes``.
    """
    return 0 if state is None else Counters.from_dict(state["counters"]).resumes + 1


def _close_learner(learner: Learner) -> None:
    """Close the run logger; a disk error here is reported, not raised over the result."""
    try:
        learner.close()
    except StorageError as e:
        log.error("%s; the last log records may be missing", e)


def _make_learner(
    cfg: Config,
    spec: EnvSpec,
    device: torch.device,
    run_dir: Path,
    state: dict[str, Any] | None,
) -> Learner:
    """The learner, its checkpoints and its run logger; resumed from ``state`` if given."""
    seed_everything(cfg.run.seed)
    learner = Learner(
        cfg,
        spec.observation_shape,
        spec.num_actions,
        device=device,
        state_observations=spec.state_observations,
        checkpoints=CheckpointManager(run_dir / CHECKPOINT_DIR),
    )
    resume_step = None
    if state is not None:
        learner.load_state_dict(state)
        resume_step = learner.counters.env_steps
        learner.counters.resumes = _resume_generation(state)  # as the actors were seeded
        # The resumed run's config (e.g. a larger budget) replaces config.json once this
        # session has a checkpoint of its own: until then the old one still describes it.
        learner.after_next_checkpoint = lambda: _write_config(run_dir, cfg)
    learner.run_logger = RunLogger(run_dir, resume_step=resume_step)
    learner.run_logger.add_config(cfg, learner.counters.env_steps)
    return learner


def _write_config(run_dir: Path, cfg: Config) -> None:
    try:
        write_config(run_dir, cfg)
    except OSError as e:
        raise StorageError(
            f"cannot write {str(run_dir / 'config.json')!r}: {e.strerror or first_line(e)}"
        ) from None


def _env_spec_or_config_error(cfg: Config) -> EnvSpec:
    try:
        return env_spec(cfg)
    except (ValueError, TypeError, ImportError, gymnasium.error.Error) as e:
        raise ConfigError(
            f"cannot build env {cfg.env.id!r} with {cfg.env.kwargs}: {first_line(e)}"
        ) from None


def _run(
    cfg: Config,
    options: TrainOptions,
    learner: Learner,
    pool: ActorPool,
    run_dir: Path,
    stop: StopSignal,
) -> TrainResult:
    result = TrainResult(
        run_dir=run_dir,
        exit_code=EXIT_OK,
        reason="budget",
        budget=cfg.run.total_env_steps,
        returns_window=cfg.run.returns_window,
    )
    start_steps, start = learner.counters.env_steps, time.monotonic()
    base_failures = learner.counters.actor_failures
    resumed = learner.counters.resumes > 0
    save_on_exit = True
    progress = Progress(
        _progress_mode(options.progress), cfg.run.total_env_steps, learner.counters.env_steps
    )
    try:
        try:
            result.reason = _loop(cfg, options, learner, pool, stop, progress, base_failures)
        except NonFiniteLossError as e:
            save_on_exit = False
            result.exit_code, result.reason = EXIT_FAILED, "nan"
            result.message = f"training stopped: {e}; {_last_good(learner)}"
            log.error(result.message)
        except StorageError as e:
            save_on_exit = False
            result.exit_code, result.reason = EXIT_FAILED, "disk"
            result.message = f"training stopped: {e}; {_last_good(learner)}"
            log.error(result.message)
        except TrainingError as e:
            result.exit_code, result.reason, result.message = EXIT_FAILED, "actors", str(e)
            log.error("training stopped: %s", e)
        except KeyboardInterrupt:
            save_on_exit = False  # a second signal: abort now, the last periodic checkpoint stays
            result.exit_code, result.reason = EXIT_INTERRUPTED, "signal"
            result.message = "aborted by a second signal: no final checkpoint"
            log.error(result.message)
        finally:
            pool.shutdown()
        if stop.requested:
            result.exit_code, result.reason = EXIT_INTERRUPTED, "signal"
        # A resumed session that added no steps (e.g. a budget already reached) saves
        # nothing: a copy of latest.pt would only push the older previous.pt out.
        save_on_exit = save_on_exit and (learner.counters.env_steps > start_steps or not resumed)
        if save_on_exit and learner.has_unlogged_steps():  # one record per env-step count
            try:
                learner.log(_pool_scalars(pool))
            except StorageError as e:
                save_on_exit = False
                _final_save_failed(result, learner, e)
    finally:
        progress.close(learner.last_record)  # the bar ends on the summary's numbers
    if save_on_exit:
        try:
            result.last_log = learner.last_record
            path = learner.checkpoint()
            log.info("final checkpoint: %s", path)
        except StorageError as e:
            _final_save_failed(result, learner, e)
    c = learner.counters
    result.env_steps, result.updates, result.episodes = c.env_steps, c.updates, c.episodes
    result.mean_return = learner.mean_return()
    result.session_env_steps = c.env_steps - start_steps
    result.session_wall_s = time.monotonic() - start
    result.actor_failures = c.actor_failures
    result.history = learner.history
    result.unrolls = {
        "submitted": pool.submitted,
        "collected": pool.collected,
        "lost": pool.lost_unrolls,
        "abandoned": pool.abandoned,
    }
    return result


def _final_save_failed(result: TrainResult, learner: Learner, error: StorageError) -> None:
    result.exit_code, result.reason = EXIT_FAILED, "disk"
    result.message = f"the final checkpoint failed: {error}; {_last_good(learner)}"
    log.error(result.message)


def _last_good(learner: Learner) -> str:
    """Where the last good checkpoint is, for a message about a failed run."""
    manager = learner.checkpoints
    if manager is not None and manager.exists():
        return f"the last good checkpoint is kept at {manager.latest}"
    return "no checkpoint had been saved yet"


def _progress_mode(progress: bool | Mode) -> Mode:
    if isinstance(progress, bool):
        return "bar" if progress else "off"
    return progress


def _pool_scalars(pool: ActorPool) -> dict[str, float]:
    return {
        "perf/in_flight": float(pool.in_flight),
        "perf/lost_unrolls": float(pool.lost_unrolls),
    }


def _loop(
    cfg: Config,
    options: TrainOptions,
    learner: Learner,
    pool: ActorPool,
    stop: StopSignal,
    progress: Progress,
    base_failures: int,
) -> str:
    """Take batches, update, publish, refill; returns why it stopped."""
    pool.publish(*learner.weights())
    pool.fill()
    ctx = LoopContext(learner, pool, stop)
    queue = ScalarMeans()
    pending: list[Trajectory] = []
    flowing = False
    wait_s, last_progress = 0.0, time.monotonic()
    interval_start = next_warning = last_progress
    while not learner.done:
        if stop.requested:
            return "signal"
        t0 = time.monotonic()
        got, queued = pool.take(cfg.run.batches_per_update - len(pending), timeout=WAIT_SLICE_S)
        wait_s += time.monotonic() - t0
        learner.counters.actor_failures = base_failures + pool.failures
        if not got:
            idle = time.monotonic() - last_progress
            if idle > cfg.run.progress_timeout_s:
                raise TrainingError(
                    f"no progress for {idle:.0f} s (run.progress_timeout_s = "
                    f"{cfg.run.progress_timeout_s:g}): the learner waited for unrolls from "
                    f"{pool.describe_waits()}"
                )
            if time.monotonic() - next_warning > STALL_WARNING_S:
                log.warning("no trajectories for %.0f s; waiting for actors", idle)
                next_warning = time.monotonic()
            pool.fill()  # slots whose calls failed get new ones
            continue
        if not flowing:
            flowing = True
            learner.restart_intervals()  # actor start-up is not part of the first interval
            wait_s, interval_start = 0.0, time.monotonic()
        last_progress = next_warning = time.monotonic()
        queue.add({"perf/queue_size": queued})
        pending.extend(got)
        if len(pending) < cfg.run.batches_per_update:
            pool.fill()  # keep the actors we took from busy while we wait for the rest
            continue
        learner.update(pending)
        pending = []
        if learner.publish_due():
            pool.publish(*learner.weights())
        pool.fill()
        progress.update(learner.counters.env_steps)
        if learner.log_due():
            now = time.monotonic()
            extra = queue.drain() | _pool_scalars(pool)
            extra["perf/learner_wait_frac"] = wait_s / max(now - interval_start, 1e-9)
            wait_s, interval_start = 0.0, now
            progress.show(learner.log(extra))
        learner.maybe_checkpoint()
        if options.callback is not None:
            options.callback(ctx)
        if options.stop_at_return is not None and learner.solved(options.stop_at_return):
            return "return"
    return "budget"


#: What each stop reason means, for the summary line.
_REASONS = {
    "budget": "done: reached the budget of {total:,} env steps",
    "return": "done: reached the return target",
    "signal": "stopped by a signal",
    "nan": "failed: a non-finite loss",
    "disk": "failed: a write refused by the disk",
    "actors": "failed: the rollout actors",
}


def describe_result(result: TrainResult) -> str:
    """One line for the console at the end of a run."""
    reason = _REASONS.get(result.reason, result.reason).format(total=result.budget)
    ret = "n/a" if result.mean_return is None else f"{result.mean_return:.3f}"
    failures = f", {result.actor_failures} actor failure(s)" if result.actor_failures else ""
    return (
        f"{reason}. {result.env_steps:,} env steps, {result.updates:,} updates, "
        f"{result.episodes:,} episodes; mean return of the last {result.returns_window} "
        f"episodes {ret}; {result.env_steps_per_s:,.0f} env steps/s over "
        f"{result.session_wall_s:.1f} s this session{failures}. Run directory: {result.run_dir}"
    )


__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CheckpointError",
    "ClusterConnectError",
    "LoopContext",
    "RunDirError",
    "StopSignal",
    "TrainOptions",
    "TrainResult",
    "TrainingError",
    "describe_result",
    "train",
]
