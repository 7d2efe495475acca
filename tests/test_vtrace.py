"""V-trace against a brute-force numpy transcription of the paper's formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from impala_frodo.rule import vtrace


def reference_vtrace(
    log_rhos, discounts, rewards, values, bootstrap_value, rho_bar, pg_rho_bar, c_bar, lambda_
):
    """Espeholt et al. 2018, eq. 1, as a double loop with per-step discounts d_t:

    v_s = V(x_s) + sum_{t=s}^{T-1} (prod_{i=s}^{t-1} d_i c_i) delta_t,
    delta_t = rho_t (r_t + d_t V(x_{t+1}) - V(x_t)).
    """
    steps, width = log_rhos.shape
    rhos = np.exp(log_rhos)
    values_ext = np.concatenate([values, bootstrap_value[None]], axis=0)  # V(x_0..x_T)
    vs = np.zeros((steps, width))
    for b in range(width):
        for s in range(steps):
            total = values_ext[s, b]
            for t in range(s, steps):
                weight = 1.0
                for i in range(s, t):
                    weight *= discounts[i, b] * lambda_ * min(c_bar, rhos[i, b])
                rho_t = min(rho_bar, rhos[t, b])
                delta = rho_t * (
                    rewards[t, b] + discounts[t, b] * values_ext[t + 1, b] - values_ext[t, b]
                )
                total += weight * delta
            vs[s, b] = total
    vs_ext = np.concatenate([vs, bootstrap_value[None]], axis=0)
    pg = np.zeros((steps, width))
    for b in range(width):
        for s in range(steps):
            pg[s, b] = min(pg_rho_bar, rhos[s, b]) * (
                rewards[s, b] + discounts[s, b] * vs_ext[s + 1, b] - values_ext[s, b]
            )
    return vs, pg


def random_inputs(rng: np.random.Generator, steps: int = 7, width: int = 5):
    log_rhos = rng.uniform(-2.5, 2.5, size=(steps, width))  # rho both below and above 1
    terminal = rng.uniform(size=(steps, width)) < 0.2  # episode ends inside the batch
    discounts = 0.9 * (1.0 - terminal)
    rewards = rng.normal(size=(steps, width))
    values = rng.normal(size=(steps, width))
    bootstrap_value = rng.normal(size=width)
    return log_rhos, discounts, rewards, values, bootstrap_value


@pytest.mark.parametrize(
    ("rho_bar", "pg_rho_bar", "c_bar", "lambda_"),
    [(1.0, 1.0, 1.0, 1.0), (1.0, 1.0, 1.0, 0.9), (2.0, 0.5, 1.5, 0.7), (0.5, 2.0, 0.8, 1.0)],
)
def test_matches_bruteforce_reference(rho_bar, pg_rho_bar, c_bar, lambda_):
    rng = np.random.default_rng(0)
    inputs = random_inputs(rng)
    log_rhos = inputs[0]
    assert (np.exp(log_rhos) > max(rho_bar, c_bar)).any() and (np.exp(log_rhos) < 1).any()
    assert (inputs[1] == 0).any(), "the test must put terminals inside the batch"
    expected_vs, expected_pg = reference_vtrace(*inputs, rho_bar, pg_rho_bar, c_bar, lambda_)
    got = vtrace.from_importance_weights(
        *(torch.as_tensor(x, dtype=torch.float64) for x in inputs),
        clip_rho_threshold=rho_bar,
        clip_pg_rho_threshold=pg_rho_bar,
        clip_c_threshold=c_bar,
        lambda_=lambda_,
    )
    np.testing.assert_allclose(got.vs.numpy(), expected_vs, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got.pg_advantages.numpy(), expected_pg, rtol=1e-10, atol=1e-10)


def test_on_policy_equals_n_step_return():
    rng = np.random.default_rng(1)
    _, discounts, rewards, values, bootstrap_value = random_inputs(rng, steps=6, width=4)
    steps, width = rewards.shape
    # n-step bootstrapped return to the unroll's end, cut at terminals.
    expected = np.zeros_like(rewards)
    acc = bootstrap_value.copy()
    for t in reversed(range(steps)):
        acc = rewards[t] + discounts[t] * acc
        expected[t] = acc
    got = vtrace.from_importance_weights(
        torch.zeros(steps, width, dtype=torch.float64),
        *(torch.as_tensor(x) for x in (discounts, rewards, values, bootstrap_value)),
        clip_c_threshold=1.5,
        lambda_=1.0,
    )
    np.testing.assert_allclose(got.vs.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_gradients_through_gamma_and_lambda_match_finite_differences_of_the_reference():
    """No torch.no_grad inside: MGRL differentiates the targets w.r.t. gamma and lambda.

    The autograd gradient of a random linear functional of (v_s, A_s) against a float64
    central difference of the brute-force reference (a polynomial in gamma and lambda: the
    difference's error is O(h^2), far below the tolerance), with clipped importance weights
    (rho_bar = c_bar = 1) and terminals inside the batch."""
    rng = np.random.default_rng(2)
    log_rhos, discounts, rewards, values, bootstrap_value = random_inputs(rng)
    nonterminal = (discounts > 0).astype(np.float64)
    assert (np.exp(log_rhos) > 1).any() and not nonterminal.all()  # clipping and terminals
    weights_vs, weights_pg = rng.normal(size=(2, *log_rhos.shape))

    def objective(gamma: float, lambda_: float) -> float:
        vs, pg = reference_vtrace(
            log_rhos, gamma * nonterminal, rewards, values, bootstrap_value, 1.0, 1.0, 1.0, lambda_
        )
        return float((weights_vs * vs).sum() + (weights_pg * pg).sum())

    gamma0, lambda0, h = 0.9, 0.8, 1e-6
    gamma = torch.tensor(gamma0, dtype=torch.float64, requires_grad=True)
    lambda_ = torch.tensor(lambda0, dtype=torch.float64, requires_grad=True)
    as_tensor = torch.as_tensor
    out = vtrace.from_importance_weights(
        as_tensor(log_rhos),
        gamma * as_tensor(nonterminal),
        as_tensor(rewards),
        as_tensor(values),
        as_tensor(bootstrap_value),
        clip_rho_threshold=1.0,
        clip_pg_rho_threshold=1.0,
        clip_c_threshold=1.0,
        lambda_=lambda_,
    )
    got = (as_tensor(weights_vs) * out.vs).sum() + (as_tensor(weights_pg) * out.pg_advantages).sum()
    assert got.item() == pytest.approx(objective(gamma0, lambda0), rel=1e-12)
    g_gamma, g_lambda = torch.autograd.grad(got, [gamma, lambda_])

    fd_gamma = (objective(gamma0 + h, lambda0) - objective(gamma0 - h, lambda0)) / (2 * h)
    fd_lambda = (objective(gamma0, lambda0 + h) - objective(gamma0, lambda0 - h)) / (2 * h)
    assert abs(fd_gamma) > 0.1 and abs(fd_lambda) > 0.1, (fd_gamma, fd_lambda)
    assert g_gamma.item() == pytest.approx(fd_gamma, rel=1e-7, abs=1e-9)
    assert g_lambda.item() == pytest.approx(fd_lambda, rel=1e-7, abs=1e-9)


@pytest.mark.parametrize(
    ("name", "shape", "message"),
    [
        ("rewards", (6, 5), "rewards must have the shape of log_rhos"),
        ("bootstrap_value", (4,), "bootstrap_value must be [B]"),
        ("log_rhos", (7,), "time-major"),
    ],
)
def test_shape_errors_are_clear(name, shape, message):
    args = {
        "log_rhos": torch.zeros(7, 5),
        "discounts": torch.zeros(7, 5),
        "rewards": torch.zeros(7, 5),
        "values": torch.zeros(7, 5),
        "bootstrap_value": torch.zeros(5),
    }
    args[name] = torch.zeros(shape)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        vtrace.from_importance_weights(**args)
