"""What every algorithm's objective is: :class:`Objective`, L_inner and L_outer as
functions of theta and eta, and the canonical V-trace loss they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence

from torch import Tensor, nn

from impala_frodo.config.schema import Config
from impala_frodo.config.sections import LossConfig
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
