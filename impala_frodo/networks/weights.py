"""The learner's weights on their way to the actors: one packed vector, and a set lag.

:func:`pack_params` flattens the agent's parameters (sorted by name) into one float32
vector, the form weights cross Ray in; :func:`param_layout` is the ``(name, shape)`` list
that reads it back (:class:`~impala_frodo.networks.numpy_policy.NumpyPolicy`).
:class:`DelayedWeights` hands out weights a set number of versions old, for experiments
on policy lag. numpy only: rollout actors import this module and never import torch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

#: The agent's parameters as packed by :func:`pack_params`: ``(name, shape)`` sorted by name.
ParamLayout = tuple[tuple[str, tuple[int, ...]], ...]


def param_layout(params: Mapping[str, Any]) -> ParamLayout:
    """The layout :func:`pack_params` packs ``params`` (tensors or arrays) in."""
    return tuple((name, tuple(int(s) for s in params[name].shape)) for name in sorted(params))


def layout_size(layout: ParamLayout) -> int:
    """The length of the vector :func:`pack_params` packs parameters of ``layout`` into."""
    return sum(int(np.prod(shape, dtype=np.int64)) for _, shape in layout)


def pack_params(params: Mapping[str, Tensor | np.ndarray]) -> np.ndarray:
    """Flatten parameters (sorted by name) into one float32 vector.

    One numpy buffer crosses Ray faster than a dict of tensors (one buffer to serialise
    instead of one object per tensor; docs/design.md, "Weights to the actors").
    """
    return np.concatenate([_as_array(params[name]).reshape(-1) for name in sorted(params)])


def _as_array(value: Tensor | np.ndarray) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor (duck-typed: this module never imports torch)
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


class DelayedWeights:
    """Hands out acting weights ``lag`` policy versions old: a policy lag set on purpose.

    ``push(version, params)`` records the learner's weights and returns the newest
    recorded ``(version, params)`` at least ``lag`` versions older than ``version``
    (the oldest recorded until there is one). With ``lag = 0`` it returns what it
    was given. Versions must not decrease.
    """

    def __init__(self, lag: int) -> None:
        if isinstance(lag, bool) or not isinstance(lag, int) or lag < 0:
            raise ValueError(f"lag must be an integer >= 0, got {lag!r}")
        self.lag = lag
        self._history: deque[tuple[int, Any]] = deque()

    def push(self, version: int, params: Any) -> tuple[int, Any]:
        if self._history and version < self._history[-1][0]:
            raise ValueError(f"versions must not decrease: {version} after {self._history[-1][0]}")
        self._history.append((version, params))
        # Drop snapshots once a newer one is itself old enough.
        while len(self._history) > 1 and self._history[1][0] <= version - self.lag:
            self._history.popleft()
        return self._history[0]
