"""SIGINT/SIGTERM during a run: the first request stops it gracefully, a second aborts.

**What counts as a request.** Tools stop a process by signalling its process group, and
some signal the process first: coreutils ``timeout -s INT`` sends the signal to its child
and then to the child's process group, so the driver gets the same signal twice,
microseconds apart. Python offers no portable way to learn a signal's sender (only
``signal.sigwaitinfo``, which needs the signals blocked in every thread, and a blocked mask
is inherited by every process the driver starts: Ray's GCS and raylet stop on SIGTERM).
So the rule is by time and kind: **the same signal again within** :data:`COALESCE_S` **of
the first of its burst is the same request**. A different signal, or the same one later,
is a new request. A person's second Ctrl-C comes a few hundred milliseconds later at the
soonest, and aborts.

**Who counts.** Python runs a handler only in the main thread, between two bytecodes,
and merges signals that arrive before it runs; a main thread blocked in native code (a Ray
call) runs none. So a thread counts the signals instead, from ``signal.set_wakeup_fd``'s
pipe: CPython's C-level handler writes each signal's number there at once, whatever the
main thread does, and the thread wakes within microseconds on a quiet machine. Bytes that
arrive together are read together. The Python-level handler only sets the stop flag (in
case the pipe was taken over); it never aborts.

The first request sets :attr:`StopSignal.signum`, which the training loop checks (a
graceful stop after the current update, with a final checkpoint) and which Ray's start-up
and connection check every 0.1 s (:mod:`learner.cluster.session`). A second request writes
one line and ends the process with ``os._exit(130)`` at once: the run's files stay as the
last checkpoint left them, the kernel drops ``run.lock``, and a local Ray instance's
processes are ended by its reaper (:mod:`learner.cluster.reaper`) and by Ray's own
fate-sharing. Nothing here logs, raises or takes a lock: lines go out with ``os.write``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from learner.control.exit_codes import ExitCode

#: The prefix of the lines written here (the CLI's name, as its log lines have).
_PREFIX = "[impala-frodo]"
#: The signals that ask a run to stop.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: The same signal again within this many seconds of the first of its burst is the same
#: request (a process-group broadcast; docs/faults.md has the figures). Well below the
#: gap between two presses of Ctrl-C by a person, well above the microseconds between
#: ``timeout``'s two sends, with room for a loaded machine's scheduling delays.
COALESCE_S = 0.1


def write_stderr(text: str) -> None:
    """Best-effort ``os.write`` of ``text`` to fd 2: no lock, no buffer, never raises."""
    with contextlib.suppress(OSError):
        os.write(2, text.encode("utf-8", "replace"))


class StopRequests:
    """Stop signals grouped into requests (the rule in the module docstring); a plain
    class, fed by the watcher thread, that tests drive with their own clock."""

    def __init__(self) -> None:
        self.count = 0
        self._burst: tuple[int, float] | None = None  # (signal, when its first one came)

    def add(self, signum: int, now: float) -> bool:
        """Count ``signum`` seen at ``now``; True if it is a new request."""
        if self._burst is not None:
            first_signum, first_at = self._burst
            if signum == first_signum and now - first_at <= COALESCE_S:
                return False
        self._burst = (signum, now)
        self.count += 1
        return True


class StopSignal:
    """SIGINT/SIGTERM -> a flag the loop checks (graceful stop); a second request aborts.

    The first request only sets :attr:`signum`: the loop stops after its current update
    with a final checkpoint. A second one ends the process at once with exit code 130
    (``os._exit``: no final checkpoint, no clean-up that could hang).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._watcher: _WakeupWatcher | None = None

    def install(self) -> None:
        """Handle SIGINT/SIGTERM here; again after ``ray.init``, which puts in its own."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in STOP_SIGNALS:
            previous = signal.signal(sig, self._handle)
            self._previous.setdefault(sig, previous)  # restore() puts back the first one
        if self._watcher is None:
            self._watcher = _WakeupWatcher(self._request)
        self._watcher.install()

    def restore(self) -> None:
        """Put back the handlers there were before the first :meth:`install`."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None

    def _handle(self, signum: int, frame: Any) -> None:
        """The Python-level handler: the watcher counts; this only makes sure of the flag."""
        if self.signum is None:
            self.signum = signum

    def _request(self, signum: int, first: bool) -> None:
        """A new request from the watcher: the first stops the run, a second aborts."""
        if not first:
            abort(signum)
        if self.signum is None:
            self.signum = signum
        name = signal.Signals(signum).name
        write_stderr(f"{_PREFIX} {name}: stopping (again to abort)\n")

    @property
    def requested(self) -> bool:
        """A first signal came: the run should stop."""
        return self.signum is not None


def abort(signum: int) -> None:
    """A second request: one line on stderr, then ``os._exit(130)`` at once."""
    name = signal.Signals(signum).name
    write_stderr(f"{_PREFIX} second {name}: aborted, without a final checkpoint\n")
    os._exit(ExitCode.INTERRUPTED)


class _WakeupWatcher:
    """Reads the signals from ``signal.set_wakeup_fd``'s pipe in a thread and groups them
    into requests (:class:`StopRequests`); calls ``on_request(signum, first)`` for each."""

    def __init__(
        self,
        on_request: Callable[[int, bool], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._old_fd: int | None = None
        self._on_request = on_request
        self._clock = clock
        self.requests = StopRequests()
        threading.Thread(target=self._watch, name="stop-signal", daemon=True).start()

    def install(self) -> None:
        old = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        if self._old_fd is None:
            self._old_fd = old

    def close(self) -> None:
        signal.set_wakeup_fd(-1 if self._old_fd is None else self._old_fd)
        os.close(self._write)  # the thread reads EOF and ends

    def _watch(self) -> None:
        with os.fdopen(self._read, "rb", buffering=0) as pipe:
            while data := pipe.read(64):
                now = self._clock()  # one time for the bytes read together
                for number in data:
                    if number in STOP_SIGNALS and self.requests.add(number, now):
                        self._on_request(number, self.requests.count == 1)


@contextmanager
def stop_signal(handle_signals: bool) -> Iterator[StopSignal]:
    """A :class:`StopSignal`, handling SIGINT/SIGTERM from now (before Ray connects: a stop
    while it connects is seen too) if ``handle_signals``; the old handlers back after."""
    stop = StopSignal()
    if handle_signals:
        stop.install()
    try:
        yield stop
    finally:
        stop.restore()
