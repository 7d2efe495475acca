"""mu: the agent's policy evaluated with numpy from the packed weight vector.

Acting needs no autograd, and a rollout actor that never imports torch starts about a
second sooner and spends less per step on framework overhead.
``tests/test_rollout_policy.py`` holds :class:`NumpyPolicy` to the torch agent's logits.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from impala_frodo.networks.numpy_resnet import is_resnet_layout, resnet_features, resnet_structure
from impala_frodo.networks.weights import ParamLayout, pack_params, param_layout

#: A dense layer of the torso: ``torso.<i>.weight`` (MLP) or ``torso.dense.<i>.weight`` (conv).
_DENSE = re.compile(r"torso\.(?:dense\.)?(\d+)\.weight")


class NumpyPolicy:
    """mu: the agent's policy evaluated with numpy from packed weights; samples actions.

    Computes the same logits as :class:`~impala_frodo.networks.agent.AgentNet` (MLP torso,
    MinAtar's conv torso: a 3x3 convolution, then dense ReLU layers, or IMPALA's ResNet,
    :mod:`impala_frodo.networks.numpy_resnet`) from the flat float32
    vector of :func:`pack_params`, read as views in ``layout``. It takes observations as the
    env stores them and feeds the network ``obs_scale * obs`` as float32. Actions are drawn
    by Gumbel-max from a ``numpy`` generator seeded with ``seed``.
    """

    def __init__(self, layout: ParamLayout, seed: int = 0, obs_scale: float = 1.0) -> None:
        self.layout = tuple((name, tuple(shape)) for name, shape in layout)
        names = [name for name, _ in self.layout]
        if names != sorted(names) or not {"policy.weight", "policy.bias"} <= set(names):
            raise ValueError(f"not an agent's packed parameter layout: {names}")
        self.size = sum(int(np.prod(shape)) for _, shape in self.layout)
        self.conv = "torso.conv.weight" in names
        # IMPALA's ResNet torso (Atari): its conv stack in impala_frodo.networks.numpy_resnet.
        self.resnet = resnet_structure(names) if is_resnet_layout(names) else None
        self.dense = sorted(
            (int(m.group(1)), m.group(0).removesuffix(".weight"))
            for name in names
            if (m := _DENSE.fullmatch(name))
        )
        self.obs_scale = obs_scale
        self.version = -1  # no weights yet
        self._params: dict[str, np.ndarray] = {}
        self._rng = np.random.default_rng(seed)

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any], seed: int = 0, obs_scale: float = 1.0, version: int = 0
    ) -> NumpyPolicy:
        """A policy acting with ``params`` (the agent's, by name: tensors or arrays)."""
        policy = cls(param_layout(params), seed=seed, obs_scale=obs_scale)
        policy.load(pack_params(params), version)
        return policy

    def load(self, flat: np.ndarray, version: int) -> None:
        """Act with ``flat`` (packed by :func:`pack_params`) from now on, as ``version``."""
        flat = np.asarray(flat, dtype=np.float32)
        if flat.shape != (self.size,):
            raise ValueError(f"packed parameters have shape {flat.shape}, expected ({self.size},)")
        params, offset = {}, 0
        for name, shape in self.layout:
            size = int(np.prod(shape))
            params[name] = flat[offset : offset + size].reshape(shape)  # a view
            offset += size
        self._params = params
        self.version = version

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The weights mu acts with, by name: views into the last packed vector loaded."""
        return dict(self._params)

    def logits(self, obs: np.ndarray) -> np.ndarray:
        """``obs [B, *obs_shape]`` (stored dtype) to the agent's ``logits [B, A]``, float32."""
        if not self._params:
            raise RuntimeError("NumpyPolicy has no weights yet: call load() first")
        p = self._params
        x = np.asarray(obs, dtype=np.float32)
        if self.obs_scale != 1.0:
            x = x * np.float32(self.obs_scale)
        if self.conv:
            x = _conv3x3_relu(x, p["torso.conv.weight"], p["torso.conv.bias"])
        elif self.resnet is not None:
            x = resnet_features(x, p, self.resnet)
        x = x.reshape(x.shape[0], -1)
        for _, layer in self.dense:
            x = np.maximum(x @ p[f"{layer}.weight"].T + p[f"{layer}.bias"], 0.0)
        return x @ p["policy.weight"].T + p["policy.bias"]

    def __call__(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``obs [B, *obs_shape]`` to sampled ``actions [B]`` (int64), ``log mu(a|x) [B]``."""
        log_probs = _log_softmax(self.logits(obs))
        # Gumbel-max sampling: argmax(log p + Gumbel noise) ~ Categorical(p).
        uniform = np.maximum(self._rng.random(log_probs.shape, dtype=np.float32), 1e-20)
        actions = np.argmax(log_probs - np.log(-np.log(uniform)), axis=-1)
        chosen = np.take_along_axis(log_probs, actions[:, None], axis=-1)[:, 0]
        return actions.astype(np.int64), chosen


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _conv3x3_relu(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``relu(conv2d)``, 3x3, stride 1, no padding, on channels-last ``[N, H, W, C]``.

    ``weight [O, C, 3, 3]`` as torch stores it; returns ``[N, O, H-2, W-2]``, flattening in
    the order :class:`~impala_frodo.networks.torsos.ConvTorso` does.
    """
    out_channels, _, kh, kw = weight.shape
    patches = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
    n, h, w = patches.shape[:3]  # patches: [N, H', W', C, kh, kw]
    y = patches.reshape(n * h * w, -1) @ weight.reshape(out_channels, -1).T + bias
    return np.maximum(y, 0.0).reshape(n, h, w, out_channels).transpose(0, 3, 1, 2)
