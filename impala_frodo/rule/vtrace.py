"""V-trace off-policy targets (Espeholt et al. 2018, arXiv 1802.01561, section 4.1).

All tensors are time-major: ``[T, B]`` per step, ``[B]`` for the bootstrap
value. Nothing here stops gradients: callers pass detached values where the
targets must be constants (the usual case), and leave the graph on
``discounts`` or ``lambda_`` where those are meta-parameters (MGRL).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class VTraceReturns(NamedTuple):
    vs: Tensor  # [T, B] v_s, the value targets
    pg_advantages: Tensor  # [T, B] rho_s (r_s + d_s v_{s+1} - V(x_s))


class Clipping(NamedTuple):
    """V-trace's truncation levels (``None``: no truncation): rho-bar of the targets, the
    policy gradient's rho, and c-bar of the traces."""

    rho: float | None = 1.0
    pg_rho: float | None = 1.0
    c: float | None = 1.0


def _check_shapes(
    log_rhos: Tensor, discounts: Tensor, rewards: Tensor, values: Tensor, bootstrap_value: Tensor
) -> None:
    if log_rhos.dim() != 2:
        raise ValueError(f"log_rhos must be time-major [T, B], got shape {tuple(log_rhos.shape)}")
    for name, x in (("discounts", discounts), ("rewards", rewards), ("values", values)):
        if x.shape != log_rhos.shape:
            raise ValueError(
                f"{name} must have the shape of log_rhos {tuple(log_rhos.shape)} ([T, B]), "
                f"got {tuple(x.shape)}"
            )
    if bootstrap_value.shape != log_rhos.shape[1:]:
        raise ValueError(
            f"bootstrap_value must be [B] = {tuple(log_rhos.shape[1:])}, "
            f"got {tuple(bootstrap_value.shape)}"
        )


def from_importance_weights(
    log_rhos: Tensor,
    discounts: Tensor,
    rewards: Tensor,
    values: Tensor,
    bootstrap_value: Tensor,
    *,
    clip_rho_threshold: float | None = 1.0,
    clip_pg_rho_threshold: float | None = 1.0,
    clip_c_threshold: float | None = 1.0,
    lambda_: float | Tensor = 1.0,
) -> VTraceReturns:
    """V-trace targets from log importance ratios log(pi(a_t|x_t) / mu(a_t|x_t)).

    With rho_t = min(rho_bar, pi/mu) and c_t = lambda min(c_bar, pi/mu)
    (eq. 1 of the paper, and its lambda variant in appendix C)::

        delta_t = rho_t (r_t + d_t V(x_{t+1}) - V(x_t))
        v_s - V(x_s) = delta_s + d_s c_s (v_{s+1} - V(x_{s+1})),   v_T = V(x_T)
        A_s = rho^pg_s (r_s + d_s v_{s+1} - V(x_s))

    Args:
        log_rhos: ``[T, B]`` log importance ratios of the actions taken.
        discounts: ``[T, B]`` d_t = gamma (1 - terminal_t).
        rewards: ``[T, B]`` r_t, the reward after a_t.
        values: ``[T, B]`` V(x_t) for t < T.
        bootstrap_value: ``[B]`` V(x_T).
        clip_rho_threshold: rho_bar (None: no clipping).
        clip_pg_rho_threshold: rho_bar of the policy-gradient weight (None: no clipping).
        clip_c_threshold: c_bar (None: no clipping).
        lambda_: trace-cutting lambda in [0, 1]; a tensor keeps its graph (MGRL).

    Returns:
        ``VTraceReturns(vs [T, B], pg_advantages [T, B])``.
    """
    _check_shapes(log_rhos, discounts, rewards, values, bootstrap_value)
    rhos = torch.exp(log_rhos)
    clipped_rhos = rhos if clip_rho_threshold is None else rhos.clamp(max=clip_rho_threshold)
    cs = rhos if clip_c_threshold is None else rhos.clamp(max=clip_c_threshold)
    cs = lambda_ * cs

    values_tp1 = torch.cat([values[1:], bootstrap_value.unsqueeze(0)], dim=0)
    deltas = clipped_rhos * (rewards + discounts * values_tp1 - values)

    # Backward recursion v_s - V(x_s) = delta_s + d_s c_s (v_{s+1} - V(x_{s+1})).
    decay = discounts * cs
    acc = torch.zeros_like(bootstrap_value)
    vs_minus_v: list[Tensor] = []
    for t in range(log_rhos.shape[0] - 1, -1, -1):
        acc = deltas[t] + decay[t] * acc
        vs_minus_v.append(acc)
    vs = torch.stack(vs_minus_v[::-1], dim=0) + values

    vs_tp1 = torch.cat([vs[1:], bootstrap_value.unsqueeze(0)], dim=0)
    pg_rhos = rhos if clip_pg_rho_threshold is None else rhos.clamp(max=clip_pg_rho_threshold)
    pg_advantages = pg_rhos * (rewards + discounts * vs_tp1 - values)
    return VTraceReturns(vs=vs, pg_advantages=pg_advantages)
