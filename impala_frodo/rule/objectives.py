"""Losses of IMPALA, FRODO (inner and outer), the report's extension and MGRL.

Pure functions over time-major ``[T, B]`` tensors (DESIGN sections 4 and 5).
The agent is evaluated once per batch by :func:`evaluate_agent`; the losses
then take its outputs. Stop-gradients are explicit and local: every sg(.) of
the papers is a call of :func:`stop_gradient` (targets built from the agent's
own values, importance weights, the meta-network's value input);
meta-parameters (the meta target g, MGRL's gamma and lambda) keep their graph
so that the inner update stays a differentiable function of eta.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.func import functional_call

from impala_frodo.rule import vtrace
from impala_frodo.rule.batch import Batch

Params = Mapping[str, Tensor]

#: The meta-network's importance-ratio input is log(pi/mu) clipped to [-c, c].
LOG_RHO_INPUT_CLIP = 2.0


def stop_gradient(x: Tensor) -> Tensor:
    """sg(x): the value of ``x`` as a constant of every parameter (``detach``).

    One named function for every stop-gradient in the losses, so that a test can
    hold them at recorded values and check the meta-gradient by finite differences.
    """
    return x.detach()


@dataclass
class AgentOutputs:
    """The agent on one batch. ``[T, B]`` unless noted."""

    logits: Tensor  # [T, B, A] at x_0 .. x_{T-1}
    values: Tensor  # V(x_t), with graph to theta
    bootstrap_value: Tensor  # [B] sg(V(x_T))
    next_values: Tensor  # sg(V(x_{t+1})); V of the last observation where an episode was truncated
    truncation_values: Tensor  # sg(V(last obs)) where an episode was truncated at t, else 0


@dataclass
class LossTerms:
    total: Tensor
    policy: Tensor
    value: Tensor
    entropy: Tensor  # mean entropy H(pi) (the loss term is -entropy_cost * entropy)


def evaluate_agent(agent: nn.Module, params: Params, batch: Batch) -> AgentOutputs:
    """Run the agent on all T+1 observations (and truncated episodes' last ones) in one pass."""
    steps, width = batch.shape
    obs = batch.obs.reshape(-1, *batch.obs.shape[2:])
    num_truncated = batch.truncation_index.numel()
    if num_truncated:
        obs = torch.cat([obs, batch.truncation_obs], dim=0)
    logits, values = functional_call(agent, params, (obs,))
    all_values = values[: (steps + 1) * width].reshape(steps + 1, width)
    logits = logits[: steps * width].reshape(steps, width, -1)

    sg_values = stop_gradient(all_values)
    truncation_values = torch.zeros_like(sg_values[:-1])
    next_values = sg_values[1:]
    if num_truncated:
        last = stop_gradient(values[(steps + 1) * width :])
        truncation_values = truncation_values.flatten().index_put((batch.truncation_index,), last)
        truncation_values = truncation_values.reshape(steps, width)
        next_values = (
            next_values.flatten().index_put((batch.truncation_index,), last).reshape(steps, width)
        )
    return AgentOutputs(
        logits=logits,
        values=all_values[:-1],
        bootstrap_value=sg_values[-1],
        next_values=next_values,
        truncation_values=truncation_values,
    )


class PolicyTerms(NamedTuple):
    """The policy's terms of a control loss on one batch, both ``[T, B]``.

    Prediction tasks have none: their losses take ``policy = None`` (on-policy targets, the
    value term alone), so the task is decided once, where the terms are made.
    """

    log_pi_a: Tensor  # log pi(a_t|x_t), with graph to theta
    entropy: Tensor  # H(pi(.|x_t))


def policy_terms(logits: Tensor, actions: Tensor) -> PolicyTerms:
    """``log pi(a_t|x_t)`` and the entropy ``H(pi(.|x_t))``, both ``[T, B]``."""
    log_probs = torch.log_softmax(logits, dim=-1)
    log_pi_a = log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    return PolicyTerms(log_pi_a, entropy)


def bootstrapped_rewards(batch: Batch, outputs: AgentOutputs, gamma: float | Tensor) -> Tensor:
    """r_t, plus gamma V(last obs) where a time limit cut the episode (it is no terminal)."""
    return batch.rewards + gamma * outputs.truncation_values


def actor_critic_loss(
    log_pi_a: Tensor,
    entropy: Tensor,
    values: Tensor,
    value_targets: Tensor,
    pg_advantages: Tensor,
    *,
    value_cost: float,
    entropy_cost: float,
) -> LossTerms:
    """mean_t [ -A_t log pi(a_t|x_t) + c1 1/2 (target_t - V(x_t))^2 - c2 H(pi(.|x_t)) ].

    ``pg_advantages`` and ``value_targets`` are used as given: stop their
    gradient to theta before calling (they may keep a graph to eta).
    """
    policy = -(pg_advantages * log_pi_a).mean()
    value = 0.5 * (value_targets - values).pow(2).mean()
    mean_entropy = entropy.mean()
    total = policy + value_cost * value - entropy_cost * mean_entropy
    return LossTerms(total=total, policy=policy, value=value, entropy=mean_entropy)


def value_only_loss(values: Tensor, value_targets: Tensor, *, value_cost: float) -> LossTerms:
    """Prediction: c1 1/2 mean_t (target_t - V(x_t))^2."""
    value = 0.5 * (value_targets - values).pow(2).mean()
    zero = value.new_zeros(())
    return LossTerms(total=value_cost * value, policy=zero, value=value, entropy=zero)


def vtrace_returns(
    batch: Batch,
    outputs: AgentOutputs,
    log_pi_a: Tensor | None,
    *,
    gamma: float | Tensor,
    lambda_: float | Tensor,
    clipping: vtrace.Clipping,
) -> vtrace.VTraceReturns:
    """Canonical V-trace targets on sg(V). ``log_pi_a = None``: on-policy (rho = 1)."""
    if log_pi_a is None:
        log_rhos = torch.zeros_like(batch.rewards)
    else:
        log_rhos = stop_gradient(log_pi_a) - batch.behaviour_log_probs
    return vtrace.from_importance_weights(
        log_rhos,
        gamma * batch.continues,
        bootstrapped_rewards(batch, outputs, gamma),
        stop_gradient(outputs.values),
        outputs.bootstrap_value,
        clip_rho_threshold=clipping.rho,
        clip_pg_rho_threshold=clipping.pg_rho,
        clip_c_threshold=clipping.c,
        lambda_=lambda_,
    )


def vtrace_loss(
    batch: Batch,
    outputs: AgentOutputs,
    policy: PolicyTerms | None,
    *,
    gamma: float | Tensor,
    lambda_: float | Tensor,
    value_cost: float,
    entropy_cost: float,
    clipping: vtrace.Clipping,
) -> tuple[LossTerms, vtrace.VTraceReturns]:
    """The canonical V-trace actor-critic loss (IMPALA; FRODO's outer loss; L_revise; MGRL).

    Control (``policy`` given): policy gradient with rho^pg-weighted V-trace advantages,
    value regression to v_s, entropy bonus. Prediction (``policy = None``): the value term
    alone, with on-policy targets (the n-step return for lambda = 1).
    ``gamma`` and ``lambda_`` may be tensors that keep their graph (MGRL's inner loss).
    """
    log_pi_a = None if policy is None else policy.log_pi_a
    returns = vtrace_returns(
        batch, outputs, log_pi_a, gamma=gamma, lambda_=lambda_, clipping=clipping
    )
    if policy is None:
        return value_only_loss(outputs.values, returns.vs, value_cost=value_cost), returns
    terms = actor_critic_loss(
        policy.log_pi_a,
        policy.entropy,
        outputs.values,
        returns.vs,
        returns.pg_advantages,
        value_cost=value_cost,
        entropy_cost=entropy_cost,
    )
    return terms, returns


def meta_target(
    meta_net: nn.Module,
    eta: Params,
    batch: Batch,
    outputs: AgentOutputs,
    gamma: float,
    *,
    canonical: Tensor | None = None,
    log_rhos: Tensor | None = None,
    centre: bool = False,
    batch_mean: Callable[[Tensor], Tensor] = torch.mean,
) -> Tensor:
    """FRODO's target g ``[T, B]`` (DESIGN section 5).

    G_eta runs over u_t = [x_t, r_t, d_t, d_t sg(V(x_{t+1}))] (and, if given, the
    clipped sg(log pi/mu)_t), with d_t = gamma (1 - end_t): at an episode's end the
    next value, V of the next episode's first state after an auto-reset, is zeroed.

    ``canonical``: the residual form g = sg(v_s) + G_eta(tau), with v_s the
    canonical V-trace target ``[T, B]``; ``None``: the paper's plain g = G_eta(tau).
    ``centre``: the residual's correction centred over the batch,
    g = sg(v_s) + G - mean_{T,B}(G), the mean taken by ``batch_mean`` (over every
    learner's batch when several learn in parallel).
    """
    discounts = gamma * batch.continues
    inputs = [
        batch.obs[:-1],
        bootstrapped_rewards(batch, outputs, gamma),
        discounts,
        discounts * outputs.next_values,
    ]
    if log_rhos is not None:
        clip = LOG_RHO_INPUT_CLIP
        inputs.append(stop_gradient(log_rhos).clamp(-clip, clip))
    learned = functional_call(meta_net, eta, tuple(inputs))
    if canonical is None:
        return learned
    if centre:
        learned = learned - batch_mean(learned)
    return stop_gradient(canonical) + learned


def self_consistency(
    target: Tensor,
    batch: Batch,
    outputs: AgentOutputs,
    gamma: float,
    *,
    stop_bootstrap: bool = True,
) -> Tensor:
    """1/2 mean_t (g_t - y_t)^2: the learned target g ``[T, B]`` against its own one-step
    bootstrap y_t = r_t + d_t g_{t+1}, with d_t = gamma (1 - end_t), the truncated
    episodes' rewards bootstrapped as in V-trace, and sg(V(x_T)) in place of g_T.

    ``stop_bootstrap``: y is a constant (sg(.) on g_{t+1}); else the gradient flows
    through both sides (a residual-gradient form).
    """
    following = torch.cat([target[1:], outputs.bootstrap_value.unsqueeze(0)], dim=0)
    if stop_bootstrap:
        following = stop_gradient(following)
    bootstrap = bootstrapped_rewards(batch, outputs, gamma) + gamma * batch.continues * following
    return 0.5 * (target - bootstrap).square().mean()


def target_diagnostics(target: Tensor, canonical: Tensor) -> dict[str, Tensor]:
    """How a learned target g relates to the canonical return v_s (both ``[T, B]``).

    Mean and RMS of g - v_s, and their Pearson correlation over the batch.
    """
    target, canonical = stop_gradient(target), stop_gradient(canonical)
    diff = target - canonical
    centred_t, centred_c = target - target.mean(), canonical - canonical.mean()
    denom = (centred_t.square().sum() * centred_c.square().sum()).sqrt()
    corr = (centred_t * centred_c).sum() / denom.clamp(min=1e-12)
    return {
        "meta/target_minus_return_mean": diff.mean(),
        "meta/target_minus_return_rms": diff.square().mean().sqrt(),
        "meta/target_return_corr": corr,
    }


def frodo_inner_loss(
    batch: Batch,
    outputs: AgentOutputs,
    target: Tensor,
    policy: PolicyTerms | None,
    *,
    value_cost: float,
    entropy_cost: float,
    clip_pg_rho: float,
) -> LossTerms:
    """FRODO's inner loss with the meta target g (DESIGN section 5)::

        mean_t [ -rho^pg_t (g_t - sg(V(x_t))) log pi(a_t|x_t)
                 + c1 1/2 (g_t - V(x_t))^2 - c2 H(pi(.|x_t)) ]

    The advantage stops the gradient to theta only: g keeps its graph to eta,
    so both the policy and the value update depend on eta. ``policy = None``
    (prediction): the value term alone.
    """
    if policy is None:
        return value_only_loss(outputs.values, target, value_cost=value_cost)
    log_rhos = stop_gradient(policy.log_pi_a) - batch.behaviour_log_probs
    pg_rhos = torch.exp(log_rhos).clamp(max=clip_pg_rho)
    advantages = pg_rhos * (target - stop_gradient(outputs.values))
    return actor_critic_loss(
        policy.log_pi_a,
        policy.entropy,
        outputs.values,
        target,
        advantages,
        value_cost=value_cost,
        entropy_cost=entropy_cost,
    )


def extension_beta(
    outer_loss: Tensor, *, b1: float, mode: str, beta_max: float, eps: float
) -> Tensor:
    """Weight of L_revise in the extension (the report, section 5).

    ``constant``: beta = b1. ``annealed``: beta = min(beta_max, b1 / (eps + |sg(L_outer)|)):
    the report's b1 / L_outer, guarded because a control L_outer can be near
    zero or negative.
    """
    if mode == "constant":
        return outer_loss.new_tensor(b1)
    return torch.clamp(b1 / (eps + stop_gradient(outer_loss).abs()), max=beta_max)
