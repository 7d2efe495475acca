"""One objective per algorithm: L_inner and L_outer, and the meta-network eta lives in.

An :class:`Objective` is chosen once from the config (:func:`make_objective`, through each
class's ``from_config``, which picks the sections it takes) and binds the agent network
and, for meta-algorithms, the meta-network it builds. Its losses are
functions of theta (a dict of tensors) and eta (a dict of the meta-network's tensors),
so an inner update built from them stays a differentiable function of eta.

- :class:`ImpalaObjective`: the canonical V-trace actor-critic loss; nothing to meta-learn.
- :class:`MGRLObjective`: the same loss with gamma and lambda learned (Xu et al. 2018).
- :class:`FrodoObjective`: the inner loss regresses to the meta-network's target g in one
  of four :class:`TargetForm` s (Xu et al. 2020); the outer loss is the canonical loss on
  held-outputs data, plus, optionally, the report's extension (:class:`RevisionTerm`,
  algorithm ``frodo-ext``) and a consistency cost.

The task (control or prediction) is decided here once: control losses get the policy's
terms (:func:`~impala_frodo.rule.objectives.policy_terms`), prediction losses ``None``.
Adding an algorithm adds a class and a line in :data:`OBJECTIVES`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from impala_frodo.config.schema import Config
from impala_frodo.config.sections import LossConfig, MetaConfig
from impala_frodo.networks.meta import MetaNet, MGRLMeta
from impala_frodo.rule import objectives, vtrace
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.objectives import AgentOutputs, LossTerms, PolicyTerms

Params = Mapping[str, Tensor]
#: Detached scalars for logging, by metric name (and :data:`LEARNED_TARGET`).
Stats = dict[str, Tensor]
#: The stats key of a learned inner target g ``[T, B]`` (detached): not a logged scalar,
#: the :class:`~impala_frodo.rule.updater.Updater` keeps it aside for ground-truth probes.
LEARNED_TARGET = "target"
#: The mean of a tensor over the whole batch (across data-parallel learners).
BatchMean = Callable[[Tensor], Tensor]


def loss_scalars(terms: LossTerms) -> Stats:
    """The logged parts of an inner loss."""
    return {
        "loss/policy": terms.policy.detach(),
        "loss/value": terms.value.detach(),
        "loss/entropy": terms.entropy.detach(),
    }


class Objective(ABC):
    """L_inner(theta, eta; tau) and L_outer(theta_M; tau') of one algorithm.

    ``meta_net`` is the module whose parameters are eta (``None``: nothing to meta-learn).
    Both losses return ``(loss, stats)``: stats are detached scalars for logging.
    ``batch_mean`` takes the statistics a loss needs over its whole batch (the
    :class:`~impala_frodo.rule.metagrad.GradientReducer`'s: over every learner's batch when
    several learn in parallel; :func:`torch.mean` for one).
    """

    meta_net: nn.Module | None = None

    def __init__(
        self, loss: LossConfig, agent: nn.Module, *, control: bool, batch_mean: BatchMean
    ) -> None:
        self.loss = loss
        self.clipping = vtrace.Clipping(
            loss.clip_rho_threshold, loss.clip_pg_rho_threshold, loss.clip_c_threshold
        )
        self.agent = agent
        self.control = control
        self.batch_mean = batch_mean

    @classmethod
    def from_config(
        cls, cfg: Config, agent: nn.Module, obs_shape: Sequence[int], batch_mean: BatchMean
    ) -> Objective:
        """The objective of ``cfg`` for ``agent`` (``obs_shape``: the meta-network's input)."""
        return cls(cfg.loss, agent, control=cfg.task == "control", batch_mean=batch_mean)

    def vtrace_loss(
        self,
        batch: Batch,
        outputs: AgentOutputs,
        policy: PolicyTerms | None,
        *,
        gamma: float | Tensor | None = None,
        lambda_: float | Tensor | None = None,
        value_cost: float | None = None,
    ) -> tuple[LossTerms, vtrace.VTraceReturns]:
        """The canonical V-trace loss with the config's coefficients (``gamma``, ``lambda_``
        and ``value_cost`` replace the config's where given)."""
        loss = self.loss
        return objectives.vtrace_loss(
            batch,
            outputs,
            policy,
            gamma=loss.gamma if gamma is None else gamma,
            lambda_=loss.lambda_ if lambda_ is None else lambda_,
            value_cost=loss.value_cost if value_cost is None else value_cost,
            entropy_cost=loss.entropy_cost,
            clipping=self.clipping,
        )

    def policy(self, batch: Batch, outputs: AgentOutputs) -> PolicyTerms | None:
        """The policy's loss terms in control; ``None`` in prediction (on-policy targets)."""
        return objectives.policy_terms(outputs.logits, batch.actions) if self.control else None

    def evaluate(self, params: Params, batch: Batch) -> AgentOutputs:
        return objectives.evaluate_agent(self.agent, params, batch)

    @abstractmethod
    def inner_loss(self, params: Params, eta: Params, batch: Batch) -> tuple[Tensor, Stats]:
        """The loss of an inner (agent) update on ``batch``."""

    def outer_loss(
        self, params: Params, eta: Params, batch: Batch, inner_batches: Sequence[Batch]
    ) -> tuple[Tensor, Stats]:
        """L_outer(theta_M; tau'): the canonical V-trace loss on the held-outputs batch."""
        outputs = self.evaluate(params, batch)
        policy = self.policy(batch, outputs)
        terms, _ = self.vtrace_loss(batch, outputs, policy, value_cost=self.loss.outer_value_cost)
        return terms.total, {"loss/outer_canonical": terms.total.detach()}

    def canonical_loss(self, params: Params, batch: Batch) -> Tensor:
        """The canonical V-trace loss of ``params`` on ``batch`` (the config's costs)."""
        outputs = self.evaluate(params, batch)
        policy = self.policy(batch, outputs)
        return self.vtrace_loss(batch, outputs, policy)[0].total

    def canonical_returns(
        self, batch: Batch, outputs: AgentOutputs, policy: PolicyTerms | None
    ) -> Tensor:
        """The canonical V-trace target v_s ``[T, B]`` (the config's gamma and lambda), a
        constant of theta and eta."""
        log_pi_a = None if policy is None else policy.log_pi_a
        return objectives.vtrace_returns(
            batch,
            outputs,
            log_pi_a,
            gamma=self.loss.gamma,
            lambda_=self.loss.lambda_,
            clipping=self.clipping,
        ).vs


class ImpalaObjective(Objective):
    """IMPALA: the V-trace actor-critic loss with fixed gamma and lambda (Espeholt et al.)."""

    def inner_loss(self, params: Params, eta: Params, batch: Batch) -> tuple[Tensor, Stats]:
        outputs = self.evaluate(params, batch)
        policy = self.policy(batch, outputs)
        terms, returns = self.vtrace_loss(batch, outputs, policy)
        return terms.total, {"meta/target_mean": returns.vs.mean(), **loss_scalars(terms)}


class MGRLObjective(Objective):
    """MGRL: the V-trace loss with meta-learned gamma and lambda (Xu et al. 2018)."""

    def __init__(
        self,
        loss: LossConfig,
        agent: nn.Module,
        meta: MetaConfig,
        *,
        control: bool,
        batch_mean: BatchMean,
    ) -> None:
        super().__init__(loss, agent, control=control, batch_mean=batch_mean)
        self.meta_net = MGRLMeta(meta.mgrl_init_gamma, meta.mgrl_init_lambda)

    @classmethod
    def from_config(
        cls, cfg: Config, agent: nn.Module, obs_shape: Sequence[int], batch_mean: BatchMean
    ) -> MGRLObjective:
        control = cfg.task == "control"
        return cls(cfg.loss, agent, cfg.meta, control=control, batch_mean=batch_mean)

    def inner_loss(self, params: Params, eta: Params, batch: Batch) -> tuple[Tensor, Stats]:
        outputs = self.evaluate(params, batch)
        policy = self.policy(batch, outputs)
        gamma, lambda_ = functional_call(self.meta_net, eta, ())
        terms, returns = self.vtrace_loss(batch, outputs, policy, gamma=gamma, lambda_=lambda_)
        canonical = self.canonical_returns(batch, outputs, policy)
        stats = objectives.target_diagnostics(returns.vs, canonical)
        stats["meta/gamma"], stats["meta/lambda"] = gamma.detach(), lambda_.detach()
        return terms.total, stats | loss_scalars(terms)


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


#: The objective of each ``algo``.
OBJECTIVES: dict[str, type[Objective]] = {
    "impala": ImpalaObjective,
    "mgrl": MGRLObjective,
    "frodo": FrodoObjective,
    "frodo-ext": FrodoExtensionObjective,
}


def make_objective(
    cfg: Config, agent: nn.Module, obs_shape: Sequence[int], batch_mean: BatchMean = torch.mean
) -> Objective:
    """The objective of ``cfg.algo`` for ``agent`` (builds the meta-network, if any)."""
    return OBJECTIVES[cfg.algo].from_config(cfg, agent, obs_shape, batch_mean)
