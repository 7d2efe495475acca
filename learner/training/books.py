"""The learner's books: what the run has done, and when its next record and checkpoint are due.

:class:`Books` is the one owner of

- the counters that survive a resume (:class:`Counters`: env steps, updates, episodes,
  actor failures, resumes, wall time over every session of the run);
- this session's history (:class:`History`: every episode and value error, in order, for
  the per-seed summaries of experiments);
- the return window: the last ``run.returns_window`` episodes (the mean return shown, and
  whether a return target is reached);
- the log cadence and what a record holds: a record after the session's first update,
  then every ``run.log_every_updates`` updates or ``run.log_every_s`` seconds, whichever
  comes first, with the means since the last record, the episodes and the throughput;
- the checkpoint cadence: every ``run.checkpoint_every_s``.

Others tell it what happened (:meth:`Books.add_update`, :meth:`Books.count_actor_failures`,
:meth:`Books.count_learner_restart`, :meth:`Books.count_dropped_unrolls`,
:meth:`Books.count_resume`) and read it; nothing else
writes its counters. It is a plain
class with an injectable clock, so its cadence is tested by moving time by hand.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from impala_frodo.acting.trajectory import UnrollSummary
from impala_frodo.config.sections import RunConfig
from impala_frodo.records.intervals import IntervalLog

#: The metric of the ground-truth probe that the history keeps, per update.
VALUE_RMSE = "eval/value_rmse"
#: The async meta-learner's restarts this session, as the rule reports them per update.
META_RESTARTS = "perf/meta_restarts"


@dataclass
class Counters:
    """Progress that survives a resume. ``updates`` is the policy version."""

    env_steps: int = 0
    updates: int = 0
    meta_updates: int = 0
    episodes: int = 0
    trajectories: int = 0
    wall_time_s: float = 0.0  # summed over all sessions of the run
    resumes: int = 0
    actor_failures: int = 0
    learner_restarts: int = 0  # data-parallel learner ranks lost and replaced
    dropped_unrolls: int = 0  # unrolls of updates dropped (restarts, or lost with a node)
    rewound_updates: int = 0  # updates undone: every learner restarted from a checkpoint
    meta_restarts: int = 0  # the async meta-learner replaced after a loss

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Counters:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class History:
    """This session's episodes and value errors, in order (for per-seed summaries)."""

    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    episode_end_steps: list[int] = field(default_factory=list)  # env steps when each ended
    #: ``(env steps, eval/value_rmse)`` after each update, where a probe measures it.
    value_rmse: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class _Marks:
    """Where the last log record left the counters, and when."""

    time: float
    env_steps: int = 0
    updates: int = 0
    meta_updates: int = 0


