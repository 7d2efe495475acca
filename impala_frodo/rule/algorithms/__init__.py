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

from collections.abc import Sequence

import torch
from torch import nn

from impala_frodo.config.schema import Config
from impala_frodo.rule.algorithms.actor_critic import ImpalaObjective, MGRLObjective
from impala_frodo.rule.algorithms.base import (
    LEARNED_TARGET,
    BatchMean,
    Objective,
    Params,
    Stats,
    loss_scalars,
)
from impala_frodo.rule.algorithms.frodo import (
    TARGET_FORMS,
    FrodoExtensionObjective,
    FrodoObjective,
    RevisionTerm,
    TargetForm,
)

__all__ = [
    "LEARNED_TARGET",
    "OBJECTIVES",
    "TARGET_FORMS",
    "BatchMean",
    "FrodoExtensionObjective",
    "FrodoObjective",
    "ImpalaObjective",
    "MGRLObjective",
    "Objective",
    "Params",
    "RevisionTerm",
    "Stats",
    "TargetForm",
    "loss_scalars",
    "make_objective",
]

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
