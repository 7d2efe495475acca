"""The learner, as a plain class: no Ray, no actors, no threads.

:class:`Learner` owns an :class:`~impala_frodo.rule.updater.Updater` (the learning
rule of every algorithm) and what a run needs around it:

- ``update(unrolls)``: one update on the actor batches (trajectories in hand, or
  references to them), measures the policy lag (= updates so far - the version a
  batch was acted with) and tells its :class:`~learner.training.books.Books` what
  happened. The update itself is its :class:`UnrollLearner`'s: :class:`LocalUpdates`
  fetches the unrolls into this process, concatenates them along B and moves them to
  the device once (time-major); a :class:`~learner.training.group.LearnerGroup` hands
  each learner process references to its share, which it fetches itself;
- ``behaviour_weights()``: the parameters mu acts with, on CPU with their version, to publish
  every ``run.broadcast_every`` updates (``publish_due``);
- evaluation: a :class:`~impala_frodo.reports.probes.GroundTruthProbe` measures V and the learned
  target against the true values the trajectories carry (the random walk);
- ``books``: counters, history, the return window and the log and checkpoint cadence
  (:mod:`learner.training.books`);
- ``maybe_log`` / ``maybe_checkpoint``: the books' records to a
  :class:`~impala_frodo.records.runlog.RunLogger` and checkpoints, when the books say they
  are due; a non-finite state is never saved;
- ``state_dict`` / ``load_state_dict``: updater, the books and RNG states, checked to fit.

The driver (``learner/app/driver.py``) feeds it trajectories from Ray actors; the
synchronous trainer (``learner/training/sync.py``) and the tests from a
:class:`~actors.rollout.RolloutActor` driven directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from impala_frodo.acting.trajectory import UnrollSource
from impala_frodo.config.schema import Config
from impala_frodo.envs.base import GroundTruth
from impala_frodo.networks.weights import DelayedWeights
from impala_frodo.records.checkpoint import (
    CheckpointError,
    CheckpointManager,
    capture_rng_state,
    restore_rng_state,
)
from impala_frodo.records.runlog import RunLogger, StorageError
from impala_frodo.reports.probes import GroundTruthProbe
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.updater import NonFiniteLossError, Updater
from impala_frodo.utils import first_line, map_tensors, os_error_reason
from learner.training.books import Books

log = logging.getLogger("impala_frodo")


def _all_finite(obj: Any) -> bool:
    """Every floating-point tensor in ``obj``'s nested mappings, lists and tuples is finite."""
    finite = True

    def check(tensor: torch.Tensor) -> None:
        nonlocal finite
        if finite and tensor.is_floating_point():
            finite = bool(torch.isfinite(tensor).all())

    map_tensors(check, obj)
    return finite


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
    """What the learner uses of its :class:`~impala_frodo.rule.updater.Updater`'s state;
    data-parallel learners offer the same (:class:`~learner.training.group.LearnerGroup`)."""

    params: Mapping[str, torch.Tensor]
    num_updates: int
    num_meta_updates: int

    def acting_params(
        self, device: torch.device | str | None = None
    ) -> dict[str, torch.Tensor]: ...

    def values(self, obs: torch.Tensor) -> torch.Tensor: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class UpdateDropped(Exception):
    """An update was not taken, every learner left at the last completed update (or, where
    no learner survived, restarted from the last checkpoint). ``unrolls``: the unrolls it
    would have trained on (never trained on); ``restart_s``: from a learner's loss being
    seen to the learners ready again, or ``None`` where no learner was lost (the unrolls
    were lost with their node: nothing restarted); ``reason``: what was lost;
    ``rewound``: updates since the last checkpoint undone (every learner restarted)."""

    def __init__(
        self, unrolls: int, restart_s: float | None, reason: str, *, rewound: int = 0
    ) -> None:
        super().__init__(f"update dropped ({unrolls} unrolls): {reason}")
        self.unrolls, self.restart_s, self.reason = unrolls, restart_s, reason
        self.rewound = rewound


