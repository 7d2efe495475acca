"""Meta-schedules: when the outer step comes, what it differentiates through, and where
eta lives.

A schedule is built with what it uses (the objective, the inner rule, and its meta step
or its link to a meta-learner) and serves the :class:`~impala_frodo.rule.updater.Updater`
through one protocol, :class:`MetaSchedule`: before each inner step it takes the outer
step that is due (:meth:`~MetaSchedule.before_inner_step`), after it records the inner
update (:meth:`~MetaSchedule.record`); it says which eta the inner loss sees, whether an
inner step keeps its graph to eta, and what of eta a checkpoint holds.

- :class:`NoMeta`: nothing to meta-learn (IMPALA): plain inner steps, no outer step.
- :class:`ChainSchedule` (the paper's): M inner steps form one differentiable chain;
  the (M+1)-th batch is held out, the outer loss on it at theta_M is differentiated back
  to eta, theta_M is detached and the same batch starts the next chain.
- :class:`SlidingSchedule`: plain inner steps; before each one, once M are recorded, an
  outer step on the new batch through the last M updates, recomputed differentiably
  from the parameters M updates ago with the current eta.
- :class:`WindowSchedule` (``meta.mode = "async"``): plain inner steps with eta
  detached; every M of them, with the next batch held out, form a window handed to a
  meta-learner through a :class:`~impala_frodo.rule.meta_learner.MetaLink`; the eta it
  sends back is installed here.

The chain and sliding schedules apply their meta-gradient through a
:class:`~impala_frodo.rule.meta_step.MetaStep`, as the async meta-learner does.
Adding a schedule adds a class and a line in :data:`SCHEDULES`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from impala_frodo.config.sections import MetaConfig
from impala_frodo.rule.algorithms import Objective
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.meta_learner import EtaUpdate, MetaLink, MetaWindow
from impala_frodo.rule.meta_step import MetaStep
from impala_frodo.rule.metagrad import (
    InnerRule,
    OptState,
    Params,
    detach_params,
    meta_gradient,
    outer_gradient,
)

Stats = dict[str, Tensor]
#: What an updater's state holds of eta (:meth:`MetaSchedule.state_dict`).
META_KEYS = ("meta_net", "meta_optimizer", "num_meta_updates", "meta_windows", "meta_skipped")


def meta_keys(
    meta_net: Mapping[str, Tensor] | None,
    meta_optimizer: dict[str, Any] | None,
    version: int,
    *,
    windows: int = 0,
    skipped: int = 0,
) -> dict[str, Any]:
    """The :data:`META_KEYS` of an updater's state."""
    values = (meta_net, meta_optimizer, version, windows, skipped)
    return dict(zip(META_KEYS, values, strict=True))


@dataclass(frozen=True)
class InnerUpdate:
    """An inner update an outer step differentiates through: its batch, and (where the
    schedule recomputes it) theta and the optimizer state it started from."""

    batch: Batch
    params: Params | None = None
    opt_state: OptState | None = None


class MetaSchedule(ABC):
    """The pending inner updates of the next outer step, how it is taken, and eta."""

    #: Inner steps keep their graph to eta (the outer step differentiates through them).
    create_graph: bool = False

    def __init__(self, num_inner_steps: int) -> None:
        self.num_inner_steps = num_inner_steps
        self.pending: deque[InnerUpdate] = deque(maxlen=num_inner_steps)

    def outer_step_due(self) -> bool:
        """An outer step comes before the next inner step (M updates are pending)."""
        return len(self.pending) == self.num_inner_steps

    @abstractmethod
    def before_inner_step(
        self, held_out: Batch, params: Params, opt_state: OptState
    ) -> tuple[Params, OptState, Stats]:
        """The outer step due before the inner step on ``held_out``, if any: where training
        continues from, and the step's metrics."""

    @abstractmethod
    def record(self, batch: Batch, params: Params, opt_state: OptState) -> None:
        """An inner update on ``batch`` was taken from ``params`` and ``opt_state``."""

    @abstractmethod
    def inner_eta(self) -> dict[str, Tensor]:
        """eta as the inner loss sees it (with or without its graph)."""

    @property
    @abstractmethod
    def num_meta_updates(self) -> int:
        """eta's version: the meta steps taken over the whole run."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint holds of eta, as the updater's state has it (:data:`META_KEYS`:
        eta, its optimizer's state, its version, the async windows handed out and skipped)."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from an updater's state (the :data:`META_KEYS` of
        :meth:`~impala_frodo.rule.updater.Updater.state_dict`)."""

    def clear(self) -> None:
        """Forget the pending updates (a restored state starts a fresh window)."""
        self.pending.clear()


