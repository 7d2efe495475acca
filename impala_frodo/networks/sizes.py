"""The parameter counts of a config's networks, without building them.

The networks are built on PyTorch's ``meta`` device (shapes only: no memory, no
initialisation, so an absurd width costs nothing) and their parameters counted: no figure
here restates an architecture, so the counts stay right when a torso changes.
:mod:`impala_frodo.sizing.memory` turns them into bytes of a run.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from impala_frodo.config.schema import Config
from impala_frodo.config.sections import AgentConfig
from impala_frodo.networks.agent import AgentNet
from impala_frodo.networks.meta import MetaNet


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def agent_parameters(obs_shape: Sequence[int], num_actions: int, agent: AgentConfig) -> int:
    """The parameters of pi_theta and V_theta as ``agent`` describes them."""
    with torch.device("meta"):
        return _count(AgentNet.from_config(obs_shape, num_actions, agent))


def meta_parameters(cfg: Config, obs_shape: Sequence[int]) -> int:
    """The meta-parameters eta of ``cfg.algo``: FRODO's G_eta, MGRL's gamma and lambda,
    none for IMPALA."""
    if cfg.algo == "mgrl":
        return 2
    if not cfg.is_meta:
        return 0
    meta = cfg.meta
    with torch.device("meta"):
        net = MetaNet(
            obs_shape,
            meta.hidden_size,
            ratio_input=meta.ratio_input,
            embed_size=meta.embed_size,
            embed_channels=meta.embed_channels,
        )
    return _count(net)
