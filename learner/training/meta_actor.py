"""The async meta-learner as a Ray actor, and the learner's link to it.

:class:`RayMetaLink` is the :class:`~impala_frodo.rule.meta_learner.MetaLink` of the
distributed trainer: the learner's window schedule
(:class:`~impala_frodo.rule.schedules.WindowSchedule`) sends each completed window (as CPU
tensors) and polls, never blocking, for the new eta. The process behind it is a
:class:`MetaProcess` (a Ray actor, :class:`RayMetaProcess`; the tests' fakes without Ray).

**Staleness policy: one call in flight, a queue of one, newest first.** While the
meta-learner works on a window, the newest window waits; a newer one replaces it and
the one replaced counts as skipped (``meta/skipped_windows``). The newest window starts
closest to the learner's current theta, so its meta-gradient is the least stale; the
meta-learner never builds a backlog (whose meta-gradients would be older still), and
memory is one window in flight plus one waiting.

**Faults.** A meta-learner that has answered once and is then *lost* (its process died,
or a call took longer than ``run.progress_timeout_s``) is replaced: :meth:`RayMetaLink.poll`
raises :class:`~impala_frodo.rule.meta_learner.MetaLearnerLost`, and the schedule hands
:meth:`RayMetaLink.restart` the learner's own eta and Adam state; the window in flight
and the one waiting are dropped (``meta/dropped_windows``), and the learner trains on
with its eta until the new process's first eta comes. At most ``meta.max_restarts``
within ``run.restart_window_s`` (:class:`RestartBudget`); one loss more stops the run
(exit code 1) with a final checkpoint that holds the last eta installed and its Adam
state, as does a meta step that *raises* (a replacement would raise the same way) and a
meta-learner, first or replacement, that has not started within
``run.progress_timeout_s`` (not placed: a replacement would wait the same way).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import ray
import torch
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from impala_frodo.config.schema import Config
from impala_frodo.rule.meta_learner import (
    EtaUpdate,
    MetaLearner,
    MetaLearnerError,
    MetaLearnerLost,
    MetaWindow,
)
from impala_frodo.rule.metagrad import NonFiniteLossError
from impala_frodo.utils import first_line
from learner.cluster.session import WAIT_SLICE_S
from learner.training.restarts import RestartBudget

log = logging.getLogger("impala_frodo")

#: Seconds :meth:`RayMetaLink.close` waits for a meta step in flight.
CLOSE_WAIT_S = 5.0


@dataclass(frozen=True)
class MetaLearnerSpec:
    """What a meta-learner process is built from: the run's learning rule (its config),
    the env's observation shape and action count, and torch's threads there."""

    cfg: Config
    obs_shape: tuple[int, ...]
    num_actions: int
    threads: int = 1

    @classmethod
    def of(cls, cfg: Config, obs_shape: Sequence[int], num_actions: int) -> MetaLearnerSpec:
        """The spec of ``cfg``'s meta-learner: torch on its whole CPUs, at least one."""
        threads = max(1, int(cfg.meta.learner_num_cpus))
        return cls(cfg, tuple(obs_shape), int(num_actions), threads)


class MetaLearnerProcess:
    """A :class:`MetaLearner` in its own process, with torch on ``spec.threads`` threads."""

    def __init__(self, spec: MetaLearnerSpec) -> None:
        torch.set_num_threads(spec.threads)
        self.meta_learner = MetaLearner.build(spec.cfg, spec.obs_shape, spec.num_actions)

    def pid(self) -> int:
        """This process's id, answered once it is up (the start-up probe)."""
        return os.getpid()

    def step(self, window: MetaWindow) -> EtaUpdate:
        return self.meta_learner.step(window)

    def load_state_dict(self, state: dict[str, Any]) -> int:
        """Start from ``state``; the pid, as the start-up probe answers."""
        self.meta_learner.load_state_dict(state)
        return os.getpid()

    def state_dict(self) -> dict[str, Any]:
        """eta, Adam's state and the version here (what a test compares with the learner's)."""
        return self.meta_learner.state_dict()


class MetaCall(Protocol):
    """A call in flight to a meta-learner process."""

    def wait(self, timeout: float) -> bool:
        """Whether it has finished (waiting at most ``timeout`` seconds; 0: a look)."""
        ...

    def result(self, timeout: float) -> Any:
        """Its return value; :class:`MetaLearnerLost` if the process is lost,
        :class:`MetaLearnerError` or ``NonFiniteLossError`` if the call raised."""
        ...


