"""The learner, as a plain class: no Ray, no actors, no threads.

:class:`Learner` owns an :class:`~impala_frodo.rule.updater.Updater` (the learning
rule of every algorithm) and everything around it that a run needs:

- ``update(trajectories)``: concatenates actor batches along B, moves them to
  the device once (time-major), takes one update, counts env steps, episodes
  and policy lag (= updates so far - the version a batch was acted with);
- ``behaviour_weights()``: the parameters mu acts with, on CPU with their version, to publish
  every ``run.broadcast_every`` updates (``publish_due``);
- evaluation: a :class:`~impala_frodo.reports.probes.GroundTruthProbe` measures V and the learned
  target against the true values the trajectories carry (the random walk);
- ``history``: every episode's return, length and end step, and the probe's value errors,
  for the per-seed summaries of experiments;
- ``maybe_log`` / ``maybe_checkpoint``: scalars to a :class:`~impala_frodo.records.runlog.RunLogger`
  after the first update, then every ``run.log_every_updates`` updates or
  ``run.log_every_s`` seconds (whichever first), and checkpoints every
  ``run.checkpoint_every_s``;
- ``state_dict`` / ``load_state_dict``: updater, counters, return window and RNG states.

The driver (``learner/app/driver.py``) feeds it trajectories from Ray actors; the
synchronous trainer (``learner/training/sync.py``) and the tests from a
:class:`~actors.rollout.RolloutActor` driven directly.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from impala_frodo.acting.trajectory import Trajectory
from impala_frodo.config.schema import Config
from impala_frodo.networks.weights import DelayedWeights
from impala_frodo.records.checkpoint import (
    CheckpointError,
    CheckpointManager,
    capture_rng_state,
    restore_rng_state,
)
from impala_frodo.records.intervals import IntervalLog
from impala_frodo.records.runlog import RunLogger, StorageError
from impala_frodo.reports.probes import GroundTruthProbe
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.updater import NonFiniteLossError, Updater
from impala_frodo.utils import first_line, os_error_reason


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


def _float_tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Every floating-point tensor in nested dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point():
            yield obj
    elif isinstance(obj, Mapping):
        for value in obj.values():
            yield from _float_tensors(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            yield from _float_tensors(value)


def _all_finite(obj: Any) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in _float_tensors(obj))


def check_resume_state(state: Mapping[str, Any]) -> None:
    """The parts of a checkpoint every resume reads exist (else :class:`CheckpointError`)."""
    counters, updater = state.get("counters"), state.get("updater")
    steps = counters.get("env_steps") if isinstance(counters, Mapping) else None
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise CheckpointError("the checkpoint has no valid counters (counters.env_steps)")
    if not isinstance(updater, Mapping) or not isinstance(updater.get("params"), Mapping):
        raise CheckpointError("the checkpoint has no learner state (updater.params)")


def _check_shapes(saved: Mapping[str, Any], current: Mapping[str, torch.Tensor]) -> None:
    """The saved agent has the same parameter names and shapes as this one (else ValueError)."""
    if set(saved) != set(current):
        raise ValueError(f"parameters {sorted(saved)} != {sorted(current)}")
    for name, value in current.items():
        if tuple(saved[name].shape) != tuple(value.shape):
            raise ValueError(
                f"{name} has shape {tuple(saved[name].shape)} there, {tuple(value.shape)} here"
            )


class UpdaterLike(Protocol):
    """What the learner uses of its :class:`~impala_frodo.rule.updater.Updater`; data-parallel
    learners offer the same (:class:`~learner.training.group.LearnerGroup`)."""

    params: Mapping[str, torch.Tensor]
    num_updates: int
    num_meta_updates: int
    last_target: torch.Tensor | None

    def update(self, batch: Batch) -> dict[str, float]: ...

    def acting_params(
        self, device: torch.device | str | None = None
    ) -> dict[str, torch.Tensor]: ...

    def values(self, obs: torch.Tensor) -> torch.Tensor: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Learner:
    """Consumes trajectory batches, updates the agent, publishes weights, logs and checkpoints.

    ``updater``: the learning rule's state (default: an ``Updater`` on ``device``; a
    :class:`~learner.training.group.LearnerGroup` for data-parallel learners).
    """

    def __init__(
        self,
        cfg: Config,
        obs_shape: Sequence[int],
        num_actions: int,
        *,
        device: torch.device | str = "cpu",
        state_observations: np.ndarray | None = None,
        run_logger: RunLogger | None = None,
        checkpoints: CheckpointManager | None = None,
        clock: Callable[[], float] = time.monotonic,
        updater: UpdaterLike | None = None,
    ) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.obs_shape = tuple(obs_shape)
        self.num_actions = int(num_actions)
        self.updater: UpdaterLike = updater or Updater(
            cfg, self.obs_shape, self.num_actions, device=self.device
        )
        self.counters = Counters()
        self.run_logger = run_logger
        self.checkpoints = checkpoints
        #: Called once, after the next checkpoint is saved (a resumed run's config.json is
        #: written then, so it never describes a session that has nothing saved yet).
        self.after_next_checkpoint: Callable[[], None] | None = None
        self._clock = clock
        self._delayed = DelayedWeights(cfg.run.policy_lag)
        self.probe = None
        if state_observations is not None:
            self.probe = GroundTruthProbe(state_observations, self.device)
        self.history = History()
        window = cfg.run.returns_window
        self.recent_returns: deque[float] = deque(maxlen=window)
        self.recent_lengths: deque[int] = deque(maxlen=window)
        self._interval = IntervalLog(window)
        self.trajectories_by_actor: Counter[int] = Counter()  # this session only
        self.last_record: dict[str, float] = {}  # the last log record
        self._session_start = clock()
        self._wall_offset = 0.0
        self._last_log_time = self._session_start
        self._last_log_steps = 0
        self._last_log_updates = 0
        self._last_log_meta_updates = 0
        self._logged_this_session = False
        self._last_checkpoint_time = self._session_start

    # ------------------------------------------------------------- progress
    @property
    def version(self) -> int:
        """The current policy version: the number of updates taken."""
        return self.updater.num_updates

    @property
    def done(self) -> bool:
        return self.counters.env_steps >= self.cfg.run.total_env_steps

    def wall_time_s(self) -> float:
        return self._wall_offset + (self._clock() - self._session_start)

    def mean_return(self) -> float | None:
        """Mean return of the last ``run.returns_window`` episodes (None before any)."""
        return float(np.mean(self.recent_returns)) if self.recent_returns else None

    def solved(self, threshold: float) -> bool:
        """The return window is full and its mean is at least ``threshold``."""
        full = len(self.recent_returns) == self.recent_returns.maxlen
        return full and float(np.mean(self.recent_returns)) >= threshold

    # --------------------------------------------------------------- update
    def update(self, trajectories: Sequence[Trajectory]) -> dict[str, float]:
        """One update on the actor batches concatenated along B; returns the updater's metrics.

        Raises :class:`~impala_frodo.rule.updater.NonFiniteLossError` on a NaN/inf loss
        (nothing is counted then).
        """
        lags = [self.version - tr.policy_version for tr in trajectories]
        batch = Batch.from_trajectories(trajectories, self.device)
        metrics = self.updater.update(batch)
        self._count(trajectories)
        metrics["perf/policy_lag"] = float(np.mean(lags))
        metrics["perf/policy_lag_max"] = float(max(lags))
        truth = trajectories[-1].ground_truth
        if self.probe is not None and truth is not None:
            metrics |= self.probe.metrics(self.updater, batch, truth)
            self.history.value_rmse.append((self.counters.env_steps, metrics["eval/value_rmse"]))
        self._interval.add(metrics)
        return metrics

    def _count(self, trajectories: Sequence[Trajectory]) -> None:
        c = self.counters
        c.updates = self.updater.num_updates
        c.meta_updates = self.updater.num_meta_updates
        for tr in trajectories:
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

    # ------------------------------------------------------------ publishing
    def publish_due(self) -> bool:
        return self.version % self.cfg.run.broadcast_every == 0

    def behaviour_weights(self) -> tuple[int, dict[str, torch.Tensor]]:
        """``(version, parameters on CPU)`` that mu acts with: the current ones, or the
        newest at least ``run.policy_lag`` versions old (a lag set on purpose)."""
        return self._delayed.push(self.version, self.updater.acting_params("cpu"))

    # --------------------------------------------------------------- logging
    def restart_intervals(self) -> None:
        """Start the log and checkpoint intervals now (wall time keeps counting)."""
        self._last_log_time = self._last_checkpoint_time = self._clock()

    def has_unlogged_steps(self) -> bool:
        """Env steps were counted since the last log record."""
        return self.counters.env_steps > self._last_log_steps

    def log_due(self) -> bool:
        """A record is due after the session's first update (a first point within a few
        thousand env steps), then every ``run.log_every_updates`` updates or
        ``run.log_every_s`` seconds, whichever comes first."""
        updates = self.counters.updates - self._last_log_updates
        if updates <= 0:
            return False
        if not self._logged_this_session or updates >= self.cfg.run.log_every_updates:
            return True
        return self._clock() - self._last_log_time >= self.cfg.run.log_every_s

    def maybe_log(self, extra: Mapping[str, float] | None = None) -> dict[str, float] | None:
        return self.log(extra) if self.log_due() else None

    def log(self, extra: Mapping[str, float] | None = None) -> dict[str, float]:
        """Means since the last log, episode stats and throughput, written to the run logger."""
        now = self._clock()
        elapsed = max(now - self._last_log_time, 1e-9)
        c = self.counters
        episodes = self._interval.num_episodes
        scalars = self._interval.pop(self.recent_returns)
        scalars["episode/count"] = float(episodes)
        scalars["perf/env_steps_per_s"] = (c.env_steps - self._last_log_steps) / elapsed
        scalars["perf/updates_per_s"] = (c.updates - self._last_log_updates) / elapsed
        if self.cfg.is_meta:
            meta_steps = c.meta_updates - self._last_log_meta_updates
            env_steps = max(c.env_steps - self._last_log_steps, 1)
            scalars["perf/meta_updates_per_s"] = meta_steps / elapsed
            scalars["perf/meta_updates_per_1k_env_steps"] = 1000.0 * meta_steps / env_steps
        scalars["perf/actor_failures"] = float(c.actor_failures)
        scalars["progress/updates"] = float(c.updates)
        scalars["progress/episodes"] = float(c.episodes)
        if extra:
            scalars.update(extra)
        self._last_log_time, self._last_log_steps, self._last_log_updates = (
            now,
            c.env_steps,
            c.updates,
        )
        self._last_log_meta_updates = c.meta_updates
        self._logged_this_session = True
        if self.run_logger is not None:
            self.run_logger.log(c.env_steps, scalars, self.wall_time_s())
        self.last_record = scalars
        return scalars

    # ----------------------------------------------------------- checkpoints
    def checkpoint_due(self) -> bool:
        return self._clock() - self._last_checkpoint_time >= self.cfg.run.checkpoint_every_s

    def maybe_checkpoint(self) -> Path | None:
        return self.checkpoint() if self.checkpoint_due() else None

    def checkpoint(self) -> Path | None:
        """Save the state now (if a manager is set); refuses a non-finite state.

        Raises :class:`~impala_frodo.rule.updater.NonFiniteLossError` if any tensor of the learner
        (agent, meta-network, optimizer states) is not finite, and
        :class:`~impala_frodo.records.runlog.StorageError` if the disk refuses the write; either
        way the last good checkpoint is left as it was.
        """
        self._last_checkpoint_time = self._clock()
        if self.checkpoints is None:
            return None
        state = self.state_dict()
        if not _all_finite(state["updater"]):
            raise NonFiniteLossError(
                "the learner's state (agent, meta-network or optimizer) is not finite: "
                "checkpoint refused"
            )
        try:
            path = self.checkpoints.save(state)
        except OSError as e:
            raise StorageError(
                f"cannot save a checkpoint in {str(self.checkpoints.directory)!r}: "
                f"{os_error_reason(e)}"
            ) from None
        if self.run_logger is not None:
            self.run_logger.flush()
        if self.after_next_checkpoint is not None:
            hook, self.after_next_checkpoint = self.after_next_checkpoint, None
            hook()
        return path

    def state_dict(self) -> dict[str, Any]:
        self.counters.wall_time_s = self.wall_time_s()
        return {
            "config": self.cfg.to_dict(),
            "updater": self.updater.state_dict(),
            "counters": asdict(self.counters),
            "recent_returns": [float(r) for r in self.recent_returns],
            "recent_lengths": [int(n) for n in self.recent_lengths],
            "rng": capture_rng_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any], *, restore_rng: bool = True) -> None:
        """Continue from a checkpoint: counters, curves and RNG go on where they stopped.

        Raises :class:`~impala_frodo.records.checkpoint.CheckpointError` if it does not fit
        this config.
        """
        check_resume_state(state)
        saved_config = state.get("config")
        saved_algo = saved_config.get("algo") if isinstance(saved_config, Mapping) else None
        if saved_algo is not None and saved_algo != self.cfg.algo:
            raise CheckpointError(
                f"the checkpoint is from algo {saved_algo!r}, this run is {self.cfg.algo!r}"
            )
        try:
            _check_shapes(state["updater"]["params"], self.updater.params)
            self.updater.load_state_dict(state["updater"])
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise CheckpointError(
                "the checkpoint does not fit this config (agent or meta-network shape): "
                f"{first_line(e)}"
            ) from None
        self.counters = Counters.from_dict(state["counters"])
        self.counters.updates = self.updater.num_updates
        self.counters.meta_updates = self.updater.num_meta_updates
        self.recent_returns.clear()
        self.recent_returns.extend(state.get("recent_returns", []))
        self.recent_lengths.clear()
        self.recent_lengths.extend(state.get("recent_lengths", []))
        if restore_rng and "rng" in state:
            restore_rng_state(state["rng"])
        now = self._clock()
        self._session_start = now
        self._wall_offset = float(self.counters.wall_time_s)
        self._last_log_time = self._last_checkpoint_time = now
        self._last_log_steps = self.counters.env_steps
        self._last_log_updates = self.counters.updates
        self._last_log_meta_updates = self.counters.meta_updates

    def close(self) -> None:
        if self.run_logger is not None:
            self.run_logger.close()
