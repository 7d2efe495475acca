"""SIGINT/SIGTERM during a run: the first asks for a graceful stop, a second aborts.

The handler does as little as it can: Python runs it in the main thread between two
bytecodes, wherever that thread is, inside a logging lock or a ``print`` included. So
it never logs, never raises and takes no lock: the first signal sets a flag and
writes one line with ``os.write``; a second writes one line and ends the process with
``os._exit(130)`` at once (the run's files stay as the last checkpoint left them; the
kernel drops ``run.lock``; a local Ray instance's processes are ended by its reaper,
:mod:`learner.reaper`, where one runs, and by Ray's own fate-sharing).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any

from learner.exit_codes import ExitCode

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

    def install(self) -> None:
        """Handle SIGINT/SIGTERM here; again after ``ray.init``, which puts in its own."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = signal.signal(sig, self._handle)
            self._previous.setdefault(sig, previous)  # restore() puts back the first one

    def restore(self) -> None:
        """Put back the handlers there were before the first :meth:`install`."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            write_stderr(f"{_PREFIX} second {name}: aborted, without a final checkpoint\n")
            os._exit(ExitCode.INTERRUPTED)
        self.signum = signum
        write_stderr(
            f"{_PREFIX} {name}: stopping after this update with a final checkpoint "
            f"(again to abort)\n"
        )

    @property
    def requested(self) -> bool:
        """A first signal came: the run should stop."""
        return self.signum is not None
