"""The learning rule of every algorithm, with no notion of actors or Ray.

:class:`Updater` owns theta (the agent's parameters, as tensors), the inner
optimizer's state, eta (FRODO's meta-network or MGRL's gamma and lambda) and
eta's optimizer. ``update(batch)`` consumes one batch:

- IMPALA: one V-trace actor-critic step.
- Meta-algorithms, ``meta.schedule = "chain"`` (the paper's): an inner step
  that keeps its graph to eta; the inner steps chain, so after M of them
  theta_M is a differentiable function of eta. The (M+1)-th batch is held
  out: the outer loss on it at theta_M is differentiated back to eta, eta
  takes one optimizer step, theta_M is detached, and the same batch then
  starts the next chain with an inner step. Every batch thus trains the
  agent once, and the policy improves after every batch (acting uses the
  detached current theta).
- ``meta.schedule = "sliding"``: plain inner steps, and before each one an
  outer step on the new batch, differentiated through the last M inner
  updates, recomputed from the parameters M updates ago with the current eta.

The synchronous trainer and the distributed learner both drive this class,
so they learn by the same rule.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

from impala_frodo import objectives as obj
from impala_frodo.batch import Batch
from impala_frodo.config import RESIDUAL_FORMS, Config
from impala_frodo.metagrad import (
    OptState,
    Params,
    clip_by_global_norm,
    detach_params,
    inner_step,
    make_inner_optimizer,
    meta_gradient,
    outer_gradient,
)
from impala_frodo.networks import AgentNet, MetaNet, MGRLMeta


class NonFiniteLossError(FloatingPointError):
    """A loss or gradient became NaN or infinite; training must stop."""


@dataclass
class _Pending:
    """An inner update the next outer step differentiates through."""

    batch: Batch
    params: Params | None = None  # theta before the update ("sliding" only)
    opt_state: OptState | None = None


def true_step_values(batch: Batch) -> Tensor | None:
    """True V(x_t) ``[T, B]`` where the batch carries true state values and one-hot
    observations (the random walk); else ``None``."""
    if batch.true_values is None:
        return None
    obs = batch.obs[:-1].flatten(2)
    if obs.shape[-1] != batch.true_values.numel():
        return None
    return obs @ batch.true_values


class Updater:
    def __init__(
        self,
        cfg: Config,
        obs_shape: Sequence[int],
        num_actions: int,
        device: torch.device | str = "cpu",
    ) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.agent = AgentNet.from_config(obs_shape, num_actions, cfg.agent).to(self.device)
        self.params: Params = detach_params(dict(self.agent.named_parameters()))
        self.optimizer = make_inner_optimizer(cfg.optim)
        self.opt_state = self.optimizer.init(self.params)

        self.meta_net: torch.nn.Module | None = None
        if cfg.algo in ("frodo", "frodo-ext"):
            self.meta_net = MetaNet(
                obs_shape,
                cfg.meta.hidden_size,
                ratio_input=cfg.meta.ratio_input,
                zero_init_head=cfg.meta.target != "plain",
                embed_size=cfg.meta.embed_size,
                embed_channels=cfg.meta.embed_channels,
            )
        elif cfg.algo == "mgrl":
            self.meta_net = MGRLMeta(cfg.meta.mgrl_init_gamma, cfg.meta.mgrl_init_lambda)
        self.meta_optimizer: torch.optim.Optimizer | None = None
        if self.meta_net is not None:
            self.meta_net.to(self.device)
            self.meta_optimizer = torch.optim.Adam(self.meta_net.parameters(), lr=cfg.meta.lr)

        # Inner updates the next outer step differentiates through: the chain since theta
        # was last detached, or the sliding window of the last M updates.
        self._pending: deque[_Pending] = deque(maxlen=cfg.meta.num_inner_steps)
        self.num_updates = 0  # inner updates = the policy version
        self.num_meta_updates = 0

    # ----------------------------------------------------------------- losses
    @property
    def eta(self) -> dict[str, Tensor]:
        return {} if self.meta_net is None else dict(self.meta_net.named_parameters())

    def inner_loss(self, params: Params, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """L_inner(theta; tau) of the configured algorithm; a function of eta too.

        The second value holds detached scalars for logging.
        """
        cfg = self.cfg
        out = obj.evaluate_agent(self.agent, params, batch)
        stats: dict[str, Tensor] = {}
        if cfg.algo in ("frodo", "frodo-ext"):
            policy = self.policy_terms(batch, out)
            target, canonical = self.frodo_target(batch, out, policy)
            terms = obj.frodo_inner_loss(batch, out, target, cfg.loss, task=cfg.task, policy=policy)
            stats |= obj.target_diagnostics(target, canonical)
            stats["meta/target_mean"] = target.detach().mean()
            true_values = true_step_values(batch)
            if true_values is not None:
                stats["eval/target_rmse"] = (target.detach() - true_values).square().mean().sqrt()
        elif cfg.algo == "mgrl":
            gamma, lambda_ = functional_call(self.meta_net, self.eta, ())
            terms, vt = obj.vtrace_loss(
                batch, out, cfg.loss, task=cfg.task, gamma=gamma, lambda_=lambda_
            )
            canonical = self.canonical_returns(batch, out, self.policy_terms(batch, out))
            stats |= obj.target_diagnostics(vt.vs, canonical)
            stats["meta/gamma"], stats["meta/lambda"] = gamma.detach(), lambda_.detach()
        else:
            terms, vt = obj.vtrace_loss(batch, out, cfg.loss, task=cfg.task)
            stats["meta/target_mean"] = vt.vs.mean()
        stats |= {
            "loss/policy": terms.policy.detach(),
            "loss/value": terms.value.detach(),
            "loss/entropy": terms.entropy.detach(),
        }
        return terms.total, stats

    def policy_terms(self, batch: Batch, out: obj.AgentOutputs) -> tuple[Tensor, Tensor] | None:
        """``(log pi(a_t|x_t), H(pi(.|x_t)))`` in control; ``None`` in prediction (the
        behaviour's actions do not matter there: on-policy targets)."""
        if self.cfg.task != "control":
            return None
        return obj.policy_terms(out.logits, batch.actions)

    def canonical_returns(
        self, batch: Batch, out: obj.AgentOutputs, policy: tuple[Tensor, Tensor] | None
    ) -> Tensor:
        """The canonical V-trace target v_s ``[T, B]`` (fixed gamma, lambda; on-policy in
        prediction), a constant of theta and eta. ``policy``: :meth:`policy_terms`."""
        loss = self.cfg.loss
        log_pi_a = None if policy is None else policy[0]
        return obj.vtrace_returns(
            batch, out, log_pi_a, loss, gamma=loss.gamma, lambda_=loss.lambda_
        ).vs

    def frodo_target(
        self,
        batch: Batch,
        out: obj.AgentOutputs,
        policy: tuple[Tensor, Tensor] | None,
        canonical: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """FRODO's target g (graph to eta) in the configured form, and the canonical v_s
        (computed unless given). ``policy``: :meth:`policy_terms`."""
        meta = self.cfg.meta
        if canonical is None:
            canonical = self.canonical_returns(batch, out, policy)
        log_rhos = None
        if meta.ratio_input:
            log_rhos = torch.zeros_like(batch.rewards)
            if policy is not None:
                log_rhos = policy[0] - batch.behaviour_log_probs
        target = obj.meta_target(
            self.meta_net,
            self.eta,
            batch,
            out,
            self.cfg.loss.gamma,
            canonical=canonical if meta.target in RESIDUAL_FORMS else None,
            log_rhos=log_rhos,
            centre=meta.target == "residual-centred",
        )
        return target, canonical

    def outer_loss(
        self, params: Params, batch: Batch, inner_batches: Sequence[Batch]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """L_outer(theta_M; tau'): canonical V-trace loss (+ beta L_revise for the extension,
        + the consistency term w 1/2 (g - sg(v_s))^2 on tau' when ``meta.consistency_cost``)."""
        cfg = self.cfg
        out = obj.evaluate_agent(self.agent, params, batch)
        terms, vt = obj.vtrace_loss(
            batch, out, cfg.loss, task=cfg.task, value_cost=cfg.loss.outer_value_cost
        )
        loss, stats = terms.total, {"loss/outer_canonical": terms.total.detach()}
        if cfg.algo == "frodo-ext":
            revise = torch.stack(
                [
                    obj.vtrace_loss(
                        b, obj.evaluate_agent(self.agent, params, b), cfg.loss, task=cfg.task
                    )[0].total
                    for b in inner_batches
                ]
            ).mean()
            beta = obj.extension_beta(
                terms.total,
                b1=cfg.meta.ext_b1,
                mode=cfg.meta.ext_beta_mode,
                beta_max=cfg.meta.ext_beta_max,
                eps=cfg.meta.ext_eps,
            )
            loss = loss + beta * revise
            stats |= {"meta/beta": beta.detach(), "loss/revise": revise.detach()}
        if cfg.algo in ("frodo", "frodo-ext") and cfg.meta.consistency_cost > 0:
            policy = self.policy_terms(batch, out) if cfg.meta.ratio_input else None
            target, canonical = self.frodo_target(batch, out, policy, canonical=vt.vs)
            consistency = 0.5 * (target - canonical).square().mean()
            loss = loss + cfg.meta.consistency_cost * consistency
            stats["loss/consistency"] = consistency.detach()
        return loss, stats

    # ---------------------------------------------------------------- updates
    def update(self, batch: Batch) -> dict[str, float]:
        """Consume one batch (an outer step first when M inner steps are pending)."""
        stats: dict[str, Tensor] = {}
        meta = self.meta_net is not None
        sliding = self.cfg.meta.schedule == "sliding"
        if meta and len(self._pending) == self.cfg.meta.num_inner_steps:
            stats |= self._meta_step(batch)
        before = _Pending(batch, self.params, self.opt_state) if sliding else _Pending(batch)
        step = inner_step(
            self.params,
            self.opt_state,
            self.optimizer,
            lambda p: self.inner_loss(p, batch),
            create_graph=meta and not sliding,
            max_grad_norm=self.cfg.optim.max_grad_norm,
        )
        self._check_finite("inner loss", step.loss)
        self.params, self.opt_state = step.params, step.opt_state
        if meta:
            self._pending.append(before)
        self.num_updates += 1
        stats |= step.aux
        stats["loss/inner"] = step.loss
        stats["perf/grad_norm"] = step.grad_norm
        names = list(stats)
        values = torch.stack([v.float().reshape(()) for v in stats.values()]).tolist()
        return dict(zip(names, values, strict=True))

    def _meta_step(self, held_out: Batch) -> dict[str, Tensor]:
        eta = self.eta
        inner_batches = [p.batch for p in self._pending]
        if self.cfg.meta.schedule == "sliding":
            first = self._pending[0]
            result = meta_gradient(
                first.params,
                first.opt_state,
                eta,
                inner_batches,
                held_out,
                self.optimizer,
                self.inner_loss,
                self.outer_loss,
                max_grad_norm=self.cfg.optim.max_grad_norm,
            )
            eta_grads, outer_loss, stats = result.eta_grads, result.outer_loss, result.outer_aux
        else:
            eta_grads, outer_loss, stats = outer_gradient(
                self.params, eta, lambda p: self.outer_loss(p, held_out, inner_batches)
            )
        self._check_finite("outer loss", outer_loss)
        grads, norm = clip_by_global_norm(list(eta_grads.values()), self.cfg.meta.max_grad_norm)
        self._check_finite("meta-gradient", norm)
        for p, g in zip(eta.values(), grads, strict=True):
            p.grad = g
        self.meta_optimizer.step()
        self.meta_optimizer.zero_grad(set_to_none=True)
        if self.cfg.meta.schedule == "chain":
            self.params = detach_params(self.params)
            self.opt_state = {k: v.detach() for k, v in self.opt_state.items()}
            self._pending.clear()
        self.num_meta_updates += 1
        return stats | {"loss/outer": outer_loss, "meta/grad_norm": norm}

    @staticmethod
    def _check_finite(what: str, value: Tensor) -> None:
        if not torch.isfinite(value).all():
            raise NonFiniteLossError(f"{what} is not finite ({value.item()}): stopping")

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
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore; a meta chain in progress at save time restarts from the saved theta."""
        self.params = detach_params({k: v.to(self.device) for k, v in state["params"].items()})
        self.opt_state = {k: v.to(self.device) for k, v in state["opt_state"].items()}
        if self.meta_net is not None:
            self.meta_net.load_state_dict(state["meta_net"])
            self.meta_optimizer.load_state_dict(state["meta_optimizer"])
        self._pending.clear()
        self.num_updates = int(state["num_updates"])
        self.num_meta_updates = int(state["num_meta_updates"])
