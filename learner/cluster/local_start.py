"""The start of a private local Ray instance, which a stop request interrupts at once.

``ray.init`` of a local instance takes 2-9 s on the 2-core test machine (more under load)
and sees no signal meanwhile. So :func:`start_local` runs it in a helper thread while the
calling thread waits in slices of :data:`SLICE_S`, asking ``should_stop()`` each time.
On a stop request it SIGKILLs every process the start has made so far and raises
``KeyboardInterrupt``: the command ends within a few tenths of a second, with nothing of
the instance left running.

**The helper thread lives as long as the instance.** Ray starts the head processes with
``PR_SET_PDEATHSIG``, and the kernel ties that to the *thread* that started them, not to
the process: a helper thread that returned after ``ray.init`` would take the GCS and the
raylet with it (seen: the next call failed on a GCS that was gone). So the thread waits
after the start until :meth:`LocalStart.release`, called once the instance is shut down.

**What a stop kills.** The processes started since the start began: this process's new
descendants (the head processes, and the raylet's agents, which are not fate-shared).
The helper thread is left blocked in ``ray.init`` (it cannot be cancelled); :func:`stuck`
says so, and the command line then ends the process with ``os._exit``, which also ends any
process the thread starts after the kill (fate-shared with it).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import ray

from learner.cluster.reaper import descendants, kill_alive

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