class NoMeta(MetaSchedule):
    """No meta-parameters: plain inner steps, never an outer step."""

    def before_inner_step(
        self, held_out: Batch, params: Params, opt_state: OptState
    ) -> tuple[Params, OptState, Stats]:
        return params, opt_state, {}

    def record(self, batch: Batch, params: Params, opt_state: OptState) -> None:
        pass

    def inner_eta(self) -> dict[str, Tensor]:
        return {}

    @property
    def num_meta_updates(self) -> int:
        return 0

    def state_dict(self) -> dict[str, Any]:
        return meta_keys(None, None, 0)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


class InlineSchedule(MetaSchedule):
    """An outer step taken here, in the learner's update, through a :class:`MetaStep`."""

    def __init__(
        self, num_inner_steps: int, objective: Objective, inner: InnerRule, meta_step: MetaStep
    ) -> None:
        super().__init__(num_inner_steps)
        self.objective = objective
        self.inner = inner
        self.meta_step = meta_step

    def before_inner_step(
        self, held_out: Batch, params: Params, opt_state: OptState
    ) -> tuple[Params, OptState, Stats]:
        if not self.outer_step_due():
            return params, opt_state, {}
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
    """One outer step per M inner steps, which form one differentiable chain (the paper's)."""

    create_graph = True

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


class SlidingSchedule(InlineSchedule):
    """An outer step before every inner step, through the last M inner updates recomputed
    from the parameters M updates ago with the current eta."""

    def record(self, batch: Batch, params: Params, opt_state: OptState) -> None:
        self.pending.append(InnerUpdate(batch, params, opt_state))

    def eta_gradient(
        self, held_out: Batch, params: Params
    ) -> tuple[dict[str, Tensor], Tensor, Stats]:
        first = self.pending[0]
        assert first.params is not None and first.opt_state is not None
        eta = self.meta_step.eta
        result = meta_gradient(
            first.params,
            first.opt_state,
            eta,
            [update.batch for update in self.pending],
            held_out,
            self.inner.optimizer,
            lambda p, b: self.objective.inner_loss(p, eta, b),
            lambda p, b, inner: self.objective.outer_loss(p, eta, b, inner),
            max_grad_norm=self.inner.max_grad_norm,
            reducer=self.inner.reducer,
        )
        return result.eta_grads, result.outer_loss, result.outer_aux


