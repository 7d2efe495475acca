"""The meta step: eta, Adam on eta, and the one way a meta-gradient is applied.

:class:`MetaStep` owns the meta-parameters eta (the meta-network's parameters) and their
optimizer. Every outer step goes through :meth:`MetaStep.apply`, whoever computed the
meta-gradient: the chain and sliding schedules inline in the learner's update, and the
async meta-learner beside it. Applying a meta-gradient is, in order:

1. refuse a non-finite outer loss;
2. combine the gradients across data-parallel learners (the reducer's ``meta``);
3. clip their global norm to ``meta.max_grad_norm`` (0: no clip);
4. refuse a non-finite norm;
5. one Adam step on eta.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from impala_frodo.rule.metagrad import LOCAL, GradientReducer, check_finite, clip_by_global_norm


class MetaStep:
    """eta (``meta_net``'s parameters), Adam on eta, and how a meta-gradient is applied.

    ``label`` prefixes the messages of the non-finite checks (which process refused).
    """

    def __init__(
        self,
        meta_net: nn.Module,
        *,
        lr: float,
        max_grad_norm: float,
        reducer: GradientReducer = LOCAL,
        label: str = "",
    ) -> None:
        self.meta_net = meta_net
        self.optimizer = torch.optim.Adam(meta_net.parameters(), lr=lr)
        self.max_grad_norm = max_grad_norm
        self.reducer = reducer
        self.label = label
        self.version = 0  # meta steps taken, over the whole run: eta's version

    @property
    def eta(self) -> dict[str, Tensor]:
        return dict(self.meta_net.named_parameters())

    def apply(self, grads: Sequence[Tensor], outer_loss: Tensor) -> Tensor:
        """Apply dL_outer/d eta (in eta's parameter order); returns its global norm
        before clipping. Raises :class:`~impala_frodo.rule.metagrad.NonFiniteLossError`."""
        check_finite(f"{self.label}outer loss", outer_loss)
        combined = self.reducer.meta(list(grads))
        clipped, norm = clip_by_global_norm(combined, self.max_grad_norm)
        check_finite(f"{self.label}meta-gradient", norm)
        for param, grad in zip(self.eta.values(), clipped, strict=True):
            param.grad = grad
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.version += 1
        return norm

    def state_dict(self) -> dict[str, Any]:
        """Copies (not views) of eta and Adam's state, and the version."""
        return {
            "meta_net": {k: v.detach().clone() for k, v in self.meta_net.state_dict().items()},
            "meta_optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "version": self.version,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore eta, Adam's state (``None``: a fresh Adam, as before any meta step) and
        the version."""
        self.meta_net.load_state_dict(state["meta_net"])
        if state["meta_optimizer"] is not None:
            self.optimizer.load_state_dict(state["meta_optimizer"])
        self.version = int(state["version"])
