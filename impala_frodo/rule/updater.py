"""The learning rule's state and its one operation, ``update(batch)``.

:class:`Updater` holds theta (the agent's parameters, as tensors), the inner optimizer's
state, eta (the meta-network's parameters) and eta's optimizer. What it computes is
chosen once, from the config, as parts:

- the **objective** (:mod:`impala_frodo.rule.algorithms`): L_inner and L_outer of the
  algorithm, and the meta-network;
- the **meta-schedule** (:mod:`impala_frodo.rule.schedules`): when outer steps come, what
  they differentiate through, whether inner steps keep their graph to eta, and where eta
  is stepped (its :class:`~impala_frodo.rule.meta_step.MetaStep`, or a meta-learner
  beside the learner in async mode, reached through the link the updater is given);
- the **gradient reducer** (:class:`~impala_frodo.rule.metagrad.GradientReducer`): where the
  gradients of several learners are combined; the identity for one learner.

``update(batch)`` takes the outer step first when one is due, then one inner step on the
batch: with the chain schedule every batch thus trains the agent once, the held-out batch
of one chain starting the next. The synchronous trainer and the distributed learner both
drive this class, so they learn by the same rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

from impala_frodo.config.schema import Config
from impala_frodo.networks.agent import AgentNet
from impala_frodo.rule.algorithms import LEARNED_TARGET, make_objective
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.meta_learner import InProcessLink, MetaLearner, MetaLink
from impala_frodo.rule.metagrad import (
    LOCAL,
    GradientReducer,
    InnerRule,
    InnerStep,
    NonFiniteLossError,
    Params,
    check_finite,
    detach_params,
    inner_step,
    make_inner_optimizer,
)
from impala_frodo.rule.schedules import make_schedule
from impala_frodo.utils import map_tensors

__all__ = ["NonFiniteLossError", "Updater", "in_process_link"]


def in_process_link(cfg: Config, obs_shape: Sequence[int], num_actions: int) -> InProcessLink:
    """A meta-learner in this process (``meta.delay_windows`` late; 0: lock-step)."""
    return InProcessLink(
        lambda dtype, device: MetaLearner.build(
            cfg, obs_shape, num_actions, device=device, dtype=dtype
        ),
        cfg.meta.delay_windows,
    )


class Updater:
    """theta, eta and their optimizers' states, updated one batch at a time.

    ``meta_link``: in async mode, where windows go and new etas come from (default: a
    lock-step meta-learner in this process; the distributed driver gives a Ray one).
    """

    def __init__(
        self,
        cfg: Config,
        obs_shape: Sequence[int],
        num_actions: int,
        device: torch.device | str = "cpu",
        reducer: GradientReducer = LOCAL,
        meta_link: MetaLink | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.agent = AgentNet.from_config(obs_shape, num_actions, cfg.agent).to(self.device)
        self.params: Params = detach_params(dict(self.agent.named_parameters()))
        self.inner = InnerRule(make_inner_optimizer(cfg.optim), cfg.optim.max_grad_norm, reducer)
        self.opt_state = self.inner.optimizer.init(self.params)
        self.objective = make_objective(cfg, self.agent, obs_shape, reducer.batch_mean)
        if self.objective.meta_net is not None:
            self.objective.meta_net.to(self.device)
            if cfg.meta.mode == "async" and meta_link is None:
                meta_link = in_process_link(cfg, obs_shape, num_actions)
        self.schedule = make_schedule(
            cfg.meta, self.objective, self.inner, meta_link, seed=cfg.run.seed, every=cfg.meta_every
        )
        #: The learned inner target g ``[T, B]`` of the last update (detached), for
        #: ground-truth probes; ``None`` for algorithms without one.
        self.last_target: Tensor | None = None
        self.num_updates = 0  # inner updates = the policy version

    # ----------------------------------------------------------------- losses
    @property
    def meta_net(self) -> torch.nn.Module | None:
        return self.objective.meta_net

    @property
    def eta(self) -> dict[str, Tensor]:
        return {} if self.meta_net is None else dict(self.meta_net.named_parameters())

    @property
    def num_meta_updates(self) -> int:
        return self.schedule.num_meta_updates

    def inner_loss(self, params: Params, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """L_inner(theta; tau) of the configured algorithm, with eta as the schedule has
        the inner loss see it (detached in async mode: no graph to eta is built)."""
        return self.objective.inner_loss(params, self.schedule.inner_eta(), batch)

    def outer_loss(
        self, params: Params, batch: Batch, inner_batches: Sequence[Batch]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """L_outer(theta_M; tau') of the configured algorithm, with the current eta."""
        return self.objective.outer_loss(params, self.eta, batch, inner_batches)

    # ---------------------------------------------------------------- updates
    def update(self, batch: Batch) -> dict[str, float]:
        """Consume one batch (an outer step first when one is due); returns the metrics."""
        self.params, self.opt_state, stats = self.schedule.before_inner_step(
            batch, self.params, self.opt_state
        )
        step = self._inner_step(batch)
        check_finite("inner loss", step.loss)
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
            self.inner.optimizer,
            lambda p: self.inner_loss(p, batch),
            create_graph=self.schedule.create_graph,
            max_grad_norm=self.inner.max_grad_norm,
            reducer=self.inner.reducer,
        )

    def double(self) -> Updater:
        """The agent, theta, eta and a fresh inner-optimizer state in float64, before any
        update (for checks against references); returns ``self``."""
        self.agent.double()
        if self.meta_net is not None:
            self.meta_net.double()  # in place: eta's optimizer keeps the same parameters
        self.params = detach_params({k: v.double() for k, v in self.params.items()})
        self.opt_state = self.inner.optimizer.init(self.params)
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
        """theta, the inner optimizer's state, the update count and, from the schedule,
        eta, its optimizer's state and its version (``schedules.META_KEYS``)."""
        return map_tensors(torch.Tensor.cpu, self.snapshot())

    def snapshot(self, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """:meth:`state_dict` on this device, theta and the inner optimizer's state not
        copied: an inner step never writes a tensor in place (it makes new ones), so these
        references keep their values (detached: no graph is kept). ``meta``: the
        schedule's part (copies: a meta step writes eta in place), if the caller holds it
        already (it changes only with ``num_meta_updates``)."""
        return {
            "params": {k: v.detach() for k, v in self.params.items()},
            "opt_state": {k: v.detach() for k, v in self.opt_state.items()},
            "num_updates": self.num_updates,
            **(self.schedule.state_dict() if meta is None else meta),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore; a meta chain in progress at save time restarts from the saved theta."""
        self.params = detach_params({k: v.to(self.device) for k, v in state["params"].items()})
        self.opt_state = {k: v.to(self.device) for k, v in state["opt_state"].items()}
        self.schedule.clear()
        self.schedule.load_state_dict(state)
        self.num_updates = int(state["num_updates"])
