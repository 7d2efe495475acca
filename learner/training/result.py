"""How a training session ended: a stop reason with its exit code, and the run's numbers.

:class:`StopReason` is why the loop stopped; each reason carries its exit code
(:class:`~learner.control.exit_codes.ExitCode`) and the words the summary line starts with.
:data:`FAILURES` maps the exceptions that end a loop to their reason, whether the
final checkpoint is still saved, and the message. :func:`describe_result` is the
console's summary line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from impala_frodo.records.runlog import StorageError
from impala_frodo.rule.meta_learner import MetaLearnerError
from impala_frodo.rule.updater import NonFiniteLossError
from learner.cluster.actor_pool import TrainingError
from learner.control.exit_codes import ExitCode
from learner.training.books import Books, History
from learner.training.group import LearnerFailure
from learner.training.restarts import LearnersLost


class StopReason(StrEnum):
    """Why a session stopped. A string (``"budget"``, ``"nan"``...) that knows its exit code."""

    exit_code: ExitCode
    #: The summary line's first words (``{total}``: the run's budget in env steps).
    summary: str

    BUDGET = ("budget", ExitCode.OK, "done: reached the budget of {total:,} env steps")
    RETURN = ("return", ExitCode.OK, "done: reached the return target")
    SIGNAL = ("signal", ExitCode.INTERRUPTED, "stopped by a signal")
    NAN = ("nan", ExitCode.FAILED, "failed: a non-finite loss")
    DISK = ("disk", ExitCode.FAILED, "failed: a write refused by the disk")
    ACTORS = ("actors", ExitCode.FAILED, "failed: the rollout actors")
    META = ("meta", ExitCode.FAILED, "failed: the async meta-learner")
    LEARNERS = ("learners", ExitCode.FAILED, "failed: a learner process")

    def __new__(cls, value: str, exit_code: ExitCode, summary: str) -> StopReason:
        member = str.__new__(cls, value)
        member._value_ = value
        member.exit_code = exit_code
        member.summary = summary
        return member


@dataclass(frozen=True)
class Failure:
    """How an exception ends the loop.

    ``message`` is formatted with ``error`` and ``last_good`` (where the last good
    checkpoint is) into :attr:`TrainResult.message`; ``log_line`` with that ``message``
    into the error logged.
    """

    reason: StopReason
    #: Whether the final checkpoint is still saved (not after a bad update or disk).
    final_checkpoint: bool
    message: str
    log_line: str = "{message}"


#: The exceptions that end a training loop with a result (any other is a bug: it propagates).
FAILURES: dict[type[BaseException], Failure] = {
    NonFiniteLossError: Failure(StopReason.NAN, False, "training stopped: {error}; {last_good}"),
    StorageError: Failure(StopReason.DISK, False, "training stopped: {error}; {last_good}"),
    TrainingError: Failure(StopReason.ACTORS, True, "{error}", "training stopped: {message}"),
    # eta as last received, and its Adam state, are in the final checkpoint.
    MetaLearnerError: Failure(StopReason.META, True, "{error}", "training stopped: {message}"),
    # No learner survived, or one raised: the others may be stuck in a collective, and no
    # clean state can be read.
    LearnerFailure: Failure(StopReason.LEARNERS, False, "training stopped: {error}; {last_good}"),
    # A lost learner not replaced: a survivor's state at the last completed update is saved.
    LearnersLost: Failure(StopReason.LEARNERS, True, "{error}", "training stopped: {message}"),
    # Ctrl-C without our handler (a second signal ends the process in learner.control.signals).
    KeyboardInterrupt: Failure(StopReason.SIGNAL, False, "interrupted: no final checkpoint"),
}


def failure_of(error: BaseException) -> Failure:
    """The :data:`FAILURES` entry of ``error``'s type (or of the nearest base class listed)."""
    return next(FAILURES[kind] for kind in type(error).__mro__ if kind in FAILURES)


@dataclass
class TrainResult:
    """A session's outcome: why it stopped, the run's counters, and this session's share.

    Both trainers return one (the distributed :func:`~learner.app.driver.train` and the
    synchronous :func:`~learner.training.sync.train_sync`), made by :meth:`from_books`.
    """

    run_dir: Path | None  # None: a synchronous run that wrote no run directory
    reason: StopReason = StopReason.BUDGET
    env_steps: int = 0
    updates: int = 0
    episodes: int = 0
    mean_return: float | None = None
    session_env_steps: int = 0
    session_wall_s: float = 0.0
    actor_failures: int = 0
    learner_restarts: int = 0  # data-parallel learner ranks lost and replaced, over the run
    meta_restarts: int = 0  # the async meta-learner's, over the run
    #: This session's unroll calls: submitted = collected + lost + abandoned.
    unrolls: dict[str, int] = field(default_factory=dict)
    message: str = ""
    last_log: dict[str, float] = field(default_factory=dict)
    budget: int = 0  # run.total_env_steps
    returns_window: int = 0  # run.returns_window: episodes in mean_return
    history: History = field(default_factory=History)  # this session's episodes and errors

    @classmethod
    def from_books(
        cls,
        books: Books,
        reason: StopReason,
        *,
        run_dir: Path | None,
        wall_s: float = 0.0,
        unrolls: Mapping[str, int] | None = None,
        message: str = "",
        last_log: Mapping[str, float] | None = None,
    ) -> TrainResult:
        """The result of a session that ended for ``reason``, its numbers from the learner's
        ``books``: ``wall_s``, the session's seconds; ``unrolls``, its unroll calls;
        ``last_log``, the record the final checkpoint holds (none if none was saved)."""
        counters = books.counters
        return cls(
            run_dir=run_dir,
            reason=reason,
            env_steps=counters.env_steps,
            updates=counters.updates,
            episodes=counters.episodes,
            mean_return=books.mean_return(),
            session_env_steps=books.session_env_steps,
            session_wall_s=wall_s,
            actor_failures=counters.actor_failures,
            learner_restarts=counters.learner_restarts,
            meta_restarts=counters.meta_restarts,
            unrolls=dict(unrolls or {}),
            message=message,
            last_log=dict(last_log or {}),
            budget=books.budget,
            returns_window=books.returns_window,
            history=books.history,
        )

    @property
    def exit_code(self) -> ExitCode:
        """The command's exit code: the stop reason's."""
        return self.reason.exit_code

    @property
    def env_steps_per_s(self) -> float:
        return self.session_env_steps / max(self.session_wall_s, 1e-9)


def describe_result(result: TrainResult) -> str:
    """One line for the console at the end of a run."""
    reason = result.reason.summary.format(total=result.budget)
    mean_return = "n/a" if result.mean_return is None else f"{result.mean_return:.3f}"
    failures = f", {result.actor_failures} actor failure(s)" if result.actor_failures else ""
    if result.learner_restarts:
        failures += f", {result.learner_restarts} learner restart(s)"
    if result.meta_restarts:
        failures += f", {result.meta_restarts} meta-learner restart(s)"
    return (
        f"{reason}. {result.env_steps:,} env steps, {result.updates:,} updates, "
        f"{result.episodes:,} episodes; mean return of the last {result.returns_window} "
        f"episodes {mean_return}; {result.env_steps_per_s:,.0f} env steps/s over "
        f"{result.session_wall_s:.1f} s this session{failures}. Run directory: {result.run_dir}"
    )
