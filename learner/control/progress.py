"""A run's progress on stderr: a bar on a terminal, a plain line every few seconds elsewhere.

On a terminal, a tqdm bar (env steps, steps/s, return, policy lag). In a log
file or under ``ray job submit``, where a bar's carriage returns turn into
one huge line, a plain line every ``every_s`` seconds instead::

    [impala-frodo] 123,520/500,000 env steps (25%), 40.1k steps/s, ret 0.853, lag 1.2,
        0:03 elapsed, ~0:09 left            (one line)

Both show the numbers of the latest log record (:func:`summary_fields`), and
:meth:`Progress.close` shows the final record, so the last return shown is the
one in the summary line.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, TextIO

Mode = Literal["bar", "lines", "off"]

#: Seconds between plain progress lines.
LINE_EVERY_S = 10.0


def summary_fields(scalars: Mapping[str, float]) -> dict[str, str]:
    """Short progress fields from a log record."""
    fields = {}
    for key, name, fmt in (
        ("episode/return_window", "ret", "{:.3f}"),
        ("perf/policy_lag", "lag", "{:.1f}"),
        ("eval/value_rmse", "rmse", "{:.3f}"),
    ):
        value = scalars.get(key)
        if value is not None and math.isfinite(value):
            fields[name] = fmt.format(value)
    return fields


def _clock_text(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}:{m:02d}:{s:02d}" if hours else f"{m}:{s:02d}"


def _rate_text(rate: float) -> str:
    return f"{rate / 1e3:.1f}k" if rate >= 1e3 else f"{rate:.0f}"


class Progress:
    """Env steps of a run towards ``total``, shown as ``mode`` says.

    ``update(env_steps)`` after every update, ``show(record)`` after every log
    record, ``close(record)`` at the end (the final record, if any).
    """

    def __init__(
        self,
        mode: Mode,
        total: int,
        initial: int = 0,
        *,
        prefix: str = "[impala-frodo]",
        every_s: float = LINE_EVERY_S,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mode = mode
        self.total = total
        self.steps = initial
        self.prefix = prefix
        self.every_s = every_s
        self.stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._start = clock()
        self._start_steps = initial
        self._last_line = self._start
        self._fields: dict[str, str] = {}
        self._bar: Any = None
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                initial=initial,
                unit="step",
                unit_scale=True,
                dynamic_ncols=True,
                smoothing=0.05,
                file=self.stream,
            )

    def update(self, env_steps: int) -> None:
        """The run is at ``env_steps`` now."""
        if self._bar is not None:
            if env_steps > self._bar.total:  # the last update overshoots the budget
                self._bar.total = env_steps
            self._bar.update(env_steps - self.steps)
        self.steps = env_steps
        if self.mode == "lines" and self._clock() - self._last_line >= self.every_s:
            self.print_line()

    def show(self, record: Mapping[str, float]) -> None:
        """The numbers of a new log record."""
        self._fields = summary_fields(record)
        if self._bar is not None:
            self._bar.set_postfix(self._fields, refresh=False)

    def line(self) -> str:
        """The plain progress line for now."""
        now = self._clock()
        elapsed = now - self._start
        session_steps = self.steps - self._start_steps
        rate = session_steps / elapsed if elapsed > 0 else 0.0
        percent = 100.0 * self.steps / max(self.total, 1)
        parts = [f"{self.steps:,}/{self.total:,} env steps ({percent:.0f}%)"]
        parts.append(f"{_rate_text(rate)} steps/s")
        parts += [f"{name} {value}" for name, value in self._fields.items()]
        parts.append(f"{_clock_text(elapsed)} elapsed")
        if rate > 0 and self.steps < self.total:
            parts[-1] += f", ~{_clock_text((self.total - self.steps) / rate)} left"
        return f"{self.prefix} {', '.join(parts)}"

    def print_line(self) -> None:
        self._last_line = self._clock()
        print(self.line(), file=self.stream, flush=True)

    def close(self, record: Mapping[str, float] | None = None) -> None:
        """Show the final record and end the display."""
        if record:
            self.show(record)
        if self._bar is not None:
            self._bar.refresh()
            self._bar.close()
            self._bar = None
        elif self.mode == "lines" and self.steps > self._start_steps:
            self.print_line()
