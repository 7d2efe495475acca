"""The training loop of a distributed run: take batches, update, publish, refill, log.

:func:`run_session` runs the loop (:class:`TrainingLoop`) over a learner and its
actor pool, turns an exception that ends it into a stop reason
(:data:`learner.training.result.FAILURES`), saves the final checkpoint where that is safe,
and returns the :class:`~learner.training.result.TrainResult`. No wait is unbounded:
:class:`StallWatchdog` ends a loop that has had no trajectory for
``run.progress_timeout_s``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from impala_frodo.acting.trajectory import Trajectory
from impala_frodo.records.intervals import ScalarMeans
from impala_frodo.records.runlog import StorageError
from learner.cluster.actor_pool import ActorPool, TrainingError
from learner.cluster.session import WAIT_SLICE_S, lost_local_node
from learner.control.progress import Progress
from learner.control.signals import StopSignal
from learner.training.group import LearnerFailure
from learner.training.learner import Learner
from learner.training.result import FAILURES, StopReason, TrainResult, failure_of

log = logging.getLogger("impala_frodo")

#: Seconds without any trajectory before a warning (actors not placed? all dead?).
STALL_WARNING_S = 60.0


@dataclass
class LoopContext:
    """What a loop callback sees after every update (tests kill actors from there)."""

    learner: Learner
    pool: ActorPool
    stop: StopSignal


LoopCallback = Callable[[LoopContext], None]


class StallWatchdog:
    """Bounds the wait for trajectories.

    Without one for ``warn_every_s`` it logs a warning (again every ``warn_every_s``);
    without one for ``timeout_s`` (``run.progress_timeout_s``) it raises
    :class:`TrainingError`, naming the actors waited on.

    The time measured is since the last unroll *finished*, as far as the driver can
    tell, not since it was taken: an unroll that was already waiting when the learner
    looked finished before that look, at the latest after the previous one
    (:meth:`looked`). So a driver blocked in a Ray call (for seconds when the local
    raylet was SIGKILLed; docs/results-distributed.md, "Measurements behind the code")
    that then takes the unrolls finished before the block does not restart the deadline.
    """

    def __init__(
        self,
        timeout_s: float,
        warn_every_s: float = STALL_WARNING_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout_s = timeout_s
        self.warn_every_s = warn_every_s
        self._clock = clock
        self._last_progress = self._last_warning = self._last_look = clock()

    def looked(self) -> None:
        """The learner has just looked for finished unrolls (a take ended)."""
        self._last_look = self._clock()

    def progressed(self, waiting_already: bool = False) -> None:
        """A trajectory came: the wait starts again, from when it finished.

        ``waiting_already``: it was finished before this look began, so it finished
        after the previous look at the earliest; the wait starts from that look.
        """
        finished = self._last_look if waiting_already else self._clock()
        self._last_progress = max(self._last_progress, finished)
        self._last_warning = self._clock()

    def check(self, waiting_on: Callable[[], str]) -> None:
        """No trajectory came this time: warn, or raise past the timeout."""
        idle = self._clock() - self._last_progress
        if idle > self.timeout_s:
            raise TrainingError(
                f"no progress for {idle:.0f} s (run.progress_timeout_s = "
                f"{self.timeout_s:g}): the learner waited for unrolls from {waiting_on()}"
            )
        if self._clock() - self._last_warning > self.warn_every_s:
            log.warning("no trajectories for %.0f s; waiting for actors", idle)
            self._last_warning = self._clock()


class _WaitShare:
    """The share of a log interval the learner spent waiting for trajectories."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self._waited_s, self._start = 0.0, time.monotonic()

    def add(self, seconds: float) -> None:
        self._waited_s += seconds

    def take(self) -> float:
        """The share since the last take (or restart), and a new interval from now."""
        share = self._waited_s / max(time.monotonic() - self._start, 1e-9)
        self.restart()
        return share


class TrainingLoop:
    """Take batches from the pool, update the learner, publish weights, refill, log.

    An update takes ``trajectories_per_update`` actor batches (``run.batches_per_update``
    per learner); ``progress_timeout_s`` bounds the wait for one (:class:`StallWatchdog`).
    """

    def __init__(
        self,
        learner: Learner,
        pool: ActorPool,
        stop: StopSignal,
        progress: Progress,
        *,
        trajectories_per_update: int,
        progress_timeout_s: float,
        stop_at_return: float | None = None,
        callback: LoopCallback | None = None,
    ) -> None:
        self.learner = learner
        self.pool = pool
        self.stop = stop
        self.progress = progress
        self.stop_at_return = stop_at_return
        self.callback = callback
        self.trajectories_per_update = trajectories_per_update
        self.progress_timeout_s = progress_timeout_s
        self._context = LoopContext(learner, pool, stop)
        self._queue_sizes = ScalarMeans()
        self._pending: list[Trajectory] = []
        self._flowing = False  # the first trajectory has come

    def run(self) -> StopReason:
        """Loop until the budget, the return target or a stop request; returns which."""
        self.pool.publish(*self.learner.behaviour_weights())
        self.pool.fill()
        waits, watchdog = _WaitShare(), StallWatchdog(self.progress_timeout_s)
        while not self.learner.books.done:
            if self.stop.requested:
                return StopReason.SIGNAL
            got, queued = self._take(waits)
            if got:
                watchdog.progressed(waiting_already=queued > 0)
            watchdog.looked()
            if not got:
                _check_local_node()
                watchdog.check(self.pool.describe_waits)
                self.pool.fill()  # slots whose calls failed get new ones
                continue
            if not self._flowing:
                self._flowing = True
                # Actor start-up is not in the first log interval.
                self.learner.books.restart_intervals()
                waits.restart()
            self._pending.extend(got)
            if len(self._pending) < self.trajectories_per_update:
                self.pool.fill()  # keep the actors we took from busy while we wait for the rest
                continue
            self._update(waits)
            if self.stop_at_return is not None and self.learner.books.solved(self.stop_at_return):
                return StopReason.RETURN
        return StopReason.BUDGET

    def _take(self, waits: _WaitShare) -> tuple[list[Trajectory], int]:
        """The unrolls finished within one wait slice (up to what the next update needs),
        and how many were finished before the wait (the queue size)."""
        start = time.monotonic()
        wanted = self.trajectories_per_update - len(self._pending)
        got, queued = self.pool.take(wanted, timeout=WAIT_SLICE_S)
        waits.add(time.monotonic() - start)
        self.learner.books.count_actor_failures(self.pool.failures)
        if got:
            self._queue_sizes.add({"perf/queue_size": queued})
        return got, queued

    def _update(self, waits: _WaitShare) -> None:
        """One update on the pending batches, then publish, refill, log, checkpoint."""
        self.learner.update(self._pending)
        self._pending = []
        if self.learner.publish_due():
            self.pool.publish(*self.learner.behaviour_weights())
        self.pool.fill()
        self.progress.update(self.learner.books.counters.env_steps)
        if self.learner.books.log_due():
            scalars = self._queue_sizes.drain() | pool_scalars(self.pool)
            scalars["perf/learner_wait_frac"] = waits.take()
            self.progress.show(self.learner.log(scalars))
        self.learner.maybe_checkpoint()
        if self.callback is not None:
            self.callback(self._context)


