"""The rollout actors as a pool whose in-flight calls are the trajectory queue.

**Queue.** There is no queue actor. The pool keeps up to ``depth`` calls
``actor.unroll_parts.remote(version, weights)`` in flight per actor, with
``depth = max(1, run.queue_size // run.num_actors)``; their result ObjectRefs
*are* the trajectory queue. The learner ``ray.wait``\\ s on them, takes the oldest
ready ones (FIFO), updates, and only then submits new calls for the actors it
took from. So at most ``depth * num_actors`` (<= ``run.queue_size`` when it is
>= ``num_actors``) unrolls exist outside the learner, an actor whose calls are
all done waits for the learner (backpressure), and nothing is dropped: every
result is either consumed or, for calls lost with a dead actor process,
counted in ``perf/lost_unrolls``. ``perf/queue_size`` is the number of
finished unrolls waiting for the learner at each update (mean per log interval).

**Data.** Each call returns a small summary and the trajectory; the pool reads only
the summaries and hands out :class:`~learner.cluster.payloads.Unroll`\\ s for whoever
trains on them to fetch. **Weights.** The learner publishes ``(version, params)`` every
``run.broadcast_every`` updates, packed into one float32 vector (by the pool, or ready
by learners of their own: :mod:`learner.cluster.payloads`), *offered* to every actor
(``offer_weights``, fire and forget). The offer runs in the actor's own ``weights``
concurrency group, beside the unroll in progress, and the actor takes the newest offer
when its next unroll starts:
mu lags the learner by about one unroll plus the finished unrolls waiting in
the queue, not by the whole queue. Small vectors go by value (Catch's agent:
inlined into the task spec, no object-store round trip), larger ones are put in
the object store once per publication (:mod:`learner.cluster.payloads`). A new
or restarted actor process gets the weights with its next unroll call.
Actors never wait for the learner and never poll. (The figures behind these choices:
docs/results-distributed.md, "Measurements behind the code".)

**Faults.** Actors have ``max_restarts`` (Ray restarts a dead process; the
calls that were in flight fail with ``ActorUnavailableError``, which is logged,
counted in ``perf/actor_failures``, and the slot gets new calls). When Ray gives
up on an actor (``ActorDiedError``: no restart left, or its node is gone for
good) it is replaced by a new one at once; one whose constructor raised stops
the run (exit 1: a new one would fail the same way). An exception raised
*inside* an actor (a bug in an env) stops the run. :meth:`ActorPool.describe_waits`
says what the learner waits on, for the driver's no-progress deadline. Unrolls are
accounted for: each one asked of an actor is consumed, lost with a dead actor
(``perf/lost_unrolls``) or abandoned at the end of the session.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import ray
import torch
from ray.exceptions import ActorDiedError, RayActorError

from actors.rollout import (
    DEFAULT_MAX_RESTARTS,
    WEIGHTS_GROUP,
    NoWeightsError,
    RolloutSpec,
    actor_seed,
    make_ray_actor_class,
)
from impala_frodo.acting.trajectory import UnrollSummary
from impala_frodo.config.sections import RunConfig
from impala_frodo.networks.weights import ParamLayout
from impala_frodo.utils import first_line
from learner.cluster.payloads import PackedWeights, Unroll, as_packed
from learner.cluster.slots import Slot

log = logging.getLogger("impala_frodo")

#: Seconds between calls to an actor that Ray is restarting.
RESTART_BACKOFF_S = 0.2


class TrainingError(RuntimeError):
    """The run cannot go on (actors keep failing, an actor raised); the message says why."""


def remote_error(error: BaseException) -> str:
    """``ValueError: bad kwarg`` for an exception raised in an actor (not Ray's wrapper)."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException) and not isinstance(cause, ray.exceptions.RayError):
        return f"{type(cause).__name__}: {first_line(cause)}"
    # A creation task's error reaches the caller as text only: its last line names it.
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


class ActorPool:
    """N rollout actors with up to ``depth`` unroll calls each in flight: the trajectory queue.

    ``run``: the actors' number, CPU share and base seed, the queue's size, and the learners'
    number: one learner is in the driver, and the pool waits on the trajectories themselves,
    so Ray pulls each to the driver's node as it finishes, while an update runs (learners of
    their own: on the summaries, the trajectories left where they are); ``rollout``: what
    every actor acts in and with; ``layout``: the agent's packed weights, as actors read them.
    """

    def __init__(
        self,
        run: RunConfig,
        rollout: RolloutSpec,
        layout: ParamLayout,
        *,
        resume_count: int = 0,
        max_restarts: int = DEFAULT_MAX_RESTARTS,
        max_failures: int | None = None,
    ) -> None:
        self.rollout = rollout
        self.layout = layout
        self.seed = run.seed
        #: How many times the run was resumed before this session: part of the actors' seeds.
        self.resume_count = resume_count
        self.max_restarts = max_restarts
        self.max_failures = max_failures if max_failures is not None else 10 + 5 * run.num_actors
        self.depth = max(1, run.queue_size // run.num_actors)
        self.driver_learns = run.num_learners == 1
        self._actor_cls = make_ray_actor_class(run.actor_num_cpus, max_restarts)
        self.slots = [Slot(self._spawn(i, 0), i) for i in range(run.num_actors)]
        self._order: list[ray.ObjectRef] = []  # in-flight calls, oldest first
        #: waited-on ref -> (slot, incarnation, handle, summary ref, trajectory ref): the
        #: handle is the slot's replacement count.
        self._origin: dict[ray.ObjectRef, tuple[int, int, int, Any, Any]] = {}
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

    def running(self, index: int) -> list[ray.ObjectRef]:
        """Slot ``index``'s unroll calls not finished yet (still running or queued)."""
        mine = [ref for ref in self._order if self._origin[ref][0] == index]
        if not mine:
            return []
        ready, _ = ray.wait(mine, num_returns=len(mine), timeout=0, fetch_local=False)
        return [ref for ref in mine if ref not in ready]

    def _spawn(self, actor_id: int, replacement: int) -> Any:
        seed = actor_seed(self.seed, actor_id, self.resume_count, replacement)
        return self._actor_cls.remote(self.rollout, self.layout, seed=seed, actor_id=actor_id)

    # -------------------------------------------------------------- weights
    def publish(self, version: int, params: dict[str, torch.Tensor] | PackedWeights) -> None:
        """Offer ``params`` to every actor now; new and restarted ones get them with a call.

        ``params``: by name, or packed already (:func:`~learner.cluster.payloads.as_packed`).
        The offers run in the actors' weights concurrency group, beside the unroll in
        progress, so each actor's next unroll acts with them: fire and forget.
        """
        self._payload, self._version = as_packed(params, self.layout), version
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
                call = slot.handle.unroll_parts.options(num_returns=2)
                if slot.needs_weights or not slot.healthy:
                    ref, data = call.remote(self._version, self._payload)
                    slot.needs_weights = False
                else:
                    ref, data = call.remote()
                waited = data if self.driver_learns else ref
                self._order.append(waited)
                self._origin[waited] = (index, slot.incarnation, slot.replacements, ref, data)
                slot.inflight += 1
                self.submitted += 1

    def take(self, n: int, timeout: float) -> tuple[list[Unroll], int]:
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
        unrolls = []
        for ref in ready[:n]:
            unroll = self._collect(ref)
            if unroll is not None:
                unrolls.append(unroll)
        return unrolls, queued

    def _collect(self, ref: ray.ObjectRef) -> Unroll | None:
        """The finished call's :class:`Unroll` (its summary read, its trajectory left where
        it is), or ``None`` if its actor died."""
        self._order.remove(ref)
        index, incarnation, handle, summary_ref, data = self._origin.pop(ref)
        slot = self.slots[index]
        slot.inflight -= 1
        try:
            summary: UnrollSummary = ray.get(summary_ref)
        except RayActorError as e:
            self.lost_unrolls += 1
            self._on_actor_error(index, incarnation, handle, e)
            return None
        except ray.exceptions.RayTaskError as e:
            self.lost_unrolls += 1
            if isinstance(e.cause, NoWeightsError) and handle == slot.replacements:
                self._restarted_without_weights(slot, incarnation)
                return None
            raise TrainingError(f"actor {slot.actor_id} raised {remote_error(e)}") from e
        self.collected += 1
        if handle == slot.replacements:
            self._note_process(slot, summary.actor_pid)
        if incarnation == slot.incarnation:
            slot.healthy = True
        slot.returned_at = time.monotonic()
        slot.collected_since_offer += 1
        return Unroll(summary, data)

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

    def _restarted_without_weights(self, slot: Slot, incarnation: int) -> None:
        """A call found a process with no weights: Ray restarted the actor while it had no
        call in flight, and no call failed. One death (the process's other calls made before
        now say the same), and the next call carries the weights."""
        if incarnation < slot.incarnation:
            return  # made before the death was counted: the same death
        slot.incarnation += 1
        slot.needs_weights = True
        slot.deaths_on_handle += 1
        self._count_failure(slot, "restarted unseen (a new process with no weights)")
        log.warning(
            "actor %d was restarted by Ray with no call in flight: counted as a death (%d/%d)",
            slot.actor_id,
            slot.deaths_on_handle,
            self.max_restarts,
        )

    def _note_process(self, slot: Slot, pid: int) -> None:
        """Count a restart that no failed call showed, once.

        An actor that dies with no call in flight (its results all back) and that Ray has
        restarted before its next call fails no call: only the new process id that its
        next unroll carries shows the death. A death already counted from a failed call
        (the incarnation moved since the newest process appeared) is not counted again.
        """
        if pid in slot.pids:
            return
        if slot.pids and slot.pid_incarnation == slot.incarnation:
            slot.deaths_on_handle += 1
            self._count_failure(slot, f"restarted unseen (a new process, pid {pid})")
            log.warning(
                "actor %d was restarted by Ray with no call in flight (new pid %d): "
                "counted as a death (%d/%d)",
                slot.actor_id,
                pid,
                slot.deaths_on_handle,
                self.max_restarts,
            )
        slot.pids.add(pid)
        slot.pid_incarnation = slot.incarnation

    def _count_failure(self, slot: Slot, what: RayActorError | str) -> None:
        self.failures += 1
        if self.failures > self.max_failures:
            reason = what if isinstance(what, str) else first_line(what)
            raise TrainingError(
                f"rollout actors failed {self.failures} times (limit {self.max_failures}); "
                f"last: actor {slot.actor_id}: {reason}"
            )

    def unroll_counts(self) -> dict[str, int]:
        """This session's unroll calls: submitted = collected + lost + abandoned."""
        return {
            "submitted": self.submitted,
            "collected": self.collected,
            "lost": self.lost_unrolls,
            "abandoned": self.abandoned,
        }

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
        slot.pids, slot.pid_incarnation = set(), slot.incarnation

    def shutdown(self) -> None:
        """Kill the actors; unfinished calls are abandoned (never counted as trained on)."""
        for slot in self.slots:
            with contextlib.suppress(Exception):  # already dead
                ray.kill(slot.handle, no_restart=True)
        self.abandoned += len(self._order)
        self._order.clear()
        self._origin.clear()
