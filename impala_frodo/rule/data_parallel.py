"""Data-parallel learners: the gradient reducer of N learners in a torch.distributed group.

Each of N learners holds the same theta, inner-optimizer state and eta, and takes one
equal shard of the global batch. Every loss is a mean over ``[T, B]``, so the gradient
of the loss on the global batch is the mean of the learners' gradients, and averaging
them (:meth:`AllReduceGradients.inner`) keeps every learner's theta identical.

The meta-gradient is where a plain average goes wrong. theta_M depends on eta through
every averaged inner step, g_bar_i = (1/N) sum_r g_r,i(theta_i, eta), and so on *every*
learner's inner gradient, not only the local one. With the global outer loss
L = (1/N) sum_r L_r(theta_M), the chain rule gives

    dL/deta = sum_i c_i . (1/N) sum_r dg_r,i/deta,   c_i = (1/N) sum_r dL_r/dg_bar_i,

where c_i is the cotangent at the averaged step i. Learner r can only differentiate its
own g_r,i, so it needs c_i: the all-reduce's backward must itself all-reduce the
incoming cotangents (:class:`_SumAcrossLearners`, whose adjoint is the same sum). Then
learner r's local meta-gradient is sum_i c_i . (1/N) dg_r,i/deta (plus its direct
dL_r/deta), and the mean of these over learners (:meth:`AllReduceGradients.meta`) is
dL/deta exactly. An average with no gradient through the collective (what DDP's hooks
would give, were they to fire for ``torch.autograd.grad``) replaces c_i by learner r's
own cotangent, and misses the other learners' outer losses.

Statistics over the whole batch (the centred residual's mean, the extension's annealed
beta = b1 / |L_outer|) are learners' means averaged (:meth:`AllReduceGradients.batch_mean`),
through the same differentiable sum where they carry a graph to eta.

Every learner must issue the same collectives in the same order: they run the same code
on equally shaped shards, so their graphs, and the backward passes' collectives, match.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd import Function


class _SumAcrossLearners(Function):
    """y = sum_r x_r over the group; its adjoint is the same sum of the cotangents."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, group: Any) -> Tensor:
        ctx.group = group
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        return _SumAcrossLearners.apply(grad_output, ctx.group), None


def sum_across_learners(tensor: Tensor, group: Any = None) -> Tensor:
    """The sum of ``tensor`` over the learners, differentiable (backward sums too)."""
    if tensor.requires_grad:
        return _SumAcrossLearners.apply(tensor, group)
    out = tensor.clone(memory_format=torch.contiguous_format)
    dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
    return out


def _flatten(tensors: list[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflatten(flat: Tensor, like: list[Tensor]) -> list[Tensor]:
    parts = torch.split(flat, [t.numel() for t in like])
    return [p.view_as(t) for p, t in zip(parts, like, strict=True)]


class AllReduceGradients:
    """The :class:`~impala_frodo.rule.metagrad.GradientReducer` of N data-parallel learners.

    Gradients are averaged in one collective per call (flattened). ``collective_s`` sums
    the wall time of the forward collectives this learner issued (the backward passes'
    are inside autograd and not in it); :meth:`take_collective_s` reads and resets it.
    """

    def __init__(self, group: Any = None) -> None:
        self.group = group
        self.world_size = dist.get_world_size(group)
        self.collective_s = 0.0

    def _mean(self, tensors: list[Tensor]) -> list[Tensor]:
        if not tensors:
            return tensors
        start = time.perf_counter()
        total = sum_across_learners(_flatten(tensors), self.group)
        self.collective_s += time.perf_counter() - start
        return _unflatten(total / self.world_size, tensors)

    def inner(self, grads: list[Tensor]) -> list[Tensor]:
        """The learners' mean inner gradient, keeping every learner's graph to eta."""
        return self._mean(grads)

    def meta(self, grads: list[Tensor]) -> list[Tensor]:
        """The learners' mean meta-gradient."""
        return self._mean([g.detach() for g in grads])

    def batch_mean(self, tensor: Tensor) -> Tensor:
        """The mean of ``tensor`` over the global batch (equal shards: the mean of means)."""
        return self._mean([tensor.mean().reshape(1)])[0].reshape(())

    def take_collective_s(self) -> float:
        seconds, self.collective_s = self.collective_s, 0.0
        return seconds
