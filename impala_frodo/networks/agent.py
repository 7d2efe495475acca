"""The agent: pi_theta and V_theta on a torso (MLP, conv or ResNet).

A plain ``nn.Module``; the meta-gradient code calls them through
``torch.func.functional_call`` with parameters that carry a graph to eta.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from impala_frodo.networks.torsos import (
    ConvTorso,
    ResNetTorso,
    dense_relu_stack,
    resolve_torso,
)
from impala_frodo.networks.weights import ParamLayout, param_layout

if TYPE_CHECKING:
    from impala_frodo.config.sections import AgentConfig


class AgentNet(nn.Module):
    """A torso with a policy head (logits) and a value head.

    ``torso`` (:mod:`impala_frodo.networks.torsos`): ``"mlp"`` flattens the observation into
    ``hidden_sizes`` ReLU layers (none: both heads linear in it, the random walk's
    linear V on one-hot states); ``"conv"`` is MinAtar's network for ``[H, W, C]``
    images, a 3x3 convolution with ``conv_channels`` channels, then ``hidden_sizes``;
    ``"resnet"`` is IMPALA's deep ResNet (Atari), then ``hidden_sizes``;
    ``"auto"`` takes the ResNet for Atari-sized images, conv for small ones (MinAtar) and
    the MLP otherwise.
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        num_actions: int,
        hidden_sizes: Sequence[int] = (64, 64),
        *,
        torso: str = "auto",
        conv_channels: int = 16,
    ) -> None:
        super().__init__()
        if num_actions < 1:
            raise ValueError(f"num_actions must be >= 1, got {num_actions}")
        self.obs_shape = tuple(obs_shape)
        self.num_actions = num_actions
        self.torso_kind = resolve_torso(torso, self.obs_shape)
        if self.torso_kind == "conv":
            self.torso = ConvTorso(self.obs_shape, conv_channels, hidden_sizes)
            width = self.torso.out_features
        elif self.torso_kind == "resnet":  # IMPALA's deep ResNet (Atari frames)
            self.torso = ResNetTorso(self.obs_shape, hidden_sizes=hidden_sizes)
            width = self.torso.out_features
        else:
            self.torso, width = dense_relu_stack(math.prod(self.obs_shape), hidden_sizes)
        self.policy = nn.Linear(width, num_actions)
        self.value = nn.Linear(width, 1)

    @classmethod
    def from_config(
        cls, obs_shape: Sequence[int], num_actions: int, agent: AgentConfig
    ) -> AgentNet:
        """The agent an :class:`~impala_frodo.config.sections.AgentConfig` describes."""
        return cls(
            obs_shape,
            num_actions,
            agent.hidden_sizes,
            torso=agent.torso,
            conv_channels=agent.conv_channels,
        )

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """``obs [..., *obs_shape]`` to ``(logits [..., A], values [...])``."""
        lead = obs.shape[: obs.dim() - len(self.obs_shape)]
        if self.torso_kind in ("conv", "resnet"):
            x = self.torso(obs.reshape(-1, *self.obs_shape)).reshape(*lead, -1)
        else:
            x = self.torso(obs.reshape(*lead, -1))
        return self.policy(x), self.value(x).squeeze(-1)


def agent_layout(obs_shape: Sequence[int], num_actions: int, agent: AgentConfig) -> ParamLayout:
    """The packed layout of the agent's parameters, what the numpy acting policy reads.

    Built on the ``meta`` device: shapes only, no memory, no initialisation.
    """
    with torch.device("meta"):
        net = AgentNet.from_config(obs_shape, num_actions, agent)
    return param_layout(dict(net.named_parameters()))
