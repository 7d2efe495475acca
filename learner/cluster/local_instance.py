"""A private local Ray instance: its start, which a stop request interrupts at once; its
health; and its stop, which a process-group signal must not stall.

**The start.** ``ray.init`` of a local instance takes seconds (docs/faults.md) and sees
no signal meanwhile. So :func:`start_local` runs it in a helper
thread while the calling thread waits in slices of :data:`SLICE_S`, asking
``should_stop()`` each time. On a stop request it SIGKILLs every process the start has
made so far and raises ``KeyboardInterrupt``: the command ends within a few tenths of a
second, with nothing of the instance left running.

The helper thread lives as long as the instance. Ray starts the head processes with
``PR_SET_PDEATHSIG``, and the kernel ties that to the *thread* that started them, not to
the process: a helper thread that returned after ``ray.init`` would take the GCS and the
raylet with it (seen: the next call failed on a GCS that was gone). So the thread waits
after the start until :meth:`LocalStart.release`, called once the instance is shut down.

What a stop kills: the processes started since the start began, this process's new
descendants (the head processes, and the raylet's agents, which are not fate-shared).
The helper thread is left blocked in ``ray.init`` (it cannot be cancelled); :func:`stuck`
says so, and the command line then ends the process with ``os._exit``, which also ends any
process the thread starts after the kill (fate-shared with it).

**Health.** :func:`head_failure`: the raylet or the GCS has died (no actor can run any
more). :func:`hit`: any head process has exited before the shutdown. Ray's head processes
share the driver's process group, and block SIGINT (Ray starts them so) but not SIGTERM:
a SIGTERM to the group (``timeout N``, ``kill -TERM -- -PGID``) ends the monitor, the log
monitor and the API server at once and sets the GCS and the raylet shutting down, after
which they answer no more.

**The stop.** :func:`shutdown` (see there) does not wait on an instance that was hit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import ray

from learner.cluster.reaper import Reaper, descendants, kill_alive

log = logging.getLogger("impala_frodo")

#: How often the waiting thread asks whether to stop (seconds).
SLICE_S = 0.1

#: A start abandoned on a stop request, its thread still inside ``ray.init``.
_abandoned: threading.Thread | None = None


def stuck() -> bool:
    """A local start abandoned on a stop request is still blocked in ``ray.init``."""
    return _abandoned is not None and _abandoned.is_alive()


class LocalStart:
    """``ray.init(**init_kwargs)`` in a helper thread that stays until :meth:`release`."""

    def __init__(self, init_kwargs: dict[str, Any]) -> None:
        self._kwargs = init_kwargs
        self._started = threading.Event()
        self._released = threading.Event()
        self._failure: BaseException | None = None
        self._before = descendants([os.getpid()], {})
        self.thread = threading.Thread(target=self._run, name="ray-local-start", daemon=True)

    def _run(self) -> None:
        try:
            ray.init(**self._kwargs)
        except BaseException as e:  # handed to the waiting thread
            self._failure = e
            return
        finally:
            self._started.set()
        self._released.wait()  # the head processes die with this thread (PR_SET_PDEATHSIG)

    def wait(self, should_stop: Callable[[], bool] | None) -> None:
        """Start, and wait until the instance is up; ``KeyboardInterrupt`` on a stop request
        (after the start's processes are killed), Ray's exception if the start fails."""
        global _abandoned
        self.thread.start()
        while not self._started.wait(SLICE_S):
            if should_stop is not None and should_stop():
                self.kill_started()
                _abandoned = self.thread
                raise KeyboardInterrupt("stopped while starting the local Ray instance")
        if self._failure is not None:
            raise self._failure

    def kill_started(self) -> list[int]:
        """SIGKILL every process started since the start began; returns their pids."""
        new = descendants([os.getpid()], {})
        started = {pid: at for pid, at in new.items() if self._before.get(pid) != at}
        started.pop(os.getpid(), None)
        return kill_alive(started)

    def release(self) -> None:
        """The instance is shut down: let the helper thread end."""
        self._released.set()


def start_local(
    init_kwargs: dict[str, Any], should_stop: Callable[[], bool] | None = None
) -> LocalStart:
    """A local instance started by :class:`LocalStart`; release it after ``ray.shutdown``."""
    start = LocalStart(init_kwargs)
    start.wait(should_stop)
    return start


#: Process types of a local instance (``ray_constants.PROCESS_TYPE_*``).
_MONITOR = "monitor"
_RAYLET = "raylet"
_GCS = "gcs_server"


def head_processes() -> dict[str, list[Any]]:
    """Ray's ``ProcessInfo`` lists by type of the local instance this process started
    (empty if it started none, or where Ray's internals differ)."""
    node = getattr(ray._private.worker, "_global_node", None)
    if node is None or not ray.is_initialized() or not getattr(node, "head", False):
        return {}
    return getattr(node, "all_processes", None) or {}


def _exited(processes: dict[str, list[Any]], kinds: tuple[str, ...] | None = None) -> list[Any]:
    """The ``Popen`` objects among ``processes`` (of ``kinds``, or all) that have exited."""
    return [
        info.process
        for kind, infos in processes.items()
        if kinds is None or kind in kinds
        for info in infos
        if getattr(info, "process", None) is not None and info.process.poll() is not None
    ]


def head_failure(processes: dict[str, list[Any]]) -> str | None:
    """The death of the raylet or the GCS among ``processes``, said in words; None while
    they run."""
    for kind, name in ((_RAYLET, "raylet"), (_GCS, "GCS server")):
        for process in _exited(processes, (kind,)):
            code = process.returncode
            how = f"killed by {_signal_name(-code)}" if code < 0 else f"exit status {code}"
            return f"the local Ray node is lost: its {name} (pid {process.pid}) died ({how})"
    return None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def hit() -> bool:
    """A head process of the local instance started here has exited before its shutdown
    (a signal to the process group, a kill): the rest no longer answers for sure."""
    return bool(_exited(head_processes()))


def start_reaper() -> Reaper | None:
    """A :class:`~learner.cluster.reaper.Reaper` for the instance just started (None if Ray's
    internals differ, or where there is no ``/proc``)."""
    pids = [info.process.pid for infos in head_processes().values() for info in infos]
    if not pids or not os.path.isdir("/proc"):
        log.warning("no reaper for the local Ray instance: its processes may outlive a crash")
        return None
    return Reaper(pids)


def shutdown() -> None:
    """``ray.shutdown()`` of the instance started here, without its 1 s wait on the monitor,
    and without waiting on an instance that was :func:`hit`.

    ``ray.shutdown`` stops the node's processes one after another, each with SIGTERM and
    up to 1 s to exit. The autoscaler monitor, stopped after the GCS it reports to, takes
    all of that second, most of the whole shutdown (docs/results-distributed.md,
    "Measurements behind the code"). A local instance has
    nothing to autoscale and the monitor holds nothing of the run, so it gets SIGKILL
    first; the rest is stopped as before. The run's files are all written and closed by
    then (the learner and its run logger close inside the session). Where Ray's internals
    differ (another version), this is a plain ``ray.shutdown()``.

    An instance that was hit (a SIGTERM to the process group, as ``timeout`` sends it)
    would keep ``ray.shutdown`` waiting on its GCS for seconds (docs/faults.md). Every
    process of it
    gets SIGKILL instead (the reaper ends the raylet's children) and Ray is left as it is:
    the process is about to end.
    """
    processes = head_processes()
    was_hit = bool(_exited(processes))
    for kind, infos in processes.items():
        for info in infos if was_hit or kind == _MONITOR else ():
            with contextlib.suppress(OSError, AttributeError):
                info.process.kill()
    if not was_hit:
        ray.shutdown()
