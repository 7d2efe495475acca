"""Acting with torch in the actor, for IMPALA's ResNet, where numpy is too slow.

:class:`TorchPolicy` is :class:`~impala_frodo.networks.numpy_policy.NumpyPolicy`'s interface
(``load``, ``version``, ``logits``, ``__call__``) evaluated by a torch copy of the agent built from
the packed layout, one thread, no autograd. It exists because of a measurement
(``benchmarks/bench_atari.py``, docs/results-atari.md): on Atari frames the 15-layer ResNet
costs about 3x (2.6x to 3.5x) more time in numpy than in torch on one core (im2col copies and small
matrix products against oneDNN's direct convolutions), while for the MLP and MinAtar's one
convolution numpy is as fast and saves the actor torch's import.

:func:`make_policy` picks the class by ``run.actor_inference``: ``"numpy"``, ``"torch"``, or
``"auto"`` (torch for a ResNet torso, numpy otherwise). This module is the only place an
actor process may import torch, and only when torch acting is chosen: ``actors/`` itself
never imports torch, and with numpy acting its processes never do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from impala_frodo.config.checks import ACTOR_INFERENCE
from impala_frodo.networks.numpy_policy import NumpyPolicy
from impala_frodo.networks.numpy_resnet import is_resnet_layout
from impala_frodo.networks.weights import ParamLayout

if TYPE_CHECKING:
    from impala_frodo.config.sections import AgentConfig


def wants_torch(layout: ParamLayout, inference: str) -> bool:
    """Whether ``inference`` means torch for an agent of this layout."""
    if inference not in ACTOR_INFERENCE:
        raise ValueError(f"actor inference must be one of {', '.join(ACTOR_INFERENCE)}")
    if inference == "auto":
        return is_resnet_layout(name for name, _ in layout)
    return inference == "torch"


def make_policy(
    layout: ParamLayout,
    agent: AgentConfig,
    obs_shape: Sequence[int],
    num_actions: int,
    *,
    seed: int = 0,
    obs_scale: float = 1.0,
    inference: str = "auto",
) -> NumpyPolicy:
    """mu for an actor: :class:`TorchPolicy` or :class:`NumpyPolicy` (see the module doc);
    ``agent``, ``obs_shape`` and ``num_actions`` build the torch agent where torch acts."""
    if wants_torch(layout, inference):
        return TorchPolicy(layout, agent, obs_shape, num_actions, seed=seed, obs_scale=obs_scale)
    return NumpyPolicy(layout, seed=seed, obs_scale=obs_scale)


class TorchPolicy(NumpyPolicy):
    """mu evaluated by a torch copy of the agent (one thread, inference mode).

    Weights arrive packed, as for :class:`NumpyPolicy` (whose ``load`` reads the views);
    they are copied into the module's parameters at ``load``. Action sampling (Gumbel-max
    from the numpy generator) is :class:`NumpyPolicy`'s.
    """

    def __init__(
        self,
        layout: ParamLayout,
        agent: AgentConfig,
        obs_shape: Sequence[int],
        num_actions: int,
        *,
        seed: int = 0,
        obs_scale: float = 1.0,
    ) -> None:
        super().__init__(layout, seed=seed, obs_scale=obs_scale)
        import torch  # here only: see the module docstring

        from impala_frodo.networks.agent import AgentNet

        torch.set_num_threads(1)  # an actor process holds one CPU (or less)
        self._torch = torch
        self.module = AgentNet.from_config(obs_shape, num_actions, agent).eval()
        names = {name for name, _ in layout}
        if set(dict(self.module.named_parameters())) != names:
            raise ValueError("the torch agent's parameters do not match the packed layout")

    def load(self, flat: np.ndarray, version: int) -> None:
        super().load(flat, version)
        with self._torch.no_grad():
            for name, param in self.module.named_parameters():
                param.copy_(self._torch.from_numpy(np.array(self._params[name])))  # a copy

    def logits(self, obs: np.ndarray) -> np.ndarray:
        """``obs [B, *obs_shape]`` (stored dtype) to ``logits [B, A]`` float32, in torch."""
        if not self._params:
            raise RuntimeError("TorchPolicy has no weights yet: call load() first")
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.asarray(obs)).float()
            if self.obs_scale != 1.0:
                x.mul_(self.obs_scale)
            return self.module(x)[0].numpy()
