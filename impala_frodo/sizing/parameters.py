"""The parameter counts of a config's networks, without building them.

The networks are built on PyTorch's ``meta`` device (shapes only: no memory, no
initialisation, so an absurd width costs nothing) and their parameters counted: no figure
here restates an architecture, so the counts stay right when a torso changes.
G_eta is the one the algorithm's objective builds
(:func:`~impala_frodo.rule.algorithms.make_objective`), so eta is counted as the learner
has it. :mod:`impala_frodo.sizing.memory` turns the
counts into bytes of a run.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from impala_frodo.config.schema import Config
from impala_frodo.config.sections import AgentConfig
from impala_frodo.networks.agent import AgentNet
from impala_frodo.rule.algorithms import make_objective


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def agent_parameters(obs_shape: Sequence[int], num_actions: int, agent: AgentConfig) -> int:
    """The parameters of pi_theta and V_theta as ``agent`` describes them."""
    with torch.device("meta"):
        return _count(AgentNet.from_config(obs_shape, num_actions, agent))


def meta_parameters(cfg: Config, obs_shape: Sequence[int], num_actions: int) -> int:
    """The meta-parameters eta of ``cfg.algo`` as its objective builds them: FRODO's
    G_eta, MGRL's gamma and lambda, none for IMPALA."""
    with torch.device("meta"):
        agent = AgentNet.from_config(obs_shape, num_actions, cfg.agent)
        meta_net = make_objective(cfg, agent, obs_shape).meta_net
    return 0 if meta_net is None else _count(meta_net)
