"""Differentiable inner updates and the meta-gradient through them.

The agent's parameters theta are held as a dict of tensors, never as the
``nn.Module``'s own: an inner step returns *new* tensors,
``theta_{i+1} = theta_i - update(grad L_inner(theta_i, eta))``, built with
``create_graph=True`` so that theta_{i+1} is a differentiable function of
eta. After M steps the outer loss L_outer(theta_M) is differentiated back
to eta by autograd (dL_outer/dtheta_M . dtheta_M/deta). There is no
``optimizer.step()`` on this path: an in-place step would cut the graph, and
eta would get no gradient (the bug in the report's sketch).

Stop-gradients: sg(.) in the losses is ``detach()``, which cuts every path,
the meta-gradient's included, as ``stop_gradient`` does in the papers'
implementations. For M = 1 the meta-gradient is therefore the exact total
derivative dL_outer/deta; for M > 1 it is the derivative of the update rule
as written, where quantities under sg at step i (the advantage's V, the
V-trace weights, the meta-network's V(x_{t+1}) input) are constants even
though theta_i depends on eta.

Optimizer statistics: SGD has none. RMSProp's running average of squared
gradients is updated from *detached* gradients, so it is treated as a
constant of eta (as in Xu et al. 2018's implementation); only the gradient
in the numerator carries the graph. Statistics persist across meta steps
like an ordinary optimizer's state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from impala_frodo.config.sections import OptimConfig

Params = dict[str, Tensor]
OptState = dict[str, Tensor]


class NonFiniteLossError(FloatingPointError):
    """A loss or gradient became NaN or infinite; training must stop."""


def check_finite(what: str, value: Tensor) -> None:
    """Raise :class:`NonFiniteLossError` naming ``what`` unless ``value`` is all finite."""
    if not torch.isfinite(value).all():
        raise NonFiniteLossError(f"{what} is not finite ({value.item()}): stopping")


class DifferentiableSGD:
    """theta' = theta - lr g."""

    def __init__(self, lr: float) -> None:
        self.lr = lr

    def init(self, params: Mapping[str, Tensor]) -> OptState:
        return {}

    def update(
        self, params: Mapping[str, Tensor], grads: Mapping[str, Tensor], state: OptState
    ) -> tuple[Params, OptState]:
        return {k: p - self.lr * grads[k] for k, p in params.items()}, state


class DifferentiableRMSProp:
    """s' = alpha s + (1 - alpha) sg(g)^2;  theta' = theta - lr g / (sqrt(s') + eps).

    Matches ``torch.optim.RMSprop`` (non-centred, no momentum), with s
    treated as a constant of eta.
    """

    def __init__(self, lr: float, alpha: float = 0.99, eps: float = 1e-5) -> None:
        self.lr, self.alpha, self.eps = lr, alpha, eps

    def init(self, params: Mapping[str, Tensor]) -> OptState:
        return {k: torch.zeros_like(p, requires_grad=False) for k, p in params.items()}

    def update(
        self, params: Mapping[str, Tensor], grads: Mapping[str, Tensor], state: OptState
    ) -> tuple[Params, OptState]:
        new_state = {
            k: self.alpha * state[k] + (1.0 - self.alpha) * grads[k].detach().square()
            for k in params
        }
        new_params = {
            k: p - self.lr * grads[k] / (new_state[k].sqrt() + self.eps) for k, p in params.items()
        }
        return new_params, new_state


DifferentiableOptimizer = DifferentiableSGD | DifferentiableRMSProp


def make_inner_optimizer(cfg: OptimConfig) -> DifferentiableOptimizer:
    if cfg.name == "sgd":
        return DifferentiableSGD(cfg.lr)
    return DifferentiableRMSProp(cfg.lr, alpha=cfg.rmsprop_alpha, eps=cfg.rmsprop_eps)


class GradientReducer(Protocol):
    """Where the gradients of several learners are combined: the one seam data-parallel
    learners plug into, so that the learning rule itself is unchanged.

    ``inner`` combines an inner step's gradients (they may carry a graph to eta: a
    combination must keep it, so that the meta-gradient flows back through it); ``meta``
    combines eta's gradients before eta's optimizer step. Both keep the order of the list.
    ``batch_mean`` is the mean of a per-learner tensor over the whole batch, for the
    statistics a loss takes over its batch (differentiable where the tensor has a graph).
    Data-parallel learners: :class:`~impala_frodo.rule.data_parallel.AllReduceGradients`.
    """

    def inner(self, grads: list[Tensor]) -> list[Tensor]: ...

    def meta(self, grads: list[Tensor]) -> list[Tensor]: ...

    def batch_mean(self, tensor: Tensor) -> Tensor: ...


class LocalGradients:
    """One learner: the gradients as they are."""

    def inner(self, grads: list[Tensor]) -> list[Tensor]:
        return grads

    def meta(self, grads: list[Tensor]) -> list[Tensor]:
        return grads

    def batch_mean(self, tensor: Tensor) -> Tensor:
        return tensor.mean()


#: The reducer of a single learner.
LOCAL = LocalGradients()


@dataclass(frozen=True)
class InnerRule:
    """How an inner step is taken: the differentiable optimizer, the clip of its gradient's
    global norm (0: none), and where the gradients of several learners are combined."""

    optimizer: DifferentiableOptimizer
    max_grad_norm: float = 0.0
    reducer: GradientReducer = LOCAL


