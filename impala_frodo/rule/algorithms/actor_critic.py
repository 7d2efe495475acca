"""The actor-critic baselines: IMPALA (fixed gamma and lambda) and MGRL (meta-learned)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torch.func import functional_call

from impala_frodo.config.schema import Config
from impala_frodo.config.sections import LossConfig, MetaConfig
from impala_frodo.networks.meta import MGRLMeta
from impala_frodo.rule import objectives
from impala_frodo.rule.algorithms.base import (
    BatchMean,
    Objective,
    Params,
    Stats,
    loss_scalars,
)
from impala_frodo.rule.batch import Batch


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
