"""The async meta-learner as a Ray actor, and the learner's link to it.

:class:`RayMetaLink` is the :class:`~impala_frodo.rule.meta_learner.MetaLink` of the
distributed trainer: the learner's window schedule
(:class:`~impala_frodo.rule.schedules.WindowSchedule`) sends each completed window (as CPU
tensors) and polls, never blocking, for the new eta.

**Staleness policy: one call in flight, a queue of one, newest first.** While the
meta-learner works on a window, the newest window waits; a newer one replaces it and
the one replaced counts as skipped (``meta/skipped_windows``). The newest window starts
closest to the learner's current theta, so its meta-gradient is the least stale; the
meta-learner never builds a backlog (whose meta-gradients would be older still), and
memory is one window in flight plus one waiting.

**Faults.** The meta-learner is not restarted: if its process dies, a meta step raises,
or a step takes longer than ``run.progress_timeout_s``, :meth:`RayMetaLink.poll` raises
:class:`~impala_frodo.rule.meta_learner.MetaLearnerError` and the run stops (exit code 1)
with a final checkpoint that holds the last eta installed and its Adam state; resuming
starts a new meta-learner from there. Start-up waits at most
``run.progress_timeout_s`` (the driver waits for it while the actors start, as a
meta-learner process can take tens of seconds to start on a busy machine).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ray
import torch
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from impala_frodo.config.schema import Config
from impala_frodo.rule.meta_learner import EtaUpdate, MetaLearner, MetaLearnerError, MetaWindow
from impala_frodo.rule.metagrad import NonFiniteLossError
from impala_frodo.utils import first_line
from learner.cluster.session import WAIT_SLICE_S

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

    def version(self) -> int:
        """eta's version here (answered once the process is up: the start-up probe)."""
        return self.meta_learner.version

    def step(self, window: MetaWindow) -> EtaUpdate:
        return self.meta_learner.step(window)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.meta_learner.load_state_dict(state)


class RayMetaLink:
    """One meta-learner actor, fed newest-first (see the module docstring).

    The actor starts at once (``num_cpus`` its CPUs); :meth:`wait_started` waits for it,
    and the learner's schedule loads its eta with :meth:`load_state_dict`. Every wait is
    bounded by ``timeout_s`` (the run's ``run.progress_timeout_s``).
    """

    def __init__(
        self,
        spec: MetaLearnerSpec,
        *,
        num_cpus: float,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout_s = timeout_s
        self.skipped = 0
        self._clock = clock
        remote = ray.remote(num_cpus=num_cpus, max_restarts=0)(MetaLearnerProcess)
        self.actor = remote.remote(spec)
        self._waiting: MetaWindow | None = None
        #: The call in flight; while ``_loading``, one that brings no eta back (the
        #: start-up probe, or a state being loaded).
        self._in_flight: ray.ObjectRef | None = self.actor.version.remote()
        self._loading, self._since = True, self._clock()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Start the meta-learner from ``state``, without waiting: the call is the one in
        flight (a window sent meanwhile waits), and ``poll`` sees it through."""
        cpu_state = {
            "meta_net": {k: v.detach().cpu() for k, v in state["meta_net"].items()},
            "meta_optimizer": state["meta_optimizer"],
            "version": state["version"],
        }
        self._waiting = None
        self._in_flight = self.actor.load_state_dict.remote(cpu_state)
        self._loading, self._since = True, self._clock()

    def wait_started(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Wait until the meta-learner is up (and has loaded any state sent), at most
        ``run.progress_timeout_s`` (:class:`MetaLearnerError` after), or until
        ``should_stop()``."""
        while self._loading and not should_stop():
            ready, _ = ray.wait([self._in_flight], timeout=WAIT_SLICE_S)
            if ready:
                self.poll()
            elif self._clock() - self._since > self.timeout_s:
                self.poll()  # raises: not started within the timeout

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
        """The new eta if the meta step in flight is done (the waiting window starts then)."""
        if self._in_flight is None:
            return None
        ready, _ = ray.wait([self._in_flight], timeout=0)
        if not ready:
            idle = self._clock() - self._since
            if idle > self.timeout_s:
                what = "started" if self._loading else "finished a meta step"
                raise MetaLearnerError(
                    f"the meta-learner has not {what} in {idle:.0f} s "
                    f"(run.progress_timeout_s = {self.timeout_s:g}): not placed, or stuck"
                )
            return None
        result = self._get(self._in_flight, timeout=self.timeout_s)
        update = None if self._loading else result
        self._in_flight, self._loading = None, False
        if self._waiting is not None:
            window, self._waiting = self._waiting, None
            self._submit(window)
        return update

    def close(self) -> None:
        """Stop the actor (nothing else holds it), after the call in flight, if any, has
        finished or ``CLOSE_WAIT_S`` have passed (killing it mid-call makes Ray log a
        worker death)."""
        if self._in_flight is not None:
            with contextlib.suppress(Exception):
                ray.wait([self._in_flight], timeout=CLOSE_WAIT_S)
        self._in_flight = self._waiting = None
        with contextlib.suppress(Exception):  # already gone, or Ray shut down first
            ray.kill(self.actor)

    def _submit(self, window: MetaWindow) -> None:
        self._in_flight = self.actor.step.remote(window)
        self._loading, self._since = False, self._clock()

    def _get(self, ref: ray.ObjectRef, timeout: float) -> Any:
        """``ray.get`` with a deadline; the meta-learner's failures as :class:`MetaLearnerError`."""
        try:
            return ray.get(ref, timeout=timeout)
        except RayTaskError as e:
            cause = e.cause if isinstance(e.cause, BaseException) else None
            if isinstance(cause, NonFiniteLossError):
                raise NonFiniteLossError(str(cause)) from None
            raise MetaLearnerError(f"the meta-learner failed: {first_line(e)}") from None
        except RayActorError as e:
            raise MetaLearnerError(
                f"the meta-learner process died ({first_line(e)}); the run stops with eta "
                "as last received, kept in the final checkpoint"
            ) from None
        except GetTimeoutError:
            raise MetaLearnerError(
                f"the meta-learner did not answer within {timeout:g} s "
                "(run.progress_timeout_s): not placed, or stuck"
            ) from None
