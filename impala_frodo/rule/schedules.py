"""Meta-schedules: when the outer step comes and which inner updates it differentiates.

A schedule owns the inner updates the next outer step goes through, decides whether an
inner step keeps its graph to eta (``create_graph``), computes eta's gradient on the
held-out batch, and says where training continues from after the outer step.

- :class:`NoMeta`: nothing to meta-learn (IMPALA): plain inner steps, no outer step.
- :class:`ChainSchedule` (the paper's): M inner steps form one differentiable chain;
  the (M+1)-th batch is held out, the outer loss on it at theta_M is differentiated back
  to eta, theta_M is detached and the same batch starts the next chain.
- :class:`SlidingSchedule`: plain inner steps; before each one, once M are recorded, an
  outer step on the new batch through the last M updates, recomputed differentiably
  from the parameters M updates ago with the current eta.
- :class:`WindowSchedule` (``meta.mode = "async"``): plain inner steps; every M of them,
  with the next batch held out, form a window that the updater hands to a meta-learner
  (:mod:`impala_frodo.rule.meta_learner`), which takes the outer step.

Adding a schedule adds a class and a line in :data:`SCHEDULES`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from torch import Tensor

from impala_frodo.config.schema import Config
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.metagrad import (
    DifferentiableOptimizer,
    GradientReducer,
    OptState,
    Params,
    detach_params,
    meta_gradient,
    outer_gradient,
)

Stats = dict[str, Tensor]


@dataclass(frozen=True)
class InnerUpdate:
    """An inner update an outer step differentiates through: its batch, and (where the
    schedule recomputes it) theta and the optimizer state it started from."""

    batch: Batch
    params: Params | None = None
    opt_state: OptState | None = None


@dataclass
class EtaGradient:
    grads: dict[str, Tensor]  # dL_outer / d eta, by eta's parameter name
    outer_loss: Tensor  # detached
    stats: Stats


class LearningRule(Protocol):
    """What a schedule needs of the rule it serves (:class:`~impala_frodo.rule.updater.Updater`)."""

    params: Params
    opt_state: OptState
    optimizer: DifferentiableOptimizer
    reducer: GradientReducer
    max_grad_norm: float

    @property
    def eta(self) -> dict[str, Tensor]: ...

    def inner_loss(self, params: Params, batch: Batch) -> tuple[Tensor, Stats]: ...

    def outer_loss(
        self, params: Params, batch: Batch, inner_batches: list[Batch]
    ) -> tuple[Tensor, Stats]: ...


class MetaSchedule(ABC):
    """The pending inner updates of the next outer step, and how it is taken."""

    #: Inner steps keep their graph to eta (the outer step differentiates through them).
    create_graph: bool = False

    def __init__(self, num_inner_steps: int) -> None:
        self.num_inner_steps = num_inner_steps
        self.pending: deque[InnerUpdate] = deque(maxlen=num_inner_steps)

    def outer_step_due(self) -> bool:
        """An outer step comes before the next inner step (M updates are pending)."""
        return len(self.pending) == self.num_inner_steps

    @abstractmethod
    def record(self, batch: Batch, params: Params, opt_state: OptState) -> None:
        """An inner update on ``batch`` was taken from ``params`` and ``opt_state``."""

    @abstractmethod
    def eta_gradient(self, rule: LearningRule, held_out: Batch) -> EtaGradient:
        """dL_outer(held_out) / d eta through the pending inner updates."""

    def after_outer_step(self, params: Params, opt_state: OptState) -> tuple[Params, OptState]:
        """Where training continues from once eta has stepped."""
        return params, opt_state

    def clear(self) -> None:
        """Forget the pending updates (a restored state starts a fresh window)."""
        self.pending.clear()


class NoMeta(MetaSchedule):
    """No meta-parameters: plain inner steps, never an outer step."""

    def outer_step_due(self) -> bool:
        return False

    def record(self, batch: Batch, params: Params, opt_state: OptState) -> None:
        pass

    def eta_gradient(self, rule: LearningRule, held_out: Batch) -> EtaGradient:
        raise RuntimeError("no outer step without meta-parameters")


class ChainSchedule(MetaSchedule):
    """One outer step per M inner steps, which form one differentiable chain (the paper's)."""

    create_graph = True

    def record(self, batch: Batch, params: Params, opt_state: OptState) -> None:
        self.pending.append(InnerUpdate(batch))

    def eta_gradient(self, rule: LearningRule, held_out: Batch) -> EtaGradient:
        inner_batches = [update.batch for update in self.pending]
        grads, loss, stats = outer_gradient(
            rule.params, rule.eta, lambda p: rule.outer_loss(p, held_out, inner_batches)
        )
        return EtaGradient(grads, loss, stats)

    def after_outer_step(self, params: Params, opt_state: OptState) -> tuple[Params, OptState]:
        """theta_M, detached, starts the next chain."""
        self.pending.clear()
        return detach_params(params), {k: v.detach() for k, v in opt_state.items()}


class SlidingSchedule(MetaSchedule):
    """An outer step before every inner step, through the last M inner updates recomputed
    from the parameters M updates ago with the current eta."""

    def record(self, batch: Batch, params: Params, opt_state: OptState) -> None:
        self.pending.append(InnerUpdate(batch, params, opt_state))

    def eta_gradient(self, rule: LearningRule, held_out: Batch) -> EtaGradient:
        first = self.pending[0]
        assert first.params is not None and first.opt_state is not None
        result = meta_gradient(
            first.params,
            first.opt_state,
            rule.eta,
            [update.batch for update in self.pending],
            held_out,
            rule.optimizer,
            rule.inner_loss,
            rule.outer_loss,
            max_grad_norm=rule.max_grad_norm,
            reducer=rule.reducer,
        )
        return EtaGradient(result.eta_grads, result.outer_loss, result.outer_aux)


class WindowSchedule(MetaSchedule):
    """The chain schedule's windows without its graph: plain inner steps, and every M of
    them handed out (:meth:`take_window`) for a meta-learner to recompute and differentiate."""

    def record(self, batch: Batch, params: Params, opt_state: OptState) -> None:
        keep = not self.pending  # only the window's start is recomputed from
        self.pending.append(
            InnerUpdate(batch, params if keep else None, opt_state if keep else None)
        )

    def take_window(self) -> tuple[Params, OptState, list[Batch]]:
        """theta and the optimizer state at the window's start and its M batches; the
        next inner update starts a new window."""
        first = self.pending[0]
        assert first.params is not None and first.opt_state is not None
        batches = [update.batch for update in self.pending]
        self.pending.clear()
        return first.params, first.opt_state, batches

    def eta_gradient(self, rule: LearningRule, held_out: Batch) -> EtaGradient:
        raise RuntimeError("in async mode the meta-learner takes eta's gradient")


#: The schedule of each ``meta.schedule``.
SCHEDULES: Mapping[str, type[MetaSchedule]] = {
    "chain": ChainSchedule,
    "sliding": SlidingSchedule,
}


def make_schedule(cfg: Config, has_meta_params: bool) -> MetaSchedule:
    """``cfg.meta.schedule``'s schedule, :class:`WindowSchedule` in async mode, or
    :class:`NoMeta` when there is nothing to learn."""
    kind = SCHEDULES[cfg.meta.schedule] if has_meta_params else NoMeta
    if has_meta_params and cfg.meta.mode == "async":
        kind = WindowSchedule
    return kind(cfg.meta.num_inner_steps)
