"""The meta-gradient against central finite differences, in float64, on tiny problems.

With one inner step (M = 1) the meta-gradient is the exact total derivative
of the outer loss w.r.t. eta (see impala_frodo.rule.metagrad on stop-gradients),
so finite differences must match it to rounding error.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from impala_frodo.acting.trajectory import Trajectory
from impala_frodo.config.schema import Config
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.metagrad import (
    LOCAL,
    DifferentiableRMSProp,
    DifferentiableSGD,
    GradientReducer,
    LocalGradients,
    detach_params,
    inner_step,
    meta_gradient,
)
from impala_frodo.rule.updater import Updater

OBS_SHAPE, NUM_ACTIONS, STEPS, WIDTH = (3,), 2, 4, 2


def random_batch(rng: np.random.Generator, with_truncation: bool = True) -> Batch:
    logits = rng.normal(size=(STEPS, WIDTH, NUM_ACTIONS))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    actions = rng.integers(NUM_ACTIONS, size=(STEPS, WIDTH))
    continues = np.ones((STEPS, WIDTH), np.float32)
    continues[1, 0] = 0.0  # a terminal inside the unroll
    index = np.zeros(0, np.int64)
    trunc_obs = None
    if with_truncation:
        continues[2, 1] = 0.0  # a time-limit end: bootstrap from the last observation
        index = np.array([2 * WIDTH + 1])
        trunc_obs = rng.normal(size=(1, *OBS_SHAPE))
    trajectory = Trajectory(
        obs=rng.normal(size=(STEPS + 1, WIDTH, *OBS_SHAPE)),
        actions=actions,
        rewards=rng.normal(size=(STEPS, WIDTH)),
        continues=continues,
        behaviour_log_probs=np.take_along_axis(log_probs, actions[..., None], -1)[..., 0],
        truncation_index=index,
        truncation_obs=trunc_obs,
    )
    return Batch.from_trajectories([trajectory], dtype=torch.float64)


def tiny_updater(
    algo: str,
    task: str = "control",
    optim: str = "sgd",
    num_inner_steps: int = 1,
    perturb_head: bool = True,
    reducer: GradientReducer = LOCAL,
    lr: float = 0.1,
    **meta,
) -> Updater:
    torch.manual_seed(0)
    cfg = Config.from_dict(
        {
            "algo": algo,
            "task": task,
            "agent": {"hidden_sizes": [4]},
            "optim": {"name": optim, "lr": lr},
            # A meta step in every window unless told (these tests check the mechanics of
            # one window; the default cadence, "auto", is tested in test_meta_cadence.py).
            "meta": {"num_inner_steps": num_inner_steps, "hidden_size": 3, "every": 1, **meta},
            "loss": {"gamma": 0.9, "lambda_": 0.95},
        }
    )
    updater = Updater(cfg, OBS_SHAPE, NUM_ACTIONS, reducer=reducer)
    if perturb_head and hasattr(updater.meta_net, "head"):
        # Off the zero-initialised head of the default target form: at exactly zero only
        # the head gets a meta-gradient, and the checks would not reach the LSTM.
        with torch.no_grad():
            updater.meta_net.head.weight.normal_(0.0, 0.3)
    return updater.double()


class FrozenStatsRMSProp(DifferentiableRMSProp):
    """RMSProp replaying recorded squared-gradient averages: the statistics held fixed."""

    def __init__(self, base: DifferentiableRMSProp, recorded: list[dict]) -> None:
        super().__init__(base.lr, base.alpha, base.eps)
        self.recorded = list(recorded)

    def update(self, params, grads, state):
        fixed = self.recorded.pop(0)
        new_params = {
            k: p - self.lr * grads[k] / (fixed[k].sqrt() + self.eps) for k, p in params.items()
        }
        return new_params, fixed


def theta_after_inner(updater: Updater, inner_batches, optimizer):
    """theta_M(eta) with the current eta, by plain (non-differentiable) inner steps."""
    params, state = detach_params(updater.params), updater.opt_state
    for batch in inner_batches:
        step = inner_step(
            params,
            state,
            optimizer,
            lambda p, b=batch: updater.inner_loss(p, b),
            create_graph=False,
        )
        params, state = step.params, step.opt_state
    return params


def finite_difference(updater: Updater, inner_batches, outer_batch, optimizer_factory, eps=1e-6):
    """Central differences of G . theta_M(eta), with G = dL_outer/dtheta' at the nominal eta.

    The outer loss has stop-gradients (the V-trace targets and rhos are
    constants of theta'), so the meta-gradient is G . dtheta_M/deta, the chain
    rule with G fixed; differencing G . theta_M(eta) is exactly that.
    """
    theta = theta_after_inner(updater, inner_batches, optimizer_factory())
    loss, _ = updater.outer_loss(theta, outer_batch, inner_batches)
    grads = torch.autograd.grad(loss, list(theta.values()), allow_unused=True)
    outer_grad = {
        k: torch.zeros_like(v) if g is None else g
        for (k, v), g in zip(theta.items(), grads, strict=True)
    }

    def linearised() -> float:
        theta = theta_after_inner(updater, inner_batches, optimizer_factory())
        return sum((outer_grad[k] * v.detach()).sum().item() for k, v in theta.items())

    return central_differences(updater.meta_net, linearised, eps)


def central_differences(module, f, eps: float) -> dict[str, torch.Tensor]:
    """(f(p + eps e_i) - f(p - eps e_i)) / 2 eps for every entry of every parameter of
    ``module``, perturbed in place and restored."""
    grads = {}
    for name, p in module.named_parameters():
        flat = p.data.view(-1)
        g = torch.zeros_like(flat)
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + eps
            plus = f()
            flat[i] = old - eps
            minus = f()
            flat[i] = old
            g[i] = (plus - minus) / (2 * eps)
        grads[name] = g.view_as(p)
    return grads


def analytic(updater: Updater, inner_batches, outer_batch):
    return meta_gradient(
        updater.params,
        updater.opt_state,
        updater.eta,
        inner_batches,
        outer_batch,
        updater.inner.optimizer,
        updater.inner_loss,
        updater.outer_loss,
    )


@pytest.mark.parametrize(
    ("algo", "task", "meta"),
    [
        ("frodo", "control", {}),
        ("frodo", "control", {"target": "plain"}),
        ("frodo", "prediction", {}),
        ("frodo", "prediction", {"target": "plain"}),
        ("frodo-ext", "control", {"ext_beta_mode": "constant", "ext_b1": 0.3}),
        ("mgrl", "control", {}),
    ],
)
def test_meta_gradient_matches_finite_differences_sgd(algo, task, meta):
    updater = tiny_updater(algo, task, **meta)
    rng = np.random.default_rng(0)
    inner_batches = [random_batch(rng)]
    outer_batch = random_batch(rng)
    result = analytic(updater, inner_batches, outer_batch)
    expected = finite_difference(
        updater, inner_batches, outer_batch, lambda: DifferentiableSGD(updater.inner.optimizer.lr)
    )
    total = sum(g.abs().sum().item() for g in result.eta_grads.values())
    assert total > 1e-6, "eta must receive a non-zero meta-gradient"
    for name, g in expected.items():
        torch.testing.assert_close(result.eta_grads[name], g, rtol=1e-5, atol=1e-8, msg=name)


def test_rmsprop_meta_gradient_treats_statistics_as_constants():
    updater = tiny_updater("frodo", optim="rmsprop")
    rng = np.random.default_rng(1)
    inner_batches = [random_batch(rng)]
    outer_batch = random_batch(rng)
    # Record the squared-gradient averages at the nominal eta.
    recorded, params, state = [], detach_params(updater.params), updater.opt_state
    for batch in inner_batches:
        step = inner_step(
            params,
            state,
            updater.inner.optimizer,
            lambda p, b=batch: updater.inner_loss(p, b),
            create_graph=False,
        )
        params, state = step.params, step.opt_state
        recorded.append({k: v.detach().clone() for k, v in state.items()})

    result = analytic(updater, inner_batches, outer_batch)
    expected = finite_difference(
        updater,
        inner_batches,
        outer_batch,
        lambda: FrozenStatsRMSProp(updater.inner.optimizer, recorded),
    )
    for name, g in expected.items():
        torch.testing.assert_close(result.eta_grads[name], g, rtol=1e-5, atol=1e-8, msg=name)
    for name, v in result.opt_state.items():  # and the state continues from the real statistics
        torch.testing.assert_close(v, recorded[-1][name])


def test_a_non_differentiable_inner_step_gives_eta_no_gradient():
    """The report's bug: an update that cuts the graph leaves eta without a meta-gradient."""
    updater = tiny_updater("frodo")
    rng = np.random.default_rng(2)
    batch, outer = random_batch(rng), random_batch(rng)
    step = inner_step(
        updater.params,
        updater.opt_state,
        updater.inner.optimizer,
        lambda p: updater.inner_loss(p, batch),
        create_graph=False,
    )
    loss, _ = updater.outer_loss(step.params, outer, [batch])
    grads = torch.autograd.grad(loss, list(updater.eta.values()), allow_unused=True)
    assert all(g is None for g in grads)


def test_updater_moves_eta_every_m_batches_and_keeps_theta_detached():
    updater = tiny_updater("frodo", num_inner_steps=2)
    rng = np.random.default_rng(3)
    before = {k: v.detach().clone() for k, v in updater.eta.items()}
    for _ in range(2):  # M = 2 inner steps: no meta step yet
        updater.update(random_batch(rng))
    assert all(torch.equal(before[k], v) for k, v in updater.eta.items())
    metrics = updater.update(random_batch(rng))  # the held-out batch: outer step, then inner
    assert updater.num_meta_updates == 1 and updater.num_updates == 3
    assert metrics["meta/grad_norm"] > 0
    changed = [not torch.equal(before[k], v) for k, v in updater.eta.items()]
    assert all(changed)
    # The new chain starts from theta_M as a leaf: one inner step of graph, not three.
    assert all(p.grad_fn is not None for p in updater.params.values())
    assert len(updater.schedule.pending) == 1


def test_meta_gradient_chains_m_inner_steps():
    """theta_M after M differentiable steps equals M plain steps; eta's gradient depends on M."""
    updater = tiny_updater("frodo", num_inner_steps=3)
    rng = np.random.default_rng(4)
    inner_batches = [random_batch(rng) for _ in range(3)]
    outer_batch = random_batch(rng)
    result = analytic(updater, inner_batches, outer_batch)
    plain = theta_after_inner(updater, inner_batches, updater.inner.optimizer)
    for k, v in plain.items():
        torch.testing.assert_close(result.params[k], v.detach())
        assert result.params[k].grad_fn is None
    assert len(result.inner_losses) == 3
    one_step = analytic(updater, inner_batches[:1], outer_batch)
    differs = [
        not torch.allclose(result.eta_grads[k], one_step.eta_grads[k]) for k in result.eta_grads
    ]
    assert any(differs)


class DoublingReducer(LocalGradients):
    """A reducer that doubles every inner gradient and counts its calls."""

    def __init__(self) -> None:
        self.inner_calls = self.meta_calls = 0

    def inner(self, grads):
        self.inner_calls += 1
        return [2.0 * g for g in grads]

    def meta(self, grads):
        self.meta_calls += 1
        return grads

    def batch_mean(self, tensor):
        return tensor.mean()


@pytest.mark.parametrize("schedule", ["chain", "sliding"])
def test_the_gradient_reducer_is_on_the_path_of_inner_steps_and_the_meta_gradient(schedule):
    """Doubling the inner gradients at the seam is SGD at twice the rate, for theta and
    (through the differentiable inner steps) for eta's meta-gradient."""
    reducer = DoublingReducer()
    doubled = tiny_updater("frodo", num_inner_steps=2, schedule=schedule, reducer=reducer)
    faster = tiny_updater("frodo", num_inner_steps=2, schedule=schedule, lr=0.2)  # 2 x 0.1
    rng = np.random.default_rng(8)
    for _ in range(4):
        batch = random_batch(rng)
        doubled.update(batch)
        faster.update(batch)
    assert doubled.num_meta_updates == faster.num_meta_updates >= 1
    assert reducer.meta_calls == doubled.num_meta_updates and reducer.inner_calls >= 4
    for name, value in faster.params.items():
        torch.testing.assert_close(doubled.params[name], value, rtol=1e-12, atol=1e-12)
    for name, value in faster.eta.items():
        torch.testing.assert_close(doubled.eta[name], value, rtol=1e-12, atol=1e-12)
