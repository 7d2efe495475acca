"""What a :class:`~learner.training.group.LearnerGroup` needs to replace a lost rank.

When an update fails because a rank died, stopped answering, or its collective failed,
the group settles every rank's call (:func:`settle`: which ranks are alive with a clean
state, which are lost), and re-forms: the survivors leave their process group, a new
rank is started in each lost rank's bundle, all meet at a fresh rendezvous, and every
rank takes a survivor's state as it was at the end of the last completed update
(:meth:`~learner.training.rank.RankLearner.clean_state`). :class:`RestartBudget` bounds
how often (``run.max_learner_restarts`` within ``run.restart_window_s``); past it, or when
no replacement can be placed, the run stops with a final checkpoint of that clean state
(:class:`LearnersLost`).

Survivors rejoin rather than every rank being restarted: measured on the 2-core test
machine (2 ranks, gloo), a survivor left its group in 0.01 s and the two ranks met again
in 0.3 s, beside the new process's start (2.1 s); restarting both processes took 5.1 s.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from learner.training.rank import CollectiveError

#: Seconds a rank has to answer :meth:`~learner.training.rank.RankLearner.pid` beside a
#: blocked update before it is taken for frozen.
PING_S = 5.0


class LearnerFailure(RuntimeError):
    """A learner process died, failed, or did not answer within the deadline.

    ``restartable``: a loss the group can replace (a death, a silence, a failed
    collective), not a rank's own error (a bug would only happen again).
    """

    def __init__(self, message: str, *, restartable: bool = False) -> None:
        super().__init__(message)
        self.restartable = restartable


class LearnersLost(LearnerFailure):
    """A rank was lost and could not be replaced (restarts spent, or no room for a new
    one): the run stops, with a final checkpoint of a survivor's last clean state."""


class Outcome(StrEnum):
    """How one rank's call ended, once the group has settled them."""

    OK = "ok"  # it answered
    COLLECTIVE = "collective"  # its collective failed: a peer's loss; it is intact
    DEAD = "dead"  # its process is gone
    FAILED = "failed"  # it raised an error of its own
    HUNG = "hung"  # no answer: frozen, or blocked for good (it is killed)

    @property
    def survived(self) -> bool:
        return self in (Outcome.OK, Outcome.COLLECTIVE)


def describe_loss(outcomes: Sequence[Outcome]) -> str:
    """``learner rank 1 lost (dead)``: the ranks that did not survive, and how."""
    lost = [f"{rank} ({o})" for rank, o in enumerate(outcomes) if not o.survived]
    return f"learner rank{'s' if len(lost) > 1 else ''} {', '.join(lost) or 'none'} lost"


def outcome_of(ref: ray.ObjectRef) -> Outcome:
    """How the finished call behind ``ref`` ended."""
    try:
        ray.get(ref)
    except RayActorError:
        return Outcome.DEAD
    except RayTaskError as error:
        return Outcome.COLLECTIVE if isinstance(error.cause, CollectiveError) else Outcome.FAILED
    return Outcome.OK


def settle(ranks: Sequence[Any], refs: Sequence[ray.ObjectRef], grace_s: float) -> list[Outcome]:
    """How each rank's call (``refs[i]`` on ``ranks[i]``) ended, waiting at most about
    ``grace_s`` twice. A rank still in its call is pinged: one that does not answer is
    frozen and killed, which fails its peers' collectives at once; a rank still in its
    call after that is blocked for good (:attr:`Outcome.HUNG`) and killed too."""
    outcomes = _wait(refs, grace_s)
    pending = [i for i, o in enumerate(outcomes) if o is None]
    if pending:
        pings = {i: ranks[i].pid.remote() for i in pending}
        answered, _ = ray.wait(list(pings.values()), num_returns=len(pings), timeout=PING_S)
        for i in pending:
            if pings[i] not in answered:
                ray.kill(ranks[i], no_restart=True)
        later = _wait([refs[i] for i in pending], grace_s)
        for i, outcome in zip(pending, later, strict=True):
            outcomes[i] = outcome or Outcome.HUNG
    for i, outcome in enumerate(outcomes):
        if not outcome.survived:
            ray.kill(ranks[i], no_restart=True)
    return outcomes


def _wait(refs: Sequence[ray.ObjectRef], timeout_s: float) -> list[Outcome | None]:
    """Each call's outcome, or ``None`` for one not finished within ``timeout_s``."""
    done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    finished = set(done)
    return [outcome_of(ref) if ref in finished else None for ref in refs]


class RestartBudget:
    """At most ``max_restarts`` restarts within any ``window_s`` seconds."""

    def __init__(
        self, max_restarts: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_restarts, self.window_s = max_restarts, window_s
        self._clock = clock
        self._times: deque[float] = deque()

    def spent(self) -> bool:
        """Another restart now would be one too many in the window."""
        now = self._clock()
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
        return len(self._times) >= self.max_restarts

    def record(self) -> None:
        self._times.append(self._clock())

    def describe(self) -> str:
        return (
            f"run.max_learner_restarts = {self.max_restarts} within "
            f"run.restart_window_s = {self.window_s:g} s"
        )
