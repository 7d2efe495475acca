"""SIGINT/SIGTERM during a run: the first asks for a graceful stop, a second aborts.

The handler does as little as it can: Python runs it in the main thread between two
bytecodes, wherever that thread is, inside a logging lock or a ``print`` included. So
it never logs, never raises and takes no lock: the first signal sets a flag and
writes one line with ``os.write``; a second writes one line and ends the process with
``os._exit(130)`` at once (the run's files stay as the last checkpoint left them; the
kernel drops ``run.lock``; a local Ray instance's processes are ended by its reaper,
:mod:`learner.cluster.reaper`, where one runs, and by Ray's own fate-sharing).

Python runs a handler only when the main thread comes back to Python code; one blocked
in a Ray call (native code) would keep a second signal waiting. So a thread also
counts the signals from ``signal.set_wakeup_fd``'s pipe and aborts at the second.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any

from learner.control.exit_codes import ExitCode

#: The prefix of the handler's lines (the CLI's name, as its log lines have).
_PREFIX = "[impala-frodo]"


def write_stderr(text: str) -> None:
    """Best-effort ``os.write`` of ``text`` to fd 2: no lock, no buffer, never raises."""
    with contextlib.suppress(OSError):
        os.write(2, text.encode("utf-8", "replace"))


class StopSignal:
    """SIGINT/SIGTERM -> a flag the loop checks (graceful stop); a second one aborts.

    The first signal only sets :attr:`signum`: the loop stops after its current update
    with a final checkpoint. A second one ends the process at once with exit code 130
    (``os._exit``: no final checkpoint, no clean-up that could hang).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._wakeup: _WakeupWatcher | None = None

    def install(self) -> None:
        """Handle SIGINT/SIGTERM here; again after ``ray.init``, which puts in its own."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = signal.signal(sig, self._handle)
            self._previous.setdefault(sig, previous)  # restore() puts back the first one
        if self._wakeup is None:
            self._wakeup = _WakeupWatcher()
        self._wakeup.install()

    def restore(self) -> None:
        """Put back the handlers there were before the first :meth:`install`."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        if self._wakeup is not None:
            self._wakeup.close()
            self._wakeup = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            abort(signum)
        self.signum = signum
        name = signal.Signals(signum).name
        write_stderr(
            f"{_PREFIX} {name}: stopping after this update with a final checkpoint "
            f"(again to abort)\n"
        )

    @property
    def requested(self) -> bool:
        """A first signal came: the run should stop."""
        return self.signum is not None


def abort(signum: int) -> None:
    """A second signal: one line on stderr, then ``os._exit(130)`` at once."""
    name = signal.Signals(signum).name
    write_stderr(f"{_PREFIX} second {name}: aborted, without a final checkpoint\n")
    os._exit(ExitCode.INTERRUPTED)


class _WakeupWatcher:
    """Counts SIGINT/SIGTERM in a thread, so that a second one aborts even while the main
    thread is blocked in native code (a Ray call), where Python handlers wait for it.

    Python's C-level handler writes each signal's number to ``signal.set_wakeup_fd``'s
    pipe at once; this thread reads it and calls :func:`abort` at the second.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._old_fd: int | None = None
        self._seen = 0
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
                for number in data:
                    if number in (signal.SIGINT, signal.SIGTERM):
                        self._seen += 1
                        if self._seen >= 2:
                            abort(number)
