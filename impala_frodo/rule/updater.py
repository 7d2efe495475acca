"""The learning rule's state and its one operation, ``update(batch)``.

:class:`Updater` holds theta (the agent's parameters, as tensors), the inner optimizer's
state, eta (the meta-network's parameters) and eta's optimizer. What it computes is
chosen once, from the config, as parts:

- the **objective** (:mod:`impala_frodo.rule.algorithms`): L_inner and L_outer of the
  algorithm, and the meta-network;
- the **meta-schedule** (:mod:`impala_frodo.rule.schedules`): when outer steps come, what
  they differentiate through, and whether inner steps keep their graph to eta;
- the **gradient reducer** (:class:`~impala_frodo.rule.metagrad.GradientReducer`): where the
  gradients of several learners are combined; the identity for one learner.

``update(batch)`` takes the outer step first when one is due, then one inner step on the
batch: with the chain schedule every batch thus trains the agent once, the held-out batch
of one chain starting the next. The synchronous trainer and the distributed learner both
drive this class, so they learn by the same rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

from impala_frodo.config.schema import Config
from impala_frodo.networks.agent import AgentNet
from impala_frodo.rule.algorithms import LEARNED_TARGET, make_objective
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.meta_learner import (
    EtaUpdate,
    InProcessLink,
    MetaLearner,
    MetaLink,
    MetaWindow,
)
from impala_frodo.rule.metagrad import (
    LOCAL,
    GradientReducer,
    InnerStep,
    Params,
    clip_by_global_norm,
    detach_params,
    inner_step,
    make_inner_optimizer,
)
from impala_frodo.rule.schedules import WindowSchedule, make_schedule


class NonFiniteLossError(FloatingPointError):
    """A loss or gradient became NaN or infinite; training must stop."""


class Updater:
    """theta, eta and their optimizers' states, updated one batch at a time."""

    def __init__(
        self,
        cfg: Config,
        obs_shape: Sequence[int],
        num_actions: int,
        device: torch.device | str = "cpu",
        reducer: GradientReducer = LOCAL,
    ) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.agent = AgentNet.from_config(obs_shape, num_actions, cfg.agent).to(self.device)
        self.params: Params = detach_params(dict(self.agent.named_parameters()))
        self.optimizer = make_inner_optimizer(cfg.optim)
        self.opt_state = self.optimizer.init(self.params)
        self.max_grad_norm = cfg.optim.max_grad_norm
        self.reducer = reducer

        self.objective = make_objective(cfg, self.agent, obs_shape, reducer.batch_mean)
        self.meta_net = self.objective.meta_net
        self.meta_optimizer: torch.optim.Optimizer | None = None
        if self.meta_net is not None:
            self.meta_net.to(self.device)
            self.meta_optimizer = torch.optim.Adam(self.meta_net.parameters(), lr=cfg.meta.lr)
        self.schedule = make_schedule(cfg, has_meta_params=self.meta_net is not None)
        #: The learned inner target g ``[T, B]`` of the last update (detached), for
        #: ground-truth probes; ``None`` for algorithms without one.
        self.last_target: Tensor | None = None
        self.num_updates = 0  # inner updates = the policy version
        self.num_meta_updates = 0
        self.obs_shape, self.num_actions = tuple(obs_shape), int(num_actions)
        #: Async mode: where windows go and new etas come from (a lock-step meta-learner in
        #: this process unless one is attached; the distributed driver attaches a Ray one).
        self.meta_link: MetaLink | None = None
        self.meta_windows = 0  # windows handed out (async mode), over the whole run
        self.meta_skipped_before = 0  # windows skipped in earlier sessions

    # ----------------------------------------------------------------- losses
    @property
    def eta(self) -> dict[str, Tensor]:
        return {} if self.meta_net is None else dict(self.meta_net.named_parameters())

    def inner_loss(self, params: Params, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """L_inner(theta; tau) of the configured algorithm, with the current eta (detached
        in async mode: the learner's steps are first-order, and no graph to eta is built)."""
        eta = self.eta
        if isinstance(self.schedule, WindowSchedule):
            eta = {k: v.detach() for k, v in eta.items()}
        return self.objective.inner_loss(params, eta, batch)

    def outer_loss(
        self, params: Params, batch: Batch, inner_batches: Sequence[Batch]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """L_outer(theta_M; tau') of the configured algorithm, with the current eta."""
        return self.objective.outer_loss(params, self.eta, batch, inner_batches)

    # ---------------------------------------------------------------- updates
    def update(self, batch: Batch) -> dict[str, float]:
        """Consume one batch (an outer step first when one is due); returns the metrics."""
        stats: dict[str, Tensor] = {}
        if isinstance(self.schedule, WindowSchedule):
            stats |= self._exchange_window(batch)
        elif self.schedule.outer_step_due():
            stats |= self._outer_step(batch)
        step = self._inner_step(batch)
        self._check_finite("inner loss", step.loss)
        self.schedule.record(batch, self.params, self.opt_state)
        self.params, self.opt_state = step.params, step.opt_state
        self.num_updates += 1
        stats |= step.aux
        self.last_target = stats.pop(LEARNED_TARGET, None)
        stats["loss/inner"] = step.loss
        stats["perf/grad_norm"] = step.grad_norm
        names = list(stats)
        values = torch.stack([v.float().reshape(()) for v in stats.values()]).tolist()
        return dict(zip(names, values, strict=True))

    def _inner_step(self, batch: Batch) -> InnerStep:
        return inner_step(
            self.params,
            self.opt_state,
            self.optimizer,
            lambda p: self.inner_loss(p, batch),
            create_graph=self.schedule.create_graph,
            max_grad_norm=self.max_grad_norm,
            reducer=self.reducer,
        )

    def _outer_step(self, held_out: Batch) -> dict[str, Tensor]:
        """eta's gradient on the held-out batch, combined, clipped and applied."""
        eta = self.eta
        gradient = self.schedule.eta_gradient(self, held_out)
        self._check_finite("outer loss", gradient.outer_loss)
        grads = self.reducer.meta(list(gradient.grads.values()))
        grads, norm = clip_by_global_norm(grads, self.cfg.meta.max_grad_norm)
        self._check_finite("meta-gradient", norm)
        for p, g in zip(eta.values(), grads, strict=True):
            p.grad = g
        self.meta_optimizer.step()
        self.meta_optimizer.zero_grad(set_to_none=True)
        self.params, self.opt_state = self.schedule.after_outer_step(self.params, self.opt_state)
        self.num_meta_updates += 1
        return gradient.stats | {"loss/outer": gradient.outer_loss, "meta/grad_norm": norm}

    # ------------------------------------------------------ async meta-learner
    def _exchange_window(self, batch: Batch) -> dict[str, Tensor]:
        """Hand out the completed window (``batch`` is its held-out batch), then install a
        new eta if one has come back: in lock-step, this window's, before ``batch``'s
        inner step, as the chain schedule has it."""
        link = self._link()
        if self.schedule.outer_step_due():
            link.send(self.take_window(batch))
        stats = {"meta/skipped_windows": torch.tensor(float(self.meta_skipped))}
        update = link.poll()
        if update is not None:
            stats |= self.install_eta(update)
        return stats

    def take_window(self, held_out: Batch) -> MetaWindow:
        """The window of the last M inner updates with ``held_out``; a new one starts."""
        params, opt_state, batches = self.schedule.take_window()
        window = MetaWindow(self.meta_windows, params, opt_state, batches, held_out)
        self.meta_windows += 1
        return window

    def install_eta(self, update: EtaUpdate) -> dict[str, Tensor]:
        """Take the meta-learner's eta and Adam state; returns its metrics, with the meta
        lag (windows handed out since the one it was computed on)."""
        self.meta_net.load_state_dict(update.state["meta_net"])
        self.meta_optimizer.load_state_dict(update.state["meta_optimizer"])
        self.num_meta_updates = update.version
        stats = {k: torch.tensor(v) for k, v in update.stats.items()}
        stats["meta/lag"] = torch.tensor(float(self.meta_windows - update.window - 1))
        stats["perf/meta_step_s"] = torch.tensor(update.seconds)
        return stats

    def meta_state(self) -> dict[str, Any]:
        """eta, Adam's state and eta's version: what a meta-learner starts from."""
        return {
            "meta_net": self.meta_net.state_dict(),
            "meta_optimizer": self.meta_optimizer.state_dict(),
            "version": self.num_meta_updates,
        }

    @property
    def meta_skipped(self) -> int:
        """Windows skipped because the meta-learner was behind, over the whole run."""
        return self.meta_skipped_before + (0 if self.meta_link is None else self.meta_link.skipped)

    def _link(self) -> MetaLink:
        """The attached link, or a lock-step meta-learner in this process (made once)."""
        if self.meta_link is None:
            dtype = next(iter(self.eta.values())).dtype
            meta_learner = MetaLearner(
                self.cfg, self.obs_shape, self.num_actions, device=self.device, dtype=dtype
            )
            meta_learner.load_state_dict(self.meta_state())
            self.meta_link = InProcessLink(meta_learner, self.cfg.meta.delay_windows)
        return self.meta_link

    @staticmethod
    def _check_finite(what: str, value: Tensor) -> None:
        if not torch.isfinite(value).all():
            raise NonFiniteLossError(f"{what} is not finite ({value.item()}): stopping")

    def double(self) -> Updater:
        """The agent, theta, eta and a fresh inner-optimizer state in float64, before any
        update (for checks against references); returns ``self``."""
        self.agent.double()
        if self.meta_net is not None:
            self.meta_net.double()  # in place: eta's optimizer keeps the same parameters
        self.params = detach_params({k: v.double() for k, v in self.params.items()})
        self.opt_state = self.optimizer.init(self.params)
        return self

    # ----------------------------------------------------------------- acting
    def acting_params(self, device: torch.device | str | None = None) -> dict[str, Tensor]:
        """Detached copies of theta for acting (CPU for actors)."""
        return {k: v.detach().to(device or self.device) for k, v in self.params.items()}

    @torch.no_grad()
    def values(self, obs: Tensor) -> Tensor:
        """V_theta(obs) ``[N]`` for evaluation."""
        _, values = functional_call(self.agent, self.acting_params(), (obs.to(self.device),))
        return values

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "params": self.acting_params("cpu"),
            "opt_state": {k: v.detach().cpu() for k, v in self.opt_state.items()},
            "meta_net": None if self.meta_net is None else self.meta_net.state_dict(),
            "meta_optimizer": None
            if self.meta_optimizer is None
            else self.meta_optimizer.state_dict(),
            "num_updates": self.num_updates,
            "num_meta_updates": self.num_meta_updates,
            "meta_windows": self.meta_windows,
            "meta_skipped": self.meta_skipped,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore; a meta chain in progress at save time restarts from the saved theta."""
        self.params = detach_params({k: v.to(self.device) for k, v in state["params"].items()})
        self.opt_state = {k: v.to(self.device) for k, v in state["opt_state"].items()}
        if self.meta_net is not None:
            self.meta_net.load_state_dict(state["meta_net"])
            self.meta_optimizer.load_state_dict(state["meta_optimizer"])
        self.schedule.clear()
        self.num_updates = int(state["num_updates"])
        self.num_meta_updates = int(state["num_meta_updates"])
        self.meta_windows = int(state.get("meta_windows", 0))
        self.meta_skipped_before = int(state.get("meta_skipped", 0))
        if self.meta_link is not None:  # the meta-learner starts from the restored eta
            self.meta_skipped_before -= self.meta_link.skipped
            self.meta_link.load_state_dict(self.meta_state())
