"""FRODO's objective (Xu et al. 2020): the learned target's forms, the consistency term,
and the report's extension."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from impala_frodo.config.schema import Config
from impala_frodo.config.sections import LossConfig, MetaConfig
from impala_frodo.networks.meta import MetaNet
from impala_frodo.rule import objectives
from impala_frodo.rule.algorithms.base import (
    LEARNED_TARGET,
    BatchMean,
    Objective,
    Params,
    Stats,
    loss_scalars,
)
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.objectives import AgentOutputs, PolicyTerms


@dataclass(frozen=True)
class TargetForm:
    """How FRODO's target g is built from the meta-network's output G (docs/design.md).

    ``residual``: g = sg(v_s) + G, a correction on the canonical return; else g = G.
    ``centred``: the correction less its batch mean. ``zero_init_head``: G's output layer
    starts at zero (so g starts at v_s, or at 0 in the plain form).
    """

    residual: bool
    centred: bool
    zero_init_head: bool

    @classmethod
    def named(cls, name: str) -> TargetForm:
        """The form of ``meta.target`` (one of :data:`~impala_frodo.config.checks.TARGET_FORMS`)."""
        return TARGET_FORMS[name]


TARGET_FORMS: dict[str, TargetForm] = {
    "residual": TargetForm(residual=True, centred=False, zero_init_head=True),
    "residual-centred": TargetForm(residual=True, centred=True, zero_init_head=True),
    "plain": TargetForm(residual=False, centred=False, zero_init_head=False),
    "plain-zero-head": TargetForm(residual=False, centred=False, zero_init_head=True),
}


class RevisionTerm:
    """The report's extension: beta L_revise added to L_outer, with L_revise the canonical
    loss of theta_M on the inner batches and beta constant (b1) or annealed (b1 / L_outer)."""

    def __init__(self, meta: MetaConfig) -> None:
        self.b1, self.mode = meta.ext_b1, meta.ext_beta_mode
        self.beta_max, self.eps = meta.ext_beta_max, meta.ext_eps

    def __call__(
        self, objective: Objective, params: Params, outer: Tensor, inner_batches: Sequence[Batch]
    ) -> tuple[Tensor, Stats]:
        """``beta L_revise`` given the canonical outer loss ``outer`` (beta reads it over
        the whole batch)."""
        revise = torch.stack([objective.canonical_loss(params, b) for b in inner_batches]).mean()
        beta = objectives.extension_beta(
            objective.batch_mean(outer.detach()),
            b1=self.b1,
            mode=self.mode,
            beta_max=self.beta_max,
            eps=self.eps,
        )
        return beta * revise, {"meta/beta": beta.detach(), "loss/revise": revise.detach()}


class FrodoObjective(Objective):
    """FRODO (Xu et al. 2020): the agent learns toward g = G_eta(tau) (or a correction of the
    canonical return, :class:`TargetForm`); eta learns to make that learning minimise the
    canonical loss on held-outputs data.

    ``revision``: the report's extension (:class:`RevisionTerm`), or ``None``.
    """

    #: ``from_config`` adds the report's extension (:class:`FrodoExtensionObjective`).
    extension = False

    def __init__(
        self,
        loss: LossConfig,
        agent: nn.Module,
        meta: MetaConfig,
        obs_shape: Sequence[int],
        *,
        control: bool,
        batch_mean: BatchMean,
        revision: RevisionTerm | None = None,
    ) -> None:
        super().__init__(loss, agent, control=control, batch_mean=batch_mean)
        self.form = TargetForm.named(meta.target)
        self.ratio_input = meta.ratio_input
        self.consistency_cost = meta.consistency_cost
        self.consistency_form = meta.consistency_form
        self.revision = revision
        self.meta_net = MetaNet(
            obs_shape,
            meta.hidden_size,
            ratio_input=meta.ratio_input,
            zero_init_head=self.form.zero_init_head,
            embed_size=meta.embed_size,
            embed_channels=meta.embed_channels,
        )

    @classmethod
    def from_config(
        cls, cfg: Config, agent: nn.Module, obs_shape: Sequence[int], batch_mean: BatchMean
    ) -> FrodoObjective:
        return cls(
            cfg.loss,
            agent,
            cfg.meta,
            obs_shape,
            control=cfg.task == "control",
            batch_mean=batch_mean,
            revision=RevisionTerm(cfg.meta) if cls.extension else None,
        )

    def target(
        self,
        eta: Params,
        batch: Batch,
        outputs: AgentOutputs,
        policy: PolicyTerms | None,
        canonical: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The target g ``[T, B]`` (graph to eta) and the canonical v_s (computed unless
        given). ``policy``: :meth:`policy` of the batch."""
        if canonical is None:
            canonical = self.canonical_returns(batch, outputs, policy)
        log_rhos = None
        if self.ratio_input:
            log_rhos = torch.zeros_like(batch.rewards)
            if policy is not None:
                log_rhos = policy.log_pi_a - batch.behaviour_log_probs
        target = objectives.meta_target(
            self.meta_net,
            eta,
            batch,
            outputs,
            self.loss.gamma,
            canonical=canonical if self.form.residual else None,
            log_rhos=log_rhos,
            centre=self.form.centred,
            batch_mean=self.batch_mean,
        )
        return target, canonical

    def inner_loss(self, params: Params, eta: Params, batch: Batch) -> tuple[Tensor, Stats]:
        outputs = self.evaluate(params, batch)
        policy = self.policy(batch, outputs)
        target, canonical = self.target(eta, batch, outputs, policy)
        terms = objectives.frodo_inner_loss(
            batch,
            outputs,
            target,
            policy,
            value_cost=self.loss.value_cost,
            entropy_cost=self.loss.entropy_cost,
            clip_pg_rho=self.loss.clip_pg_rho_threshold,
        )
        stats = objectives.target_diagnostics(target, canonical)
        stats["meta/target_mean"] = target.detach().mean()
        stats[LEARNED_TARGET] = target.detach()
        return terms.total, stats | loss_scalars(terms)

    def outer_loss(
        self, params: Params, eta: Params, batch: Batch, inner_batches: Sequence[Batch]
    ) -> tuple[Tensor, Stats]:
        """The canonical loss on tau' (+ beta L_revise with the extension, + the consistency
        term w 1/2 (g - sg(v_s))^2 on tau' when ``meta.consistency_cost`` > 0)."""
        outputs = self.evaluate(params, batch)
        terms, returns = self.vtrace_loss(
            batch, outputs, self.policy(batch, outputs), value_cost=self.loss.outer_value_cost
        )
        loss, stats = terms.total, {"loss/outer_canonical": terms.total.detach()}
        if self.revision is not None:
            revision, revision_stats = self.revision(self, params, terms.total, inner_batches)
            loss, stats = loss + revision, stats | revision_stats
        if self.consistency_cost > 0:
            consistency = self.consistency(eta, batch, outputs, returns.vs)
            loss = loss + self.consistency_cost * consistency
            stats["loss/consistency"] = consistency.detach()
        return loss, stats

    def consistency(
        self, eta: Params, batch: Batch, outputs: AgentOutputs, canonical: Tensor
    ) -> Tensor:
        """The consistency term of ``meta.consistency_form`` on the held-out batch: the
        learned target against the canonical return v_s, or against its own bootstrap."""
        policy = self.policy(batch, outputs) if self.ratio_input else None
        target, canonical = self.target(eta, batch, outputs, policy, canonical=canonical)
        if self.consistency_form == "canonical":
            return 0.5 * (target - canonical).square().mean()
        return objectives.self_consistency(
            target,
            batch,
            outputs,
            self.loss.gamma,
            stop_bootstrap=self.consistency_form == "self",
        )


class FrodoExtensionObjective(FrodoObjective):
    """FRODO with the report's extension in its outer loss (algorithm ``frodo-ext``)."""

    extension = True
