"""What a :class:`~learner.training.group.LearnerGroup` needs to replace a lost rank.

When an update fails because a rank died, stopped answering, or its collective failed,
the group settles every rank's call (:func:`settle`: which ranks are alive with a clean
state, which are lost), and re-forms: the survivors leave their process group, a new
rank is started in each lost rank's bundle, all meet at a fresh rendezvous, and every
rank takes a survivor's state as it was at the end of the last completed update
(:meth:`~learner.training.rank.RankLearner.clean_state`). :class:`RestartBudget` bounds
how often (``run.max_learner_restarts`` within ``run.restart_window_s``); past it, or when
no replacement can be placed, the run stops with a final checkpoint of that clean state
(:class:`LearnersLost`). With no survivor, every rank is restarted and takes the last
checkpoint's state, the update counts kept (:mod:`learner.training.rewind`); with no
checkpoint yet, the run stops (:class:`LearnerFailure`, no final checkpoint).

Survivors rejoin rather than every rank being restarted: measured on the 2-core test
machine (2 ranks, gloo), a survivor left its group in 0.01 s and the two ranks met again
in 0.3 s, beside the new process's start (2.1 s); restarting both processes took 5.1 s.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from learner.training.rank import CollectiveError
from learner.training.rewind import rewound_state

log = logging.getLogger("impala_frodo")

#: Seconds the calls of a failed update are waited for before the ranks still in theirs
#: are pinged (those whose peer died end within milliseconds: gloo sees the closed socket).
SETTLE_S = 5.0
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
    """How each rank's call (``refs[i]`` on ``ranks[i]``) ended. Calls whose peer died end
    within milliseconds (:data:`SETTLE_S` at most is waited for them); a rank still in its
    call then is pinged: one that does not answer is frozen and killed, which fails its
    peers' collectives at once. A rank still in its call ``grace_s`` after that is blocked
    for good (:attr:`Outcome.HUNG`). Every rank that did not survive is killed."""
    outcomes = _wait(refs, SETTLE_S)
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
    """At most ``max_restarts`` restarts within any ``window_s`` seconds: a process lost
    now and then is replaced, one lost again and again (a cause a new one shares) is not.
    The learner ranks' (``run.max_learner_restarts``) and the async meta-learner's
    (``meta.max_restarts``) alike."""

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

    def take(self) -> bool:
        """Count a restart now, if the budget allows one (else ``False``, nothing counted)."""
        if self.spent():
            return False
        self.record()
        return True


class Replacements:
    """:class:`~learner.training.group.LearnerGroup`'s restarts: replacing lost ranks.

    A mixin: it uses the group's ``ranks``, ``size``, ``strategy`` (Ray's placement
    strategy), ``timeout_s``, ``num_updates``, ``num_meta_updates``, ``budget`` (a
    :class:`RestartBudget`), ``saved_state`` (the last checkpoint's updater state, see
    :mod:`learner.training.rewind`), ``_get`` (a call within the deadline),
    ``_start_rank`` (a new rank in its bundle) and ``_meet`` (every rank into a new
    process group, taking a state), and keeps ``restarts``, ``last_loss``,
    ``last_rewound``, ``_final_state`` and ``_published`` up to date.
    """

    def _replace_lost(self, refs: list[ray.ObjectRef], failure: LearnerFailure) -> float:
        """Settle the failed update's calls, replace the lost ranks and give every rank a
        survivor's clean state (with none, every rank the last checkpoint's:
        :meth:`_restart_all`); returns the seconds it took. :class:`LearnersLost` (with
        that state kept for the final checkpoint) where no replacement can be made."""
        start = time.monotonic()
        outcomes = settle(self.ranks, refs, self.timeout_s)
        loss = self.last_loss = f"update {self.num_updates + 1}: {describe_loss(outcomes)}"
        log.warning("%s, settled in %.2f s (%s)", loss, time.monotonic() - start, failure)
        survivors = [i for i, outcome in enumerate(outcomes) if outcome.survived]
        self.last_rewound = 0
        if not survivors:
            self._restart_all(f"{loss}: no learner survived")
            self.budget.record()
            self.restarts += 1
            return time.monotonic() - start
        clean = self.ranks[survivors[0]].clean_state.remote(self.num_updates)
        lost = [i for i in range(self.size) if i not in survivors]
        why = self._cannot_replace()
        if why is not None:
            self._stop_with(clean, f"{loss}; {why}")
        try:
            self._reform(survivors, lost, clean, loss)
        except LearnersLost:
            raise
        except LearnerFailure as error:
            raise LearnerFailure(f"{loss}; replacing it failed: {error}") from None
        self.budget.record()
        self.restarts += 1
        return time.monotonic() - start

    def _restart_all(self, loss: str) -> None:
        """Every rank lost: new ranks in every bundle take the last checkpoint's state, the
        counts kept (:mod:`learner.training.rewind`); ``last_rewound``: the updates undone.
        :class:`LearnerFailure` (the last good checkpoint kept, as before) where restarts
        are spent, no checkpoint has been saved yet, or the new ranks cannot be placed."""
        why = self._cannot_replace()
        if why is not None:
            raise LearnerFailure(f"{loss}; {why}")
        try:
            saved = self.saved_state()
        except Exception as error:  # a corrupt or unreadable latest.pt
            raise LearnerFailure(f"{loss}; the last checkpoint cannot be read: {error}") from None
        if saved is None:
            raise LearnerFailure(f"{loss}, and no checkpoint has been saved yet to restart from")
        state = ray.put(rewound_state(saved, self.num_updates, self.num_meta_updates))
        start = time.monotonic()
        why = self._start_placed(list(range(self.size)))
        if why is not None:
            raise LearnerFailure(f"{loss}; {why}")
        placed = time.monotonic()
        self._meet(None, state)
        self._published = None
        self.last_rewound = self.num_updates - int(saved["num_updates"])
        log.info(
            "every learner restarted from the last checkpoint (update %d; %d update(s) "
            "undone): new processes ready in %.1f s, the group met and restored in %.1f s",
            int(saved["num_updates"]),
            self.last_rewound,
            placed - start,
            time.monotonic() - placed,
        )

    def _stop_with(self, clean: ray.ObjectRef, why: str) -> None:
        """:class:`LearnersLost`, with the survivor's ``clean`` state kept as the group's
        last (the final checkpoint's)."""
        self._final_state = self._get(clean, "a surviving learner's state")["updater"]
        raise LearnersLost(f"{why}: stopped with a surviving learner's state")

    def _cannot_replace(self) -> str | None:
        """Why a lost rank cannot be replaced now, or ``None``: restarts spent, or a strict
        spread over fewer live nodes than ranks."""
        if self.budget.spent():
            return (
                f"learner restarts spent (run.max_learner_restarts = {self.budget.max_restarts} "
                f"within run.restart_window_s = {self.budget.window_s:g} s)"
            )
        return self._cannot_place()

    def _cannot_place(self) -> str | None:
        """Why a new rank cannot be placed (a strict spread over too few live nodes)."""
        if self.strategy != "STRICT_SPREAD":
            return None
        nodes = sum(1 for node in ray.nodes() if node["Alive"])
        if nodes < self.size:
            return f"{self.size} learners cannot be spread over {nodes} live node(s)"
        return None

    def _reform(
        self, survivors: list[int], lost: list[int], clean: ray.ObjectRef, loss: str
    ) -> None:
        """New ranks start in the lost ones' bundles (placed within the deadline, else
        :class:`LearnersLost`) while the survivors leave their group; all meet again and
        take ``clean``."""
        start = time.monotonic()
        left = [self.ranks[i].leave.remote() for i in survivors]
        address = self.ranks[0].rendezvous_address.remote() if 0 in survivors else None
        why = self._start_placed(lost)
        if why is not None:
            self._stop_with(clean, f"{loss}; {why}")
        placed = time.monotonic()
        self._get(left, "survivors leaving")
        self._meet(address, clean)
        self._published = None
        log.info(
            "learner rank(s) %s replaced: new process(es) ready in %.1f s, the group met "
            "and restored in %.1f s",
            ", ".join(map(str, lost)),
            placed - start,
            time.monotonic() - placed,
        )

    def _start_placed(self, lost: list[int]) -> str | None:
        """Start a new rank in each ``lost`` one's bundle and wait for them to be placed and
        started; why they cannot be, or ``None``. A new rank whose bundle was still on a
        lost node dies at once: it is started again until Ray has moved the bundle (to a
        node with room) or the deadline passes. Looks every second whether the placement
        has become impossible (a node lost under a strict spread)."""
        deadline = time.monotonic() + self.timeout_s
        pids = {i: self._start(i) for i in lost}
        while True:
            ready, _ = ray.wait(list(pids.values()), num_returns=len(pids), timeout=1.0)
            done = [i for i, pid in pids.items() if pid in ready]
            died = [i for i in done if outcome_of(pids[i]) is not Outcome.OK]
            if len(ready) == len(pids) and not died:
                return None
            for i in died:  # died at its start: its bundle's node was lost, the bundle moves
                pids[i] = self._start(i)
            why = self._cannot_place()
            if why is not None:
                return why
            if time.monotonic() > deadline:
                return (
                    f"a new learner was not placed and started within "
                    f"run.progress_timeout_s = {self.timeout_s:g} s"
                )

    def _start(self, rank: int) -> ray.ObjectRef:
        """A new rank ``rank`` started; its ``pid`` call (answered once it runs)."""
        self.ranks[rank] = self._start_rank(rank)
        return self.ranks[rank].pid.remote()