class MetaProcess(Protocol):
    """A meta-learner process: calls to its :class:`MetaLearnerProcess`, and a kill."""

    def call(self, method: str, *args: Any) -> MetaCall: ...

    def kill(self) -> None: ...


class RayMetaProcess:
    """A :class:`MetaLearnerProcess` as a Ray actor (never restarted by Ray: the link
    replaces it, from the learner's eta)."""

    def __init__(self, spec: MetaLearnerSpec, num_cpus: float) -> None:
        remote = ray.remote(num_cpus=num_cpus, max_restarts=0)(MetaLearnerProcess)
        self.actor = remote.remote(spec)

    def call(self, method: str, *args: Any) -> MetaCall:
        return _RayCall(getattr(self.actor, method).remote(*args))

    def kill(self) -> None:
        with contextlib.suppress(Exception):  # already gone, or Ray shut down first
            ray.kill(self.actor)


class _RayCall:
    """An actor call's reference; Ray's errors as the meta-learner's."""

    def __init__(self, ref: ray.ObjectRef) -> None:
        self.ref = ref

    def wait(self, timeout: float) -> bool:
        ready, _ = ray.wait([self.ref], timeout=timeout)
        return bool(ready)

    def result(self, timeout: float) -> Any:
        try:
            return ray.get(self.ref, timeout=timeout)
        except RayTaskError as e:
            cause = e.cause if isinstance(e.cause, BaseException) else None
            if isinstance(cause, NonFiniteLossError):
                raise NonFiniteLossError(str(cause)) from None
            raise MetaLearnerError(f"the meta-learner failed: {first_line(e)}") from None
        except RayActorError as e:
            raise MetaLearnerLost(f"the meta-learner process died ({first_line(e)})") from None
        except GetTimeoutError:
            raise MetaLearnerLost(
                f"the meta-learner did not answer within {timeout:g} s "
                "(run.progress_timeout_s): stuck"
            ) from None


