"""Per-interval statistics for log records.

:class:`IntervalLog` averages what happened between two log records (the
updater's scalars and the episodes that ended); :class:`ScalarMeans` is its
running-mean store. The learner (:mod:`learner.training.learner`), which both trainers run,
writes its records through them to a :class:`~impala_frodo.records.runlog.RunLogger`.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Mapping, Sequence

import numpy as np


class ScalarMeans:
    """Running sums of named scalars, drained into means at each log."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def add(self, scalars: Mapping[str, float]) -> None:
        for name, value in scalars.items():
            self._sums[name] = self._sums.get(name, 0.0) + float(value)
            self._counts[name] = self._counts.get(name, 0) + 1

    def drain(self) -> dict[str, float]:
        means = {name: s / self._counts[name] for name, s in self._sums.items()}
        self._sums.clear()
        self._counts.clear()
        return means


class IntervalLog:
    """Averages per-update metrics and finished episodes over a log interval.

    A record holds ``episode/return`` and ``episode/length`` (means over the
    episodes that ended in the interval), ``episode/return_window`` (mean of
    the last ``window`` episodes), and the means of the updater's scalars
    (and ``eval/value_rmse``). The synchronous trainer and the distributed
    learner both log through it.
    """

    def __init__(self, window: int) -> None:
        self.window = window
        self._means = ScalarMeans()
        self._returns: list[float] = []
        self._lengths: list[int] = []

    @property
    def num_episodes(self) -> int:
        """Episodes that ended in the interval so far."""
        return len(self._returns)

    def add(
        self,
        metrics: Mapping[str, float],
        returns: Sequence[float] = (),
        lengths: Sequence[int] = (),
    ) -> None:
        self._means.add(metrics)
        self._returns.extend(returns)
        self._lengths.extend(lengths)

    def pop(self, recent_returns: Sequence[float] | deque[float]) -> dict[str, float]:
        """The interval's record; ``recent_returns``: every episode's return so far, or the last."""
        record = self._means.drain()
        if self._returns:
            record["episode/return"] = float(np.mean(self._returns))
            record["episode/length"] = float(np.mean(self._lengths))
        if len(recent_returns):
            last = itertools.islice(reversed(recent_returns), self.window)
            record["episode/return_window"] = float(np.mean(list(last)))
        self._returns, self._lengths = [], []
        return record
