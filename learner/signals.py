"""SIGINT/SIGTERM during a run: the first asks for a graceful stop, a second aborts."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

log = logging.getLogger("impala_frodo")


class StopSignal:
    """SIGINT/SIGTERM -> a flag the loop checks (graceful stop); a second one aborts.

    The abort is a ``KeyboardInterrupt`` raised wherever the driver is, so that a run
    stuck in a call still ends; the first signal only sets :attr:`signum`, and the loop
    stops after its current update with a final checkpoint.
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
        if self.signum is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: aborting")
        self.signum = signum
        log.warning(
            "%s: stopping after this update with a final checkpoint (again to abort)",
            signal.Signals(signum).name,
        )

    @property
    def requested(self) -> bool:
        """A first signal came: the run should stop."""
        return self.signum is not None