class RayMetaLink:
    """One meta-learner process, fed newest-first and replaced when lost (see the module
    docstring).

    The process starts at once (``start``: a :class:`RayMetaProcess` of ``spec`` with
    ``num_cpus`` CPUs by default); :meth:`wait_started` waits for it, and the learner's
    schedule loads its eta with :meth:`load_state_dict`. Every wait is bounded by
    ``timeout_s`` (``run.progress_timeout_s``); ``max_restarts`` within
    ``restart_window_s``: :class:`RestartBudget`.
    """

    def __init__(
        self,
        spec: MetaLearnerSpec,
        *,
        num_cpus: float,
        timeout_s: float,
        max_restarts: int = 0,
        restart_window_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        start: Callable[[], MetaProcess] | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.skipped = self.dropped = self.restarts = 0
        self._clock = clock
        self._start = start or (lambda: RayMetaProcess(spec, num_cpus))
        self._budget = RestartBudget(max_restarts, restart_window_s, clock)
        self.process = self._start()
        self.pid: int | None = None  # the process's, once it has answered
        self._waiting: MetaWindow | None = None
        #: The call in flight; while ``_loading``, one that brings no eta back (the
        #: start-up probe, or a state being loaded).
        self._in_flight: MetaCall | None = self.process.call("pid")
        self._loading, self._since = True, self._clock()
        self._lost_at: float | None = None  # when a loss was seen, until a new one answers
        self._restart_s: float | None = None  # the last restart's, until reported

    @property
    def actor(self) -> Any:
        """The Ray actor of the current process (tests kill it)."""
        return getattr(self.process, "actor", None)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Start the meta-learner from ``state``, without waiting: the call is the one in
        flight (a window sent meanwhile waits), and ``poll`` sees it through."""
        self._waiting = None
        self._load(state)

    def wait_started(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Wait until the meta-learner is up (and has loaded any state sent), at most
        ``run.progress_timeout_s`` (:class:`MetaLearnerError` after), or until
        ``should_stop()``. A loss here is not replaced: the run has not started."""
        while self._loading and not should_stop():
            assert self._in_flight is not None
            if self._in_flight.wait(WAIT_SLICE_S) or self._clock() - self._since > self.timeout_s:
                self.poll()  # past the deadline, raises: not started

    def send(self, window: MetaWindow) -> None:
        """Start a meta step on ``window``, or let it wait (replacing one waiting)."""
        window = window.to("cpu")
        if self._in_flight is None:
            self._submit(window)
            return
        if self._waiting is not None:
            self.skipped += 1
        self._waiting = window

    def poll(self) -> EtaUpdate | None:
        """The new eta if the meta step in flight is done (the waiting window starts then);
        :class:`MetaLearnerLost` if the process was lost."""
        call = self._in_flight
        if call is None:
            return None
        if not call.wait(0):
            self._check_deadline()
            return None
        result = call.result(self.timeout_s)
        update = None if self._loading else result
        if self._loading:
            self._answered(result)
        self._in_flight, self._loading = None, False
        if self._waiting is not None:
            window, self._waiting = self._waiting, None
            self._submit(window)
        return update

    def restart(self, state: dict[str, Any], lost: MetaLearnerLost) -> None:
        """Replace the lost process with a new one started from ``state`` (the learner's
        eta and Adam state now), the windows it held dropped; :class:`MetaLearnerError`
        instead once ``meta.max_restarts`` within ``run.restart_window_s`` are spent."""
        budget = self._budget
        if not budget.take():
            raise MetaLearnerError(
                f"{lost}; lost more than meta.max_restarts = {budget.max_restarts} times "
                f"within run.restart_window_s = {budget.window_s:g} s: the run stops with "
                "eta as last received, kept in the final checkpoint"
            ) from None
        dropped = int(self._in_flight is not None and not self._loading)
        dropped += int(self._waiting is not None)
        self.dropped += dropped
        self.restarts += 1
        if self._lost_at is None:  # a replacement lost before it answered: the first loss
            self._lost_at = self._clock()
        log.warning(
            "%s: a new meta-learner starts from eta version %s (restart %d; %d window(s) dropped)",
            lost,
            state.get("version"),
            self.restarts,
            dropped,
        )
        self.process.kill()
        self.process, self.pid, self._waiting = self._start(), None, None
        self._load(state)

    def restart_stats(self) -> dict[str, float]:
        """``perf/meta_restarts`` (this session's), and ``perf/meta_restart_s`` (from a
        loss seen to the new process's first answer) once after each restart."""
        stats = {"perf/meta_restarts": float(self.restarts)}
        if self._restart_s is not None:
            stats["perf/meta_restart_s"], self._restart_s = self._restart_s, None
        return stats

    def close(self) -> None:
        """Stop the process (nothing else holds it), after the call in flight, if any, has
        finished or ``CLOSE_WAIT_S`` have passed (killing it mid-call makes Ray log a
        worker death)."""
        if self._in_flight is not None:
            with contextlib.suppress(Exception):
                self._in_flight.wait(CLOSE_WAIT_S)
        self._in_flight = self._waiting = None
        self.process.kill()

    def _load(self, state: dict[str, Any]) -> None:
        cpu_state = {
            "meta_net": {k: v.detach().cpu() for k, v in state["meta_net"].items()},
            "meta_optimizer": state["meta_optimizer"],
            "version": state["version"],
        }
        self._in_flight = self.process.call("load_state_dict", cpu_state)
        self._loading, self._since = True, self._clock()

    def _answered(self, pid: int) -> None:
        """The process answered its start-up probe or a load: it is up."""
        self.pid = pid
        if self._lost_at is not None:
            self._restart_s, self._lost_at = self._clock() - self._lost_at, None
            log.info(
                "the new meta-learner (pid %d) answered %.1f s after the loss", pid, self._restart_s
            )

    def _check_deadline(self) -> None:
        """Past ``run.progress_timeout_s`` on one call: a process that never answered was
        not placed or is stuck starting (:class:`MetaLearnerError`: a new one would wait
        the same); one that had answered is lost (:class:`MetaLearnerLost`)."""
        idle = self._clock() - self._since
        if idle <= self.timeout_s:
            return
        limit = f"(run.progress_timeout_s = {self.timeout_s:g})"
        if self.pid is None:
            raise MetaLearnerError(
                f"the meta-learner has not started in {idle:.0f} s {limit}: not placed, or stuck"
            )
        what = "loaded eta" if self._loading else "finished a meta step"
        raise MetaLearnerLost(f"the meta-learner has not {what} in {idle:.0f} s {limit}: stuck")

    def _submit(self, window: MetaWindow) -> None:
        self._in_flight = self.process.call("step", window)
        self._loading, self._since = False, self._clock()
