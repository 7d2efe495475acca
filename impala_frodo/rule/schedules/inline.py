"""Schedules that take the outer step in the learner's own update, through a
:class:`~impala_frodo.rule.meta_step.MetaStep`: the chain (the paper's), the chain on a
sample of columns, and the sliding window."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from impala_frodo.rule.algorithms import Objective
from impala_frodo.rule.batch import Batch, ColumnSampler
from impala_frodo.rule.meta_step import MetaStep
from impala_frodo.rule.metagrad import (
    InnerRule,
    OptState,
    Params,
    detach_params,
    meta_gradient,
    outer_gradient,
)
from impala_frodo.rule.schedules.base import InnerUpdate, MetaSchedule, Stats, meta_keys


class InlineSchedule(MetaSchedule):
    """An outer step taken here, in the learner's update, through a :class:`MetaStep`."""

    def __init__(
        self,
        num_inner_steps: int,
        objective: Objective,
        inner: InnerRule,
        meta_step: MetaStep,
        every: int = 1,
        sampler: ColumnSampler | None = None,
    ) -> None:
        super().__init__(num_inner_steps, every, sampler)
        self.objective = objective
        self.inner = inner
        self.meta_step = meta_step

    def before_inner_step(
        self, held_out: Batch, params: Params, opt_state: OptState
    ) -> tuple[Params, OptState, Stats]:
        if not self.outer_step_due():
            return params, opt_state, {}
        stepped = self.meta_window()
        self.windows_ended += 1
        if not stepped:
            return (*self.after_outer_step(params, opt_state), {})
        grads, outer_loss, stats = self.eta_gradient(held_out, params)
        norm = self.meta_step.apply(list(grads.values()), outer_loss)
        params, opt_state = self.after_outer_step(params, opt_state)
        return params, opt_state, stats | {"loss/outer": outer_loss, "meta/grad_norm": norm}

    @abstractmethod
    def eta_gradient(
        self, held_out: Batch, params: Params
    ) -> tuple[dict[str, Tensor], Tensor, Stats]:
        """dL_outer(held_out) / d eta through the pending inner updates, the outer loss
        (detached) and its metrics; ``params``: theta now."""

    def after_outer_step(self, params: Params, opt_state: OptState) -> tuple[Params, OptState]:
        """Where training continues from once eta has stepped."""
        return params, opt_state

    def inner_eta(self) -> dict[str, Tensor]:
        return self.meta_step.eta

    @property
    def num_meta_updates(self) -> int:
        return self.meta_step.version

    def state_dict(self) -> dict[str, Any]:
        state = self.meta_step.state_dict()
        return meta_keys(state["meta_net"], state["meta_optimizer"], state["version"])

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.meta_step.load_state_dict(
            {
                "meta_net": state["meta_net"],
                "meta_optimizer": state["meta_optimizer"],
                "version": state["num_meta_updates"],
            }
        )


class ChainSchedule(InlineSchedule):
    """One outer step per M inner steps, which form one differentiable chain (the paper's);
    with ``every`` k > 1, the windows without one take plain inner steps."""

    @property
    def create_graph(self) -> bool:  # type: ignore[override]
        return self.meta_window()

    def record(self, batch: Batch, params: Params, opt_state: OptState) -> None:
        self.pending.append(InnerUpdate(batch))

    def eta_gradient(
        self, held_out: Batch, params: Params
    ) -> tuple[dict[str, Tensor], Tensor, Stats]:
        inner_batches = [update.batch for update in self.pending]
        eta = self.meta_step.eta
        return outer_gradient(
            params, eta, lambda p: self.objective.outer_loss(p, eta, held_out, inner_batches)
        )

    def after_outer_step(self, params: Params, opt_state: OptState) -> tuple[Params, OptState]:
        """theta_M, detached, starts the next chain."""
        self.pending.clear()
        return detach_params(params), {k: v.detach() for k, v in opt_state.items()}


class SampledChainSchedule(InlineSchedule):
    """The chain's windows with the meta-gradient on a sample of the batch's columns: plain
    inner steps, and at a window's end its M inner steps recomputed differentiably on the
    sampled columns from the window's start, then the outer loss on the held-out batch's
    same columns (``meta.batch_fraction`` < 1).

    With every column this is the chain schedule's meta-gradient (forward values do not
    depend on whether a graph is kept); with fewer, it is the meta-gradient of those
    columns alone.
    """

    def record(self, batch: Batch, params: Params, opt_state: OptState) -> None:
        keep = not self.pending  # only the window's start is recomputed from
        self.pending.append(
            InnerUpdate(batch, params if keep else None, opt_state if keep else None)
        )

    def eta_gradient(
        self, held_out: Batch, params: Params
    ) -> tuple[dict[str, Tensor], Tensor, Stats]:
        return _recomputed_eta_gradient(self, held_out)

    def after_outer_step(self, params: Params, opt_state: OptState) -> tuple[Params, OptState]:
        self.pending.clear()
        return params, opt_state


class SlidingSchedule(InlineSchedule):
    """An outer step before every inner step, through the last M inner updates recomputed
    from the parameters M updates ago with the current eta."""

    def record(self, batch: Batch, params: Params, opt_state: OptState) -> None:
        self.pending.append(InnerUpdate(batch, params, opt_state))

    def eta_gradient(
        self, held_out: Batch, params: Params
    ) -> tuple[dict[str, Tensor], Tensor, Stats]:
        return _recomputed_eta_gradient(self, held_out)


def _recomputed_eta_gradient(
    schedule: InlineSchedule, held_out: Batch
) -> tuple[dict[str, Tensor], Tensor, Stats]:
    """dL_outer / d eta through the pending inner updates recomputed differentiably from
    the first one's start with the current eta, on the sampler's columns."""
    first = schedule.pending[0]
    assert first.params is not None and first.opt_state is not None
    columns = schedule.sampler(held_out.shape[1])
    take = schedule.sampler.take
    eta = schedule.meta_step.eta
    objective = schedule.objective
    result = meta_gradient(
        first.params,
        first.opt_state,
        eta,
        [take(update.batch, columns) for update in schedule.pending],
        take(held_out, columns),
        schedule.inner.optimizer,
        lambda p, b: objective.inner_loss(p, eta, b),
        lambda p, b, inner: objective.outer_loss(p, eta, b, inner),
        max_grad_norm=schedule.inner.max_grad_norm,
        reducer=schedule.inner.reducer,
    )
    return result.eta_grads, result.outer_loss, result.outer_aux
