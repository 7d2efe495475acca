"""Ground-truth probes: how far the learner's values and targets are from the truth.

Where an env can list its states and knows their true values (the non-stationary random
walk), the actors attach that :class:`~impala_frodo.envs.base.GroundTruth` to each
trajectory and the learner reads it here, and only here: nothing that learns sees it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from impala_frodo.envs.base import GroundTruth
from impala_frodo.reports.analysis import value_error_metrics
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.updater import Updater


class GroundTruthProbe:
    """Errors against an env's true state values, measured after each update.

    ``state_observations [S, *obs_shape]``: the observation of every state, in the order
    of :attr:`GroundTruth.true_values`.
    """

    def __init__(self, state_observations: np.ndarray, device: torch.device | str) -> None:
        self.states = torch.as_tensor(state_observations, dtype=torch.float32).to(device)

    def metrics(self, updater: Updater, batch: Batch, truth: GroundTruth) -> dict[str, float]:
        """``eval/value_rmse`` of V on every state (and ``eval/value_rmse_after_switch`` right
        after a reward switch); ``eval/target_rmse`` of the learned target on ``batch``,
        the batch of the last update, where the updater has one."""
        metrics = self.value_metrics(updater, truth)
        if updater.last_target is not None:
            true_steps = self.true_step_values(batch, truth)
            if true_steps is not None:
                error = (updater.last_target - true_steps).square().mean().sqrt()
                metrics["eval/target_rmse"] = float(error)
        return metrics

    def value_metrics(self, updater: Updater, truth: GroundTruth) -> dict[str, float]:
        """The value errors of :meth:`metrics`: V on every state against the truth."""
        predicted = updater.values(self.states).cpu().numpy()
        return value_error_metrics(predicted, truth.true_values, truth.steps_since_switch)

    def target_error(
        self, target: Tensor, batch: Batch, truth: GroundTruth
    ) -> tuple[float, int] | None:
        """``(sum of squared errors, count)`` of the learned target ``[T, B]`` against the
        true values of ``batch``'s states (``None`` where they are not one-hot states):
        data-parallel learners each report theirs, :func:`target_rmse` combines them."""
        true_steps = self.true_step_values(batch, truth)
        if true_steps is None:
            return None
        return float((target - true_steps).square().sum()), true_steps.numel()

    def true_step_values(self, batch: Batch, truth: GroundTruth) -> Tensor | None:
        """True V(x_t) ``[T, B]`` of the batch's observations where they are one-hot states
        (the random walk: ``x @ v_true`` is then the true value of x); else ``None``."""
        obs = batch.obs[:-1].flatten(2)
        true_values = torch.as_tensor(truth.true_values).to(device=obs.device, dtype=obs.dtype)
        if obs.shape[-1] != true_values.numel():
            return None
        return obs @ true_values


def target_rmse(parts: list[tuple[float, int]]) -> dict[str, float]:
    """``eval/target_rmse`` from the learners' :meth:`GroundTruthProbe.target_error` parts."""
    total = sum(count for _, count in parts)
    return {"eval/target_rmse": (sum(sse for sse, _ in parts) / total) ** 0.5} if total else {}