class UnrollLearner(Protocol):
    """Takes one update on unrolls, and hands out the acting weights."""

    def update(
        self, unrolls: Sequence[UnrollSource], *, truth: GroundTruth | None, publish: bool
    ) -> dict[str, float]:
        """One update; ``truth``: the env's ground truth for the probe's metrics (if any);
        ``publish``: the weights after it will be published (a learner process of its own
        returns them with its reply, ready for :meth:`acting_weights`). Raises
        :class:`UpdateDropped` where the update was not taken but training can go on."""
        ...

    def acting_weights(self) -> Mapping[str, torch.Tensor] | Any:
        """The current acting weights for the actors: by name on CPU, or packed."""
        ...


class LocalUpdates:
    """Updates in this process: the unrolls fetched here (``perf/driver_unroll_bytes``),
    concatenated along B on ``device``, one update of ``updater``; the ground-truth probe
    (where there is one) measured on that batch."""

    def __init__(
        self, updater: Updater, device: torch.device, probe: GroundTruthProbe | None
    ) -> None:
        self.updater, self.device, self.probe = updater, device, probe

    def update(
        self, unrolls: Sequence[UnrollSource], *, truth: GroundTruth | None, publish: bool
    ) -> dict[str, float]:
        trajectories = [unroll.trajectory() for unroll in unrolls]
        batch = Batch.from_trajectories(trajectories, self.device)
        metrics = self.updater.update(batch)
        metrics["perf/driver_unroll_bytes"] = float(sum(tr.nbytes for tr in trajectories))
        if self.probe is not None and truth is not None:
            metrics |= self.probe.metrics(self.updater, batch, truth)
        return metrics

    def acting_weights(self) -> dict[str, torch.Tensor]:
        return self.updater.acting_params("cpu")