def _check_local_node() -> None:
    """:class:`TrainingError` at once if the local Ray instance's node is gone (its raylet
    died): no actor can ever run again there, and waiting out the deadline is pointless."""
    lost = lost_local_node()
    if lost is not None:
        raise TrainingError(f"{lost}: no actor can run on it any more")


def pool_scalars(pool: ActorPool) -> dict[str, float]:
    """The pool's numbers for a log record."""
    return {
        "perf/in_flight": float(pool.in_flight),
        "perf/lost_unrolls": float(pool.lost_unrolls),
    }


def run_session(loop: TrainingLoop, run_dir: Path) -> TrainResult:
    """Run ``loop``, then save the final record and checkpoint where that is safe.

    Whatever ends the loop, the pool is shut down and the progress display closed; an
    exception of :data:`~learner.training.result.FAILURES` becomes the result's stop reason and
    message (and decides whether a final checkpoint is saved).
    """
    learner, pool, books = loop.learner, loop.pool, loop.learner.books
    start, ending = time.monotonic(), _Ending()
    try:
        save_on_exit = _run_loop(loop, ending)
        if loop.stop.requested:
            ending.reason = StopReason.SIGNAL
        # A resumed session that added no steps (e.g. a budget already reached) saves
        # nothing: a copy of latest.pt would only push the older previous.pt out.
        save_on_exit = save_on_exit and (books.session_env_steps > 0 or books.counters.resumes == 0)
        if save_on_exit:
            save_on_exit = _log_last_steps(ending, learner, pool)
    finally:
        loop.progress.close(learner.last_record)  # the bar ends on the summary's numbers
    if save_on_exit:
        _save_final_checkpoint(ending, learner)
    return TrainResult.from_books(
        books,
        ending.reason,
        run_dir=run_dir,
        wall_s=time.monotonic() - start,
        unrolls=pool.unroll_counts(),
        message=ending.message,
        last_log=ending.last_log,
    )


@dataclass
class _Ending:
    """How a session ends, as it is decided: why, the message, and the record the final
    checkpoint holds (if one is saved)."""

    reason: StopReason = StopReason.BUDGET
    message: str = ""
    last_log: dict[str, float] = field(default_factory=dict)


def _run_loop(loop: TrainingLoop, ending: _Ending) -> bool:
    """Run ``loop``; returns whether the final checkpoint may be saved."""
    try:
        ending.reason = loop.run()
        return True
    except tuple(FAILURES) as error:
        failure = failure_of(error)
        ending.reason = failure.reason
        ending.message = failure.message.format(error=error, last_good=_last_good(loop.learner))
        log.error(failure.log_line.format(message=ending.message))
        return failure.final_checkpoint
    finally:
        loop.pool.shutdown()


def _log_last_steps(ending: _Ending, learner: Learner, pool: ActorPool) -> bool:
    """A last log record for steps not logged yet; returns False if the disk refused it."""
    if not learner.books.has_unlogged_steps():  # one record per env-step count
        return True
    try:
        learner.log(pool_scalars(pool))
    except StorageError as error:
        _final_save_failed(ending, learner, error)
        return False
    return True


def _save_final_checkpoint(ending: _Ending, learner: Learner) -> None:
    try:
        ending.last_log = learner.last_record
        path = learner.checkpoint()
        log.info("final checkpoint: %s", path)
    except StorageError as error:
        _final_save_failed(ending, learner, error)
    except LearnerFailure as error:  # a rank lost since the loop ended (its local raylet)
        ending.reason = StopReason.LEARNERS
        ending.message = f"the final checkpoint failed: {error}; {_last_good(learner)}"
        log.error(ending.message)


def _final_save_failed(ending: _Ending, learner: Learner, error: StorageError) -> None:
    ending.reason = StopReason.DISK
    ending.message = f"the final checkpoint failed: {error}; {_last_good(learner)}"
    log.error(ending.message)


def _last_good(learner: Learner) -> str:
    """Where the last good checkpoint is, for a message about a failed run."""
    manager = learner.checkpoints
    if manager is not None and manager.exists():
        return f"the last good checkpoint is kept at {manager.latest}"
    return "no checkpoint had been saved yet"