class WindowSchedule(MetaSchedule):
    """The chain schedule's windows without its graph, for a meta-learner beside the
    learner: plain inner steps with eta detached; every M of them, with the next batch
    held out, sent through ``link``; each eta that comes back installed in ``meta_net``.

    The learner holds eta and the meta-learner's last state (for checkpoints), never an
    optimizer of its own. The link starts from the learner's eta when the first window's
    exchange begins, and again from a restored state.
    """

    def __init__(self, num_inner_steps: int, meta_net: nn.Module, link: MetaLink) -> None:
        super().__init__(num_inner_steps)
        self.meta_net = meta_net
        self.link = link
        self.windows = 0  # windows handed out, over the whole run
        self.skipped_before = 0  # windows skipped in earlier sessions
        self._optimizer_state: dict[str, Any] | None = None  # the meta-learner's, last seen
        self._version = 0
        self._link_started = False

    def before_inner_step(
        self, held_out: Batch, params: Params, opt_state: OptState
    ) -> tuple[Params, OptState, Stats]:
        """Hand out the completed window (``held_out`` is its held-out batch), then install
        a new eta if one has come back: in lock-step, this window's, before
        ``held_out``'s inner step, as the chain schedule has it."""
        if not self._link_started:
            self._start_link()
        if self.outer_step_due():
            self.link.send(self.take_window(held_out))
        stats = {"meta/skipped_windows": torch.tensor(float(self.skipped))}
        update = self.link.poll()
        if update is not None:
            stats |= self.install(update)
        return params, opt_state, stats

    def record(self, batch: Batch, params: Params, opt_state: OptState) -> None:
        keep = not self.pending  # only the window's start is recomputed from
        self.pending.append(
            InnerUpdate(batch, params if keep else None, opt_state if keep else None)
        )

    def take_window(self, held_out: Batch) -> MetaWindow:
        """The window of the last M inner updates with ``held_out``; a new one starts."""
        first = self.pending[0]
        assert first.params is not None and first.opt_state is not None
        batches = [update.batch for update in self.pending]
        self.pending.clear()
        window = MetaWindow(self.windows, first.params, first.opt_state, batches, held_out)
        self.windows += 1
        return window

    def install(self, update: EtaUpdate) -> Stats:
        """Take the meta-learner's eta and state; its metrics, with the meta lag (windows
        handed out since the one it was computed on)."""
        self.meta_net.load_state_dict(update.state["meta_net"])
        self._optimizer_state = update.state["meta_optimizer"]
        self._version = update.version
        stats = {k: torch.tensor(v) for k, v in update.stats.items()}
        stats["meta/lag"] = torch.tensor(float(self.windows - update.window - 1))
        stats["perf/meta_step_s"] = torch.tensor(update.seconds)
        return stats

    def inner_eta(self) -> dict[str, Tensor]:
        """eta detached: the learner's steps are first-order, no graph to eta is built."""
        return {k: v.detach() for k, v in self.meta_net.named_parameters()}

    @property
    def num_meta_updates(self) -> int:
        return self._version

    @property
    def skipped(self) -> int:
        """Windows skipped because the meta-learner was behind, over the whole run."""
        return self.skipped_before + self.link.skipped

    def meta_state(self) -> dict[str, Any]:
        """eta, the meta-learner's optimizer state as last received (``None`` before the
        first) and eta's version: what a meta-learner starts from."""
        return {
            "meta_net": self.meta_net.state_dict(),
            "meta_optimizer": self._optimizer_state,
            "version": self._version,
        }

    def state_dict(self) -> dict[str, Any]:
        return meta_keys(
            self.meta_net.state_dict(),
            self._optimizer_state,
            self._version,
            windows=self.windows,
            skipped=self.skipped,
        )

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.meta_net.load_state_dict(state["meta_net"])
        self._optimizer_state = state["meta_optimizer"]
        self._version = int(state["num_meta_updates"])
        self.windows = int(state.get("meta_windows", 0))
        self.skipped_before = int(state.get("meta_skipped", 0)) - self.link.skipped
        self._start_link()

    def _start_link(self) -> None:
        self.link.load_state_dict(self.meta_state())
        self._link_started = True


#: The inline schedule of each ``meta.schedule``.
SCHEDULES: Mapping[str, type[InlineSchedule]] = {
    "chain": ChainSchedule,
    "sliding": SlidingSchedule,
}


def make_schedule(
    meta: MetaConfig, objective: Objective, inner: InnerRule, link: MetaLink | None = None
) -> MetaSchedule:
    """:class:`NoMeta` when the objective has nothing to meta-learn; in async mode a
    :class:`WindowSchedule` on ``link``; else ``meta.schedule``'s, with its meta step."""
    meta_net = objective.meta_net
    if meta_net is None:
        return NoMeta(meta.num_inner_steps)
    if meta.mode == "async":
        if link is None:
            raise ValueError("meta.mode = 'async' needs a link to a meta-learner")
        return WindowSchedule(meta.num_inner_steps, meta_net, link)
    meta_step = MetaStep(
        meta_net, lr=meta.lr, max_grad_norm=meta.max_grad_norm, reducer=inner.reducer
    )
    return SCHEDULES[meta.schedule](meta.num_inner_steps, objective, inner, meta_step)