class Books:
    """Counters, history, the return window, and the log and checkpoint cadence of a run.

    ``run``: the run's section (its budget, return window and cadences); ``is_meta``:
    records carry the meta-steps' rates (the algorithm has meta-parameters).
    """

    def __init__(
        self, run: RunConfig, *, is_meta: bool, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.budget = run.total_env_steps
        self.returns_window = run.returns_window
        self._log_every_updates = run.log_every_updates
        self._log_every_s = run.log_every_s
        self._checkpoint_every_s = run.checkpoint_every_s
        self._is_meta = is_meta
        self._clock = clock
        self.counters = Counters()
        self.history = History()
        self.recent_returns: deque[float] = deque(maxlen=run.returns_window)
        self.recent_lengths: deque[int] = deque(maxlen=run.returns_window)
        self.trajectories_by_actor: Counter[int] = Counter()  # this session only
        self._interval = IntervalLog(run.returns_window)
        self._session_start = clock()
        self._wall_offset = 0.0
        self._session_start_steps = 0
        self._failures_before_session = 0
        self._meta_restarts_before_session = 0
        self._marks = _Marks(self._session_start)
        self._logged_this_session = False
        self._last_checkpoint_time = self._session_start

    # ------------------------------------------------------- what happened
    def add_update(
        self,
        unrolls: Sequence[UnrollSummary],
        metrics: Mapping[str, float],
        *,
        updates: int,
        meta_updates: int,
    ) -> None:
        """An update consumed ``unrolls``; the rule has now taken ``updates`` updates
        and ``meta_updates`` meta-steps, and reports ``metrics`` (averaged into the next
        record; the probe's value error also into the history)."""
        c = self.counters
        c.updates, c.meta_updates = updates, meta_updates
        for tr in unrolls:
            c.env_steps += tr.num_steps
            c.trajectories += 1
            self.trajectories_by_actor[tr.actor_id] += 1
            c.episodes += len(tr.episode_returns)
            self.recent_returns.extend(tr.episode_returns)
            self.recent_lengths.extend(tr.episode_lengths)
            self.history.episode_returns.extend(tr.episode_returns)
            self.history.episode_lengths.extend(tr.episode_lengths)
            self.history.episode_end_steps.extend([c.env_steps] * len(tr.episode_returns))
            self._interval.add({}, tr.episode_returns, tr.episode_lengths)
        if VALUE_RMSE in metrics:
            self.history.value_rmse.append((c.env_steps, metrics[VALUE_RMSE]))
        if META_RESTARTS in metrics:  # this session's: the run's adds the earlier sessions'
            c.meta_restarts = self._meta_restarts_before_session + int(metrics[META_RESTARTS])
        self._interval.add(metrics)

    def count_actor_failures(self, this_session: int) -> None:
        """This session's actor failures so far: the run's are the earlier sessions' plus these."""
        self.counters.actor_failures = self._failures_before_session + this_session

    def count_learner_restart(self, unrolls: int, restart_s: float, rewound: int = 0) -> None:
        """A learner rank was lost and replaced in ``restart_s`` seconds; the update in
        flight, on ``unrolls`` unrolls, was dropped (its env steps are not counted);
        ``rewound``: updates undone, every rank restarted from the last checkpoint."""
        self.counters.learner_restarts += 1
        self.counters.rewound_updates += rewound
        self.count_dropped_unrolls(unrolls)
        self._interval.add({"perf/learner_restart_s": restart_s})

    def count_dropped_unrolls(self, unrolls: int) -> None:
        """An update on ``unrolls`` unrolls was dropped (its env steps are not counted)."""
        self.counters.dropped_unrolls += unrolls

    def count_resume(self) -> None:
        """This session resumes the run (after :meth:`load_state_dict`)."""
        self.counters.resumes += 1

    # ------------------------------------------------------------ progress
    @property
    def done(self) -> bool:
        """The run's budget of env steps is spent."""
        return self.counters.env_steps >= self.budget

    @property
    def session_env_steps(self) -> int:
        """Env steps counted since this session began (a new run's, or a resume's)."""
        return self.counters.env_steps - self._session_start_steps

    def wall_time_s(self) -> float:
        """Seconds of every session of the run, this one so far included."""
        return self._wall_offset + (self._clock() - self._session_start)

    def mean_return(self) -> float | None:
        """Mean return of the last ``run.returns_window`` episodes (None before any)."""
        return float(np.mean(self.recent_returns)) if self.recent_returns else None

    def solved(self, threshold: float) -> bool:
        """The return window is full and its mean is at least ``threshold``."""
        full = len(self.recent_returns) == self.recent_returns.maxlen
        return full and float(np.mean(self.recent_returns)) >= threshold

    # ------------------------------------------------------------- records
    def restart_intervals(self) -> None:
        """Start the log and checkpoint intervals now (wall time keeps counting)."""
        self._marks.time = self._last_checkpoint_time = self._clock()

    def has_unlogged_steps(self) -> bool:
        """Env steps were counted since the last log record."""
        return self.counters.env_steps > self._marks.env_steps

    def log_due(self) -> bool:
        """A record is due after the session's first update (a first point within a few
        thousand env steps), then every ``run.log_every_updates`` updates or
        ``run.log_every_s`` seconds, whichever comes first."""
        updates = self.counters.updates - self._marks.updates
        if updates <= 0:
            return False
        if not self._logged_this_session or updates >= self._log_every_updates:
            return True
        return self._clock() - self._marks.time >= self._log_every_s

    def take_record(self, extra: Mapping[str, float] | None = None) -> dict[str, float]:
        """The record of the interval since the last one (means, episodes, throughput, and
        ``extra``); the next interval starts now."""
        now = self._clock()
        elapsed = max(now - self._marks.time, 1e-9)
        c, marks = self.counters, self._marks
        episodes = self._interval.num_episodes
        scalars = self._interval.pop(self.recent_returns)
        scalars["episode/count"] = float(episodes)
        scalars["perf/env_steps_per_s"] = (c.env_steps - marks.env_steps) / elapsed
        scalars["perf/updates_per_s"] = (c.updates - marks.updates) / elapsed
        if self._is_meta:
            meta_steps = c.meta_updates - marks.meta_updates
            env_steps = max(c.env_steps - marks.env_steps, 1)
            scalars["perf/meta_updates_per_s"] = meta_steps / elapsed
            scalars["perf/meta_updates_per_1k_env_steps"] = 1000.0 * meta_steps / env_steps
        scalars["perf/actor_failures"] = float(c.actor_failures)
        scalars["perf/learner_restarts"] = float(c.learner_restarts)
        scalars["perf/dropped_unrolls"] = float(c.dropped_unrolls)
        scalars["perf/rewound_updates"] = float(c.rewound_updates)
        if META_RESTARTS in scalars:  # the run's count, not the interval's mean
            scalars[META_RESTARTS] = float(c.meta_restarts)
        scalars["progress/updates"] = float(c.updates)
        scalars["progress/episodes"] = float(c.episodes)
        if extra:
            scalars.update(extra)
        self._marks = _Marks(now, c.env_steps, c.updates, c.meta_updates)
        self._logged_this_session = True
        return scalars

    def checkpoint_due(self) -> bool:
        return self._clock() - self._last_checkpoint_time >= self._checkpoint_every_s

    def checkpoint_taken(self) -> None:
        """A checkpoint is taken now: the next is due ``run.checkpoint_every_s`` from now."""
        self._last_checkpoint_time = self._clock()

    # --------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's ``counters`` (wall time up to now), ``recent_returns`` and
        ``recent_lengths``."""
        self.counters.wall_time_s = self.wall_time_s()
        return {
            "counters": asdict(self.counters),
            "recent_returns": [float(r) for r in self.recent_returns],
            "recent_lengths": [int(n) for n in self.recent_lengths],
        }

    def load_state_dict(self, state: Mapping[str, Any], *, updates: int, meta_updates: int) -> None:
        """Continue from a checkpoint: a new session of the run starts now. ``updates`` and
        ``meta_updates``: the restored rule's counts (the policy version is the rule's)."""
        self.counters = Counters.from_dict(state["counters"])
        self.counters.updates, self.counters.meta_updates = updates, meta_updates
        self.recent_returns.clear()
        self.recent_returns.extend(state.get("recent_returns", []))
        self.recent_lengths.clear()
        self.recent_lengths.extend(state.get("recent_lengths", []))
        now = self._clock()
        self._session_start = self._last_checkpoint_time = now
        self._wall_offset = float(self.counters.wall_time_s)
        self._session_start_steps = self.counters.env_steps
        self._failures_before_session = self.counters.actor_failures
        self._meta_restarts_before_session = self.counters.meta_restarts
        self._marks = _Marks(now, self.counters.env_steps, updates, meta_updates)