def detach_params(params: Mapping[str, Tensor], requires_grad: bool = True) -> Params:
    """Cut the graph: fresh leaves to continue training from."""
    return {k: p.detach().requires_grad_(requires_grad) for k, p in params.items()}


def clip_by_global_norm(grads: Sequence[Tensor], max_norm: float) -> tuple[list[Tensor], Tensor]:
    """Scale ``grads`` so their joint L2 norm is at most ``max_norm`` (differentiably)."""
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    if max_norm <= 0:
        return list(grads), norm
    scale = torch.clamp(max_norm / (norm.detach() + 1e-6), max=1.0)
    return [g * scale for g in grads], norm


@dataclass
class InnerStep:
    params: Params  # theta_{i+1}: with a graph to eta if create_graph, else fresh leaves
    opt_state: OptState
    loss: Tensor  # L_inner(theta_i), detached
    grad_norm: Tensor
    aux: Any  # whatever the loss function returned besides the loss


def inner_step(
    params: Params,
    opt_state: OptState,
    optimizer: DifferentiableOptimizer,
    loss_fn: Callable[[Params], tuple[Tensor, Any]],
    *,
    create_graph: bool,
    max_grad_norm: float = 0.0,
    reducer: GradientReducer = LOCAL,
) -> InnerStep:
    """One update theta -> theta' on ``loss_fn(theta)``.

    ``create_graph=True`` keeps theta' differentiable w.r.t. whatever the loss
    depends on besides theta (eta); ``False`` is a plain update (IMPALA, and
    acting copies). The gradients pass through ``reducer.inner`` before clipping.
    """
    loss, aux = loss_fn(params)
    names = list(params)
    grads = torch.autograd.grad(
        loss, [params[k] for k in names], create_graph=create_graph, allow_unused=True
    )
    # A head the loss does not use (the policy in prediction tasks) gets a zero gradient.
    grads = [
        torch.zeros_like(params[k]) if g is None else g for k, g in zip(names, grads, strict=True)
    ]
    grads, norm = clip_by_global_norm(reducer.inner(grads), max_grad_norm)
    new_params, new_state = optimizer.update(
        params, dict(zip(names, grads, strict=True)), opt_state
    )
    if not create_graph:
        new_params = detach_params(new_params)
    return InnerStep(new_params, new_state, loss.detach(), norm.detach(), aux)


@dataclass
class MetaGradient:
    params: Params  # theta_M, detached: training continues from it
    opt_state: OptState
    eta_grads: dict[str, Tensor]  # dL_outer / d eta
    inner_losses: list[Tensor]
    outer_loss: Tensor
    outer_aux: Any


def outer_gradient(
    params: Params,
    eta: Mapping[str, Tensor],
    outer_loss_fn: Callable[[Params], tuple[Tensor, Any]],
) -> tuple[dict[str, Tensor], Tensor, Any]:
    """dL_outer(theta_M) / d eta through the graph theta_M carries."""
    loss, aux = outer_loss_fn(params)
    names = list(eta)
    grads = torch.autograd.grad(loss, [eta[k] for k in names], allow_unused=True)
    eta_grads = {
        k: torch.zeros_like(eta[k]) if g is None else g for k, g in zip(names, grads, strict=True)
    }
    return eta_grads, loss.detach(), aux


def meta_gradient(
    params: Params,
    opt_state: OptState,
    eta: Mapping[str, Tensor],
    inner_batches: Sequence[Any],
    outer_batch: Any,
    optimizer: DifferentiableOptimizer,
    inner_loss_fn: Callable[[Params, Any], tuple[Tensor, Any]],
    outer_loss_fn: Callable[[Params, Any, Sequence[Any]], tuple[Tensor, Any]],
    *,
    max_grad_norm: float = 0.0,
    reducer: GradientReducer = LOCAL,
) -> MetaGradient:
    """M differentiable inner updates, then the gradient of the outer loss w.r.t. eta.

    Args:
        params: theta_0 (any graph it has is cut here).
        opt_state: the inner optimizer's state at theta_0.
        eta: meta-parameters (leaves with ``requires_grad``) the losses close over.
        inner_batches: the M batches tau_1..tau_M of the inner updates.
        outer_batch: the held-out batch tau'.
        optimizer: a differentiable inner optimizer.
        reducer: combines each inner step's gradients (across learners).
        inner_loss_fn: ``(theta, batch) -> (L_inner, aux)``, a function of eta too.
        outer_loss_fn: ``(theta_M, outer_batch, inner_batches) -> (L_outer, aux)``.

    Returns:
        theta_M and its optimizer state (detached), the eta gradient, the losses.
    """
    theta = detach_params(params)
    inner_losses = []
    for batch in inner_batches:
        step = inner_step(
            theta,
            opt_state,
            optimizer,
            lambda p, b=batch: inner_loss_fn(p, b),
            create_graph=True,
            max_grad_norm=max_grad_norm,
            reducer=reducer,
        )
        theta, opt_state = step.params, step.opt_state
        inner_losses.append(step.loss)
    eta_grads, outer_loss, outer_aux = outer_gradient(
        theta, eta, lambda p: outer_loss_fn(p, outer_batch, inner_batches)
    )
    return MetaGradient(
        params=detach_params(theta),
        opt_state={k: v.detach() for k, v in opt_state.items()},
        eta_grads=eta_grads,
        inner_losses=inner_losses,
        outer_loss=outer_loss,
        outer_aux=outer_aux,
    )