class Learner:
    """Consumes trajectory batches, updates the agent, publishes weights, logs and checkpoints.

    ``updater``: the learning rule's state (default: an ``Updater`` on ``device``);
    ``group``: data-parallel learner processes instead
    (:class:`~learner.training.group.LearnerGroup`: its state and its updates).
    ``clock``: the books' (log and checkpoint cadence, wall time).
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
        updater: Updater | None = None,
        group: Any = None,
    ) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.obs_shape = tuple(obs_shape)
        self.num_actions = int(num_actions)
        self.updater: UpdaterLike = (
            group or updater or Updater(cfg, self.obs_shape, self.num_actions, device=self.device)
        )
        self.books = Books(cfg.run, is_meta=cfg.is_meta, clock=clock)
        self.run_logger = run_logger
        self.checkpoints = checkpoints
        #: Called once, after the next checkpoint is saved (a resumed run's config.json is
        #: written then, so it never describes a session that has nothing saved yet).
        self.after_next_checkpoint: Callable[[], None] | None = None
        self._delayed = DelayedWeights(cfg.run.policy_lag)
        self.probe = None
        if state_observations is not None:
            self.probe = GroundTruthProbe(state_observations, self.device)
        self.updates: UnrollLearner = group or LocalUpdates(self.updater, self.device, self.probe)
        if group is not None:  # where learners restart from when none survives
            group.saved_state = self.saved_learning_state
        self.last_record: dict[str, float] = {}  # the last record written

    @property
    def version(self) -> int:
        """The current policy version: the number of updates taken."""
        return self.updater.num_updates

    # --------------------------------------------------------------- update
    def update(self, unrolls: Sequence[UnrollSource]) -> dict[str, float]:
        """One update on the actor batches (concatenated along B); returns the metrics.

        Raises :class:`~impala_frodo.rule.updater.NonFiniteLossError` on a NaN/inf loss
        (nothing is counted then). An update dropped by a learner restart is counted in the
        books (its unrolls as dropped) and returns no metrics.
        """
        summaries = [unroll.summary for unroll in unrolls]
        lags = [self.version - summary.policy_version for summary in summaries]
        truth = summaries[-1].ground_truth if self.probe is not None else None
        publish = (self.version + 1) % self.cfg.run.broadcast_every == 0
        try:
            metrics = self.updates.update(unrolls, truth=truth, publish=publish)
        except UpdateDropped as dropped:
            self._count_dropped(dropped)
            return {}
        metrics["perf/policy_lag"] = float(np.mean(lags))
        metrics["perf/policy_lag_max"] = float(max(lags))
        self.books.add_update(
            summaries,
            metrics,
            updates=self.updater.num_updates,
            meta_updates=self.updater.num_meta_updates,
        )
        return metrics

    def _count_dropped(self, dropped: UpdateDropped) -> None:
        """The books count a dropped update: a learner restart, or unrolls lost alone."""
        if dropped.restart_s is None:
            log.warning("%s; no learner restarted", dropped)
            self.books.count_dropped_unrolls(dropped.unrolls)
            return
        rewound = f", {dropped.rewound} update(s) undone" if dropped.rewound else ""
        log.warning("%s; learners restarted in %.1f s%s", dropped, dropped.restart_s, rewound)
        self.books.count_learner_restart(dropped.unrolls, dropped.restart_s, dropped.rewound)

    # ------------------------------------------------------------ publishing
    def publish_due(self) -> bool:
        return self.version % self.cfg.run.broadcast_every == 0

    def behaviour_weights(self) -> tuple[int, dict[str, torch.Tensor]]:
        """``(version, parameters on CPU)`` that mu acts with: the current ones, or the
        newest at least ``run.policy_lag`` versions old (a lag set on purpose)."""
        return self._delayed.push(self.version, self.updates.acting_weights())

    # --------------------------------------------------------------- logging
    def maybe_log(self, extra: Mapping[str, float] | None = None) -> dict[str, float] | None:
        return self.log(extra) if self.books.log_due() else None

    def log(self, extra: Mapping[str, float] | None = None) -> dict[str, float]:
        """The books' record (with ``extra``), written to the run logger."""
        record = self.books.take_record(extra)
        if self.run_logger is not None:
            self.run_logger.log(self.books.counters.env_steps, record, self.books.wall_time_s())
        self.last_record = record
        return record

    # ----------------------------------------------------------- checkpoints
    def maybe_checkpoint(self) -> Path | None:
        return self.checkpoint() if self.books.checkpoint_due() else None

    def checkpoint(self) -> Path | None:
        """Save the state now (if a manager is set); refuses a non-finite state.

        Raises :class:`~impala_frodo.rule.updater.NonFiniteLossError` if any tensor of the learner
        (agent, meta-network, optimizer states) is not finite, and
        :class:`~impala_frodo.records.runlog.StorageError` if the disk refuses the write; either
        way the last good checkpoint is left as it was.
        """
        self.books.checkpoint_taken()
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

    def saved_learning_state(self) -> dict[str, Any] | None:
        """The updater's state in the last checkpoint (``latest.pt``, this session's or the
        one resumed from), or ``None`` where none has been saved: what data-parallel
        learners restart from when none survives (:mod:`learner.training.rewind`). Raises
        :class:`~impala_frodo.records.checkpoint.CheckpointError` if it cannot be read."""
        if self.checkpoints is None or not self.checkpoints.exists():
            return None
        return self.checkpoints.load()["updater"]

    def state_dict(self) -> dict[str, Any]:
        """``config``, ``updater``, the books' ``counters``, ``recent_returns`` and
        ``recent_lengths``, and ``rng``: the keys of every checkpoint."""
        books = self.books.state_dict()  # the wall time up to now, before the updater's state
        return {
            "config": self.cfg.to_dict(),
            "updater": self.updater.state_dict(),
            **books,
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
        self.books.load_state_dict(
            state, updates=self.updater.num_updates, meta_updates=self.updater.num_meta_updates
        )
        if restore_rng and "rng" in state:
            restore_rng_state(state["rng"])

    def close(self) -> None:
        if self.run_logger is not None:
            self.run_logger.close()
