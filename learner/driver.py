"""The distributed run: Ray, N rollout actors, the learner loop, and a clean shutdown.

This is the only module that knows Ray, the actors and the learner together.

**Queue.** There is no queue actor. The driver keeps up to ``depth`` calls
``actor.unroll.remote(version, weights)`` in flight per actor, with
``depth = max(1, run.queue_size // run.num_actors)``; their result ObjectRefs
*are* the trajectory queue. The learner ``ray.wait``\\ s on them, takes the oldest
ready ones (FIFO), updates, and only then submits new calls for the actors it
took from. So at most ``depth * num_actors`` (<= ``run.queue_size`` when it is
>= ``num_actors``) unrolls exist outside the learner, an actor whose calls are
all done waits for the learner (backpressure), and nothing is dropped: every
result is either consumed or, for calls lost with a dead actor process,
counted in ``perf/lost_unrolls``. ``perf/queue_size`` is the number of
finished unrolls waiting for the learner at each update (mean per log interval).

**Weights.** The learner publishes ``(version, params)`` every
``run.broadcast_every`` updates; the driver packs the params into one float32
vector (one numpy buffer serialises ~2.5x faster than a dict of tensors) and
*offers* it to every actor (``offer_weights``, fire and forget). The offer
runs in the actor's own ``weights`` concurrency group, beside the unroll in
progress, and the actor takes the newest offer when its next unroll starts:
mu lags the learner by about one unroll plus the finished unrolls waiting in
the queue, not by the whole queue. Up to ``INLINE_WEIGHTS_BYTES`` the vector
goes by value (the Catch agent is 30 KB: inlined into the task spec, no
object-store round trip); above it is ``ray.put`` once per publication. A new
or restarted actor process gets the weights with its next ``unroll`` call.
Actors never wait for the learner and never poll.

**Learner placement.** The learner runs in the driver process (no extra hop
for trajectories): on CUDA when ``run.device`` is ``auto``/``cuda`` and the
driver's machine has a GPU. Under ``ray job submit`` give the entrypoint a
GPU with ``--entrypoint-num-gpus 1``. Actors are CPU-only.

**Faults.** Actors have ``max_restarts`` (Ray restarts a dead process; the
calls that were in flight fail with ``ActorUnavailableError``, which is logged,
counted in ``perf/actor_failures``, and the slot gets new calls). When Ray gives
up on an actor (``ActorDiedError``: no restart left, or its node is gone for
good) it is replaced by a new one at once; one whose constructor raised stops
the run (exit 1: a new one would fail the same way). An exception raised
*inside* an actor (a bug in an env) stops the run. No wait is unbounded: with no
unroll back for ``run.progress_timeout_s`` the run exits 1 with a message saying
which actors it waited on; connecting to a cluster gives up after
``run.connect_timeout_s`` (exit 2); SIGINT/SIGTERM are seen within about a second
whatever the driver waits on (connecting included). Unrolls are accounted for:
each one asked of an actor is consumed, lost with a dead actor
(``perf/lost_unrolls``) or abandoned at the end of the session.

**Exit codes** (see :data:`EXIT_OK` etc.): 0 budget reached (or
``stop_at_return`` met); 130 stopped by SIGINT/SIGTERM after a final checkpoint
(resume with ``--resume``); 1 training failed (non-finite loss, or a checkpoint or
log write refused by the disk: the last good checkpoint is kept, nothing is saved;
or actors keep dying); 2 bad input (also: a run dir that is not writable, or in use
by another session).
A second SIGINT/SIGTERM aborts at once without a final checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
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
from ray.exceptions import ActorDiedError, RayActorError

from actors.rollout import (
    DEFAULT_MAX_RESTARTS,
    WEIGHTS_GROUP,
    EnvSpec,
    actor_seed,
    env_spec,
    make_ray_actor_class,
    pack_params,
)
from impala_frodo.checkpoint import CheckpointError, CheckpointManager, load_checkpoint
from impala_frodo.config import Config, ConfigError
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
from impala_frodo.sync import ScalarMeans
from impala_frodo.trajectory import Trajectory
from impala_frodo.updater import NonFiniteLossError
from impala_frodo.utils import first_line, resolve_device, seed_everything
from learner.learner import Learner, summary_line

log = logging.getLogger("impala_frodo")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Weights up to this size go by value with each call; larger ones via one ray.put.
INLINE_WEIGHTS_BYTES = 100 * 1024
#: On a local Ray started here, task results up to this size are inlined into the reply
#: instead of going through the shared-memory object store (measured: +50% env steps/s
#: for 134 KB Catch unrolls on 2 cores).
INLINE_RESULT_BYTES = 4 * 1024 * 1024
#: Seconds without any trajectory before a warning (actors not placed? all dead?).
STALL_WARNING_S = 60.0
#: Longest single wait of the driver loop: a stop request is seen within about this.
WAIT_SLICE_S = 0.5
#: Seconds between calls to an actor that Ray is restarting.
RESTART_BACKOFF_S = 0.2

#: Trajectories from Ray are read-only numpy views; the learner only reads them.
_READ_ONLY_WARNING = "The given NumPy array is not writable"


class TrainingError(RuntimeError):
    """The run cannot go on (actors keep failing, an actor raised); the message says why."""


class ClusterConnectError(ConfigError):
    """The Ray cluster at the given address cannot be reached (bad input: exit code 2)."""


def remote_error(error: BaseException) -> str:
    """``ValueError: bad kwarg`` for an exception raised in an actor (not Ray's wrapper)."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException) and not isinstance(cause, ray.exceptions.RayError):
        return f"{type(cause).__name__}: {first_line(cause)}"
    # A creation task's error reaches the caller as text only: its last line names it.
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


# ----------------------------------------------------------------------- Ray
def local_ray_init_kwargs(num_cpus: int | None = None) -> dict[str, Any]:
    """``ray.init`` arguments for a private local instance (tests use them too)."""
    return {
        "num_cpus": num_cpus or os.cpu_count() or 1,
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "_system_config": {"max_direct_call_object_size": INLINE_RESULT_BYTES},
    }


@contextmanager
def ray_session(
    address: str | None = None,
    *,
    connect_timeout_s: float = 60.0,
    stop: StopSignal | None = None,
) -> Iterator[bool]:
    """Connect to Ray for the run; yields whether this call started (and will stop) it.

    Already connected (tests, or a caller that ran ``ray.init``): reuse it.
    ``address`` or ``RAY_ADDRESS`` (set by ``ray job submit``): join that cluster
    (``"auto"`` finds a local ``ray start`` one) within ``connect_timeout_s``, else
    :class:`ClusterConnectError`; a ``stop`` request meanwhile raises ``KeyboardInterrupt``.
    Otherwise: a private local instance with ``num_cpus = os.cpu_count()`` and no dashboard.
    """
    if ray.is_initialized():
        yield False
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        _connect(address, connect_timeout_s, stop)
    else:
        ray.init(**local_ray_init_kwargs())
    try:
        yield True
    finally:
        ray.shutdown()


#: A ``ray.init`` that did not return in time (it cannot be cancelled): the CLI then
#: ends the process with ``os._exit`` rather than wait for it at interpreter exit.
_stuck_connect: threading.Thread | None = None


def connect_stuck() -> bool:
    """A cluster connection attempt is still blocked in Ray (see :func:`ray_session`)."""
    return _stuck_connect is not None and _stuck_connect.is_alive()


def _connect(address: str, timeout_s: float, stop: StopSignal | None) -> None:
    """``ray.init(address=...)`` with a deadline, signals seen within ``WAIT_SLICE_S``.

    Ray retries an unreachable GCS for minutes inside C++ code, where Python signal
    handlers do not run; so the connection is made in a helper thread while this
    (main) thread waits in short slices. A ``host:port`` that refuses TCP fails at once.
    """
    global _stuck_connect
    _check_reachable(address, timeout_s)
    done = threading.Event()
    failure: list[BaseException] = []

    def connect() -> None:
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except BaseException as e:  # handed to the waiting thread
            failure.append(e)
        finally:
            done.set()

    thread = threading.Thread(target=connect, name="ray-connect", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not done.wait(WAIT_SLICE_S / 5):
        if stop is not None and stop.requested:
            _stuck_connect = thread
            raise KeyboardInterrupt(f"stopped while connecting to the Ray cluster at {address}")
        if time.monotonic() > deadline:
            _stuck_connect = thread
            raise ClusterConnectError(
                f"no Ray cluster answered at {address!r} within {timeout_s:g} s "
                f"(run.connect_timeout_s)"
            )
    if failure:
        raise ClusterConnectError(
            f"cannot connect to the Ray cluster at {address!r}: {first_line(failure[0])}"
        ) from None


def _check_reachable(address: str, timeout_s: float) -> None:
    """A ``host:port`` address must accept a TCP connection (fails fast on a wrong port)."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return  # "auto", "ray://...": Ray resolves those itself
    try:
        socket.create_connection(
            (host.strip("[]"), int(port)), timeout=min(timeout_s, 10.0)
        ).close()
    except OSError as e:
        reason = e.strerror or first_line(e)
        raise ClusterConnectError(
            f"cannot reach the Ray cluster at {address!r}: {reason}"
        ) from None


# ---------------------------------------------------------------- actor pool
@dataclass
class _Slot:
    handle: Any
    actor_id: int
    incarnation: int = 0  # bumped at every death: results of older calls are stale
    deaths_on_handle: int = 0
    replacements: int = 0
    inflight: int = 0
    #: False from a death until the restarted process returns an unroll: calls that fail
    #: meanwhile ("the actor is restarting") are the same death, not new ones.
    healthy: bool = True
    #: While unhealthy, no new call before this time (monotonic s): no busy resubmission.
    retry_at: float = 0.0
    #: A new or restarted process has no weights: its next unroll call carries them.
    needs_weights: bool = True
    #: Weight offers not yet seen to finish (their errors are read, not left to Ray's log).
    offers: list = field(default_factory=list)
    #: Unrolls collected since its last offer: an actor that has not started a new
    #: unroll since then has not used that offer yet, and a newer one can wait.
    collected_since_offer: int = 0
    #: When this handle was made, and when it last returned an unroll (monotonic s).
    created_at: float = field(default_factory=time.monotonic)
    returned_at: float | None = None


class ActorPool:
    """N rollout actors with up to ``depth`` unroll calls each in flight: the trajectory queue."""

    def __init__(
        self,
        cfg: Config,
        *,
        generation: int = 0,
        max_restarts: int = DEFAULT_MAX_RESTARTS,
        max_failures: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.generation = generation
        self.max_restarts = max_restarts
        self.max_failures = (
            max_failures if max_failures is not None else 10 + 5 * cfg.run.num_actors
        )
        self.depth = max(1, cfg.run.queue_size // cfg.run.num_actors)
        self._actor_cls = make_ray_actor_class(cfg.run.actor_num_cpus, max_restarts)
        self.slots = [_Slot(self._spawn(i, 0), i) for i in range(cfg.run.num_actors)]
        self._order: list[ray.ObjectRef] = []  # in-flight calls, oldest first
        #: ref -> (slot, incarnation, handle): the handle is the slot's replacement count.
        self._origin: dict[ray.ObjectRef, tuple[int, int, int]] = {}
        self._version = -1
        self._payload: Any = None
        self.failures = 0
        #: Unroll calls made, and what became of them: collected (returned to the learner),
        #: lost (their actor died), abandoned (still in flight at shutdown).
        self.submitted = 0
        self.collected = 0
        self.lost_unrolls = 0
        self.abandoned = 0

    @property
    def in_flight(self) -> int:
        return len(self._order)

    def _spawn(self, actor_id: int, replacement: int) -> Any:
        seed = actor_seed(self.cfg.run.seed, actor_id, self.generation * 1000 + replacement)
        return self._actor_cls.remote(self.cfg, actor_id, seed)

    # -------------------------------------------------------------- weights
    def publish(self, version: int, params: dict[str, torch.Tensor]) -> None:
        """Offer ``params`` to every actor now; new and restarted ones get them with a call.

        The offers run in the actors' weights concurrency group, beside the unroll in
        progress, so each actor's next unroll acts with them: fire and forget.
        """
        flat = pack_params(params)
        self._payload = flat if flat.nbytes <= INLINE_WEIGHTS_BYTES else ray.put(flat)
        self._version = version
        for slot in self.slots:
            if slot.offers:  # read finished offers: an actor's death shows up in unroll calls
                done, slot.offers = ray.wait(slot.offers, num_returns=len(slot.offers), timeout=0)
                for ref in done:
                    with contextlib.suppress(RayActorError):
                        ray.get(ref)
            if slot.healthy and not slot.needs_weights and slot.collected_since_offer:
                offer = slot.handle.offer_weights.options(concurrency_group=WEIGHTS_GROUP)
                slot.offers.append(offer.remote(version, self._payload))
                slot.collected_since_offer = 0

    # ---------------------------------------------------------------- calls
    def fill(self) -> None:
        """Top every actor up to ``depth`` calls in flight (weights only where needed)."""
        if self._version < 0:
            raise RuntimeError("ActorPool.fill before any weights were published")
        now = time.monotonic()
        for index, slot in enumerate(self.slots):
            if not slot.healthy and now < slot.retry_at:
                continue
            depth = self.depth if slot.healthy else 1  # one probe call while it restarts
            while slot.inflight < depth:
                if slot.needs_weights or not slot.healthy:
                    ref = slot.handle.unroll.remote(self._version, self._payload)
                    slot.needs_weights = False
                else:
                    ref = slot.handle.unroll.remote()
                self._order.append(ref)
                self._origin[ref] = (index, slot.incarnation, slot.replacements)
                slot.inflight += 1
                self.submitted += 1

    def take(self, n: int, timeout: float) -> tuple[list[Trajectory], int]:
        """Up to ``n`` finished unrolls, oldest first, waiting at most ``timeout`` seconds.

        Returns them with the number that were ready before waiting (the queue size).
        Calls that failed because their actor died are handled and not returned.
        """
        if not self._order:  # every actor is restarting: wait a little, do not spin
            time.sleep(min(timeout, RESTART_BACKOFF_S / 4))
            return [], 0
        ready, _ = ray.wait(self._order, num_returns=len(self._order), timeout=0)
        queued = len(ready)
        if queued < n:
            ready, _ = ray.wait(self._order, num_returns=min(n, len(self._order)), timeout=timeout)
        trajectories = []
        for ref in ready[:n]:
            trajectory = self._collect(ref)
            if trajectory is not None:
                trajectories.append(trajectory)
        return trajectories, queued

    def _collect(self, ref: ray.ObjectRef) -> Trajectory | None:
        self._order.remove(ref)
        index, incarnation, handle = self._origin.pop(ref)
        slot = self.slots[index]
        slot.inflight -= 1
        try:
            trajectory = ray.get(ref)
        except RayActorError as e:
            self.lost_unrolls += 1
            self._on_actor_error(index, incarnation, handle, e)
            return None
        except ray.exceptions.RayTaskError as e:
            self.lost_unrolls += 1
            raise TrainingError(f"actor {slot.actor_id} raised {remote_error(e)}") from e
        self.collected += 1
        if incarnation == slot.incarnation:
            slot.healthy = True
        slot.returned_at = time.monotonic()
        slot.collected_since_offer += 1
        return trajectory

    def _on_actor_error(
        self, index: int, incarnation: int, handle: int, error: RayActorError
    ) -> None:
        """A call failed because its actor process died: count the death once, recover.

        ``ActorDiedError`` means Ray gave up on the actor (its restarts are spent, however
        many deaths this driver saw, or its node is gone for good): it is replaced at once,
        or, if its constructor raised, the run stops. Otherwise Ray restarts the process:
        every call in flight fails (``incarnation`` tells those apart), and calls made
        while it restarts fail with ``ActorUnavailableError`` (the slot is unhealthy until
        an unroll comes back): one death, counted once.
        """
        slot = self.slots[index]
        if handle != slot.replacements:
            return  # a call to a handle already replaced: that actor was dealt with
        slot.retry_at = time.monotonic() + RESTART_BACKOFF_S
        if isinstance(error, ActorDiedError):
            if error.actor_init_failed:
                raise TrainingError(
                    f"actor {slot.actor_id} failed at start-up: {remote_error(error)}"
                )
            self._count_failure(slot, error)
            log.warning(
                "actor %d is dead for good (Ray will not restart it): replaced by a new actor",
                slot.actor_id,
            )
            self._replace(index)
            return
        if incarnation < slot.incarnation or not slot.healthy:
            return  # a call to an earlier process, or made while Ray restarts it: same death
        slot.incarnation += 1
        slot.healthy = False
        slot.needs_weights = True
        slot.deaths_on_handle += 1
        self._count_failure(slot, error)
        if slot.deaths_on_handle > self.max_restarts:
            log.warning(
                "actor %d died %d times, more than its restart budget: replaced by a new actor",
                slot.actor_id,
                slot.deaths_on_handle,
            )
            self._replace(index)
        else:
            log.warning(
                "actor %d died (%s: %s); Ray restarts it (%d/%d), training goes on",
                slot.actor_id,
                type(error).__name__,
                first_line(error)[:160],
                slot.deaths_on_handle,
                self.max_restarts,
            )

    def _count_failure(self, slot: _Slot, error: RayActorError) -> None:
        self.failures += 1
        if self.failures > self.max_failures:
            raise TrainingError(
                f"rollout actors failed {self.failures} times (limit {self.max_failures}); "
                f"last: actor {slot.actor_id}: {first_line(error)}"
            )

    def describe_waits(self) -> str:
        """What the learner is waiting on, actor by actor (for a no-progress error)."""
        now = time.monotonic()
        parts = []
        for slot in self.slots:
            if slot.returned_at is None:
                since = (
                    f"no unroll since it was created {now - slot.created_at:.0f} s ago "
                    f"(not placed on a node, or not starting?)"
                )
            else:
                since = f"last unroll {now - slot.returned_at:.0f} s ago"
            state = "healthy" if slot.healthy else "restarting after a death"
            parts.append(
                f"actor {slot.actor_id}: {slot.inflight} unroll call(s) in flight, {state}, "
                f"{since}, {slot.replacements} replacement(s)"
            )
        return "; ".join(parts)

    def _replace(self, index: int) -> None:
        slot = self.slots[index]
        with contextlib.suppress(Exception):  # already gone
            ray.kill(slot.handle, no_restart=True)
        slot.replacements += 1  # calls to the old handle are stale
        slot.handle = self._spawn(slot.actor_id, slot.replacements)
        slot.incarnation += 1
        slot.deaths_on_handle = 0
        slot.healthy, slot.retry_at = True, 0.0
        slot.needs_weights, slot.offers = True, []
        slot.created_at, slot.returned_at = time.monotonic(), None

    def shutdown(self) -> None:
        """Kill the actors; unfinished calls are abandoned (never counted as trained on)."""
        for slot in self.slots:
            with contextlib.suppress(Exception):  # already dead
                ray.kill(slot.handle, no_restart=True)
        self.abandoned += len(self._order)
        self._order.clear()
        self._origin.clear()


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
    resume_checkpoint: Path | None = (
        None  # a specific .pt (default: <resume_dir>/checkpoints/latest.pt)
    )
    address: str | None = None
    progress: bool = True
    stop_at_return: float | None = None  # stop once the return window's mean reaches it
    max_actor_restarts: int = DEFAULT_MAX_RESTARTS
    handle_signals: bool = True
    learner_threads: int | None = None  # default: the CPUs the actors leave free, at least 1
    #: Called after every update with the LoopContext (tests kill actors from here).
    callback: Callable[[LoopContext], None] | None = None


@dataclass
class TrainResult:
    run_dir: Path
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


def _check_resources(cfg: Config) -> None:
    cpus = ray.cluster_resources().get("CPU", 0.0)
    need = cfg.run.num_actors * cfg.run.actor_num_cpus
    if need > cpus:
        log.warning(
            "%d actors x %.2f CPU = %.1f CPUs but the cluster has %.1f: only %d can run at once",
            cfg.run.num_actors,
            cfg.run.actor_num_cpus,
            need,
            cpus,
            int(cpus // cfg.run.actor_num_cpus),
        )


def train(cfg: Config, options: TrainOptions | None = None) -> TrainResult:
    """Run (or resume) a distributed training run; see the module docstring for exit codes.

    Raises :class:`ConfigError` / :class:`CheckpointError` / :class:`RunDirError` for bad
    input (before Ray starts).
    """
    options = options or TrainOptions()
    device = resolve_device(cfg.run.device)
    spec = _env_spec_or_config_error(cfg)
    local = not ray.is_initialized() and not (options.address or os.environ.get("RAY_ADDRESS"))
    if local:
        _check_local_cpus(cfg)
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
                learner = _make_learner(cfg, spec, device, run_dir, state)
                try:
                    return _run(cfg, options, learner, run_dir, stop)
                finally:
                    _close_learner(learner)
        finally:
            stop.restore()
            torch.set_num_threads(threads)


def _close_learner(learner: Learner) -> None:
    """Close the run logger; a disk error here is reported, not raised over the result."""
    try:
        learner.close()
    except StorageError as e:
        log.error("%s; the last log records may be missing", e)


def _check_local_cpus(cfg: Config) -> None:
    """On the local Ray this run starts (``os.cpu_count()`` CPUs) every actor must fit."""
    cpus = os.cpu_count() or 1
    if cfg.run.actor_num_cpus > cpus:
        raise ConfigError(
            f"run.actor_num_cpus = {cfg.run.actor_num_cpus:g} is more than the {cpus} CPUs of "
            f"the local Ray instance this run starts: no actor could ever be placed"
        )


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
        learner.counters.resumes += 1
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
    cfg: Config, options: TrainOptions, learner: Learner, run_dir: Path, stop: StopSignal
) -> TrainResult:
    _check_resources(cfg)
    pool = ActorPool(
        cfg,
        generation=learner.counters.resumes,
        max_restarts=options.max_actor_restarts,
    )
    result = TrainResult(run_dir=run_dir, exit_code=EXIT_OK, reason="budget")
    start_steps, start = learner.counters.env_steps, time.monotonic()
    base_failures = learner.counters.actor_failures
    resumed = learner.counters.resumes > 0
    save_on_exit = True
    try:
        from tqdm import tqdm

        with tqdm(
            total=cfg.run.total_env_steps,
            initial=learner.counters.env_steps,
            unit="step",
            unit_scale=True,
            dynamic_ncols=True,
            disable=not options.progress,
            smoothing=0.05,
        ) as bar:
            result.reason = _loop(cfg, options, learner, pool, stop, bar, base_failures)
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
    # A resumed session that added no steps (e.g. a budget already reached) saves nothing:
    # a copy of latest.pt would only push the older previous.pt out.
    if save_on_exit and (learner.counters.env_steps > start_steps or not resumed):
        try:
            if learner.has_unlogged_steps():  # one record per env-step count, never two
                learner.log(_pool_scalars(pool))
            result.last_log = learner.last_record
            path = learner.checkpoint()
            log.info("final checkpoint: %s", path)
        except StorageError as e:
            result.exit_code, result.reason = EXIT_FAILED, "disk"
            result.message = f"the final checkpoint failed: {e}; {_last_good(learner)}"
            log.error(result.message)
    c = learner.counters
    result.env_steps, result.updates, result.episodes = c.env_steps, c.updates, c.episodes
    result.mean_return = learner.mean_return()
    result.session_env_steps = c.env_steps - start_steps
    result.session_wall_s = time.monotonic() - start
    result.actor_failures = c.actor_failures
    result.unrolls = {
        "submitted": pool.submitted,
        "collected": pool.collected,
        "lost": pool.lost_unrolls,
        "abandoned": pool.abandoned,
    }
    return result


def _last_good(learner: Learner) -> str:
    """Where the last good checkpoint is, for a message about a failed run."""
    manager = learner.checkpoints
    if manager is not None and manager.exists():
        return f"the last good checkpoint is kept at {manager.latest}"
    return "no checkpoint had been saved yet"


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
    bar: Any,
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
        before = learner.counters.env_steps
        learner.update(pending)
        pending = []
        if learner.publish_due():
            pool.publish(*learner.weights())
        pool.fill()
        bar.update(learner.counters.env_steps - before)
        if learner.log_due():
            now = time.monotonic()
            extra = queue.drain() | _pool_scalars(pool)
            extra["perf/learner_wait_frac"] = wait_s / max(now - interval_start, 1e-9)
            wait_s, interval_start = 0.0, now
            record = learner.log(extra)
            bar.set_postfix(summary_line(record), refresh=False)
        learner.maybe_checkpoint()
        if options.callback is not None:
            options.callback(ctx)
        if options.stop_at_return is not None and learner.solved(options.stop_at_return):
            return "return"
    return "budget"


def describe_result(result: TrainResult) -> str:
    """One line for the console at the end of a run."""
    ret = "n/a" if result.mean_return is None else f"{result.mean_return:.3f}"
    return (
        f"{result.reason}: {result.env_steps:,} env steps, {result.updates:,} updates, "
        f"{result.episodes:,} episodes, mean return {ret}, "
        f"{result.env_steps_per_s:,.0f} env steps/s this session, "
        f"{result.actor_failures} actor failure(s); run dir {result.run_dir}"
    )


__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "ActorPool",
    "CheckpointError",
    "ClusterConnectError",
    "LoopContext",
    "RunDirError",
    "StopSignal",
    "TrainOptions",
    "TrainResult",
    "TrainingError",
    "describe_result",
    "local_ray_init_kwargs",
    "ray_session",
    "train",
]
