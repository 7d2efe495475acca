"""FRODO's target forms: no look past an episode's end, and meta-gradients through M >= 2
inner steps against central finite differences (float64) for every parameterisation.

Through M > 1 inner steps the meta-gradient is the derivative of the update rule as
written, with every sg(.) a constant even though theta_i depends on eta (see
impala_frodo.rule.metagrad). The finite differences here hold each sg(.) at the value it took at
the nominal eta, by recording :func:`impala_frodo.rule.objectives.stop_gradient` once and
replaying it in the perturbed runs; they are then the same derivative, computed
independently of autograd's graph through the inner steps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from impala_frodo.acting.trajectory import Trajectory
from impala_frodo.rule import objectives
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.metagrad import DifferentiableSGD, detach_params
from tests.test_metagrad import (
    OBS_SHAPE,
    analytic,
    central_differences,
    random_batch,
    theta_after_inner,
    tiny_updater,
)


class StopGradientReplay:
    """Records every sg(x) of a run, then replays the recorded values in order."""

    def __init__(self) -> None:
        self.recorded: list[torch.Tensor] = []
        self.replaying = False
        self._next = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.replaying:
            self.recorded.append(x.detach().clone())
            return x.detach()
        value = self.recorded[self._next]
        assert value.shape == x.shape, "the replayed run must make the same sg calls"
        self._next += 1
        return value

    def replay(self) -> None:
        self.replaying, self._next = True, 0


def finite_difference_m_steps(updater, inner_batches, outer_batch, monkeypatch, eps=1e-6):
    """Central differences of G . theta_M(eta) + L_outer(theta_M^0; eta), with every inner
    sg(.) held at its nominal value. G = dL_outer/dtheta' and theta_M^0 are taken at the
    nominal eta; the second term is the outer loss's direct dependence on eta (the
    consistency term's), its sg(.) held at their nominal values too (the self-consistent
    term stops the gradient of g's own bootstrap, which depends on eta)."""
    sgd = DifferentiableSGD(updater.inner.optimizer.lr)
    theta = theta_after_inner(updater, inner_batches, sgd)
    nominal_theta = detach_params(theta, requires_grad=False)
    loss, _ = updater.outer_loss(theta, outer_batch, inner_batches)
    grads = torch.autograd.grad(loss, list(theta.values()), allow_unused=True)
    outer_grad = {
        k: torch.zeros_like(v) if g is None else g
        for (k, v), g in zip(theta.items(), grads, strict=True)
    }
    sg = StopGradientReplay()
    monkeypatch.setattr(objectives, "stop_gradient", sg)
    theta_after_inner(updater, inner_batches, sgd)  # records the nominal sg values,
    updater.outer_loss(nominal_theta, outer_batch, inner_batches)  # the direct term's too

    def linearised() -> float:
        sg.replay()
        theta = theta_after_inner(updater, inner_batches, sgd)
        through_theta = sum((outer_grad[k] * v.detach()).sum().item() for k, v in theta.items())
        direct, _ = updater.outer_loss(nominal_theta, outer_batch, inner_batches)
        return through_theta + direct.item()

    expected = central_differences(updater.meta_net, linearised, eps)
    monkeypatch.undo()
    return expected


def off_policy_batch(rng: np.random.Generator) -> Batch:
    """A random batch whose behaviour log-probs are not the agent's: rho != 1."""
    batch = random_batch(rng)
    batch.behaviour_log_probs = batch.behaviour_log_probs + torch.as_tensor(
        rng.uniform(-1.5, 1.5, size=batch.behaviour_log_probs.shape)
    )
    return batch


PARAMETERISATIONS = [  # (algo, task, [meta], M)
    ("frodo", "control", {"target": "plain"}, 2),
    ("frodo", "control", {"target": "plain"}, 3),
    ("frodo", "control", {"target": "plain-zero-head"}, 2),
    ("frodo", "control", {"target": "residual"}, 2),
    ("frodo", "control", {"target": "residual"}, 3),
    ("frodo", "control", {"target": "residual", "ratio_input": True}, 2),
    ("frodo", "control", {"target": "residual-centred"}, 2),
    ("frodo", "control", {"consistency_cost": 0.5}, 2),
    ("frodo", "control", {"consistency_cost": 0.5, "consistency_form": "self"}, 2),
    ("frodo", "control", {"consistency_cost": 0.5, "consistency_form": "self-unstopped"}, 3),
    ("frodo", "prediction", {"consistency_cost": 0.5, "consistency_form": "self"}, 2),
    ("frodo", "prediction", {"target": "residual"}, 2),
    ("frodo-ext", "control", {"ext_beta_mode": "constant", "ext_b1": 0.3}, 2),
    ("mgrl", "control", {}, 3),
]


@pytest.mark.parametrize(("algo", "task", "meta", "num_inner_steps"), PARAMETERISATIONS, ids=str)
def test_meta_gradient_through_m_steps_matches_finite_differences(
    algo, task, meta, num_inner_steps, monkeypatch
):
    updater = tiny_updater(algo, task, num_inner_steps=num_inner_steps, **meta)
    rng = np.random.default_rng(num_inner_steps)
    inner_batches = [off_policy_batch(rng) for _ in range(num_inner_steps)]
    outer_batch = off_policy_batch(rng)
    result = analytic(updater, inner_batches, outer_batch)
    expected = finite_difference_m_steps(updater, inner_batches, outer_batch, monkeypatch)
    total = sum(g.abs().sum().item() for g in result.eta_grads.values())
    assert total > 1e-6, "eta must receive a non-zero meta-gradient"
    for name, g in expected.items():
        torch.testing.assert_close(result.eta_grads[name], g, rtol=1e-5, atol=1e-8, msg=name)


def test_the_finite_difference_check_can_fail(monkeypatch):
    """Differencing without the sg replay differs from the meta-gradient through M = 3 steps:
    the replay is what makes the two the same derivative, not a loose tolerance."""
    updater = tiny_updater("frodo", num_inner_steps=3)
    rng = np.random.default_rng(3)
    inner_batches = [off_policy_batch(rng) for _ in range(3)]
    outer_batch = off_policy_batch(rng)
    result = analytic(updater, inner_batches, outer_batch)
    monkeypatch.setattr(StopGradientReplay, "replay", lambda self: None)
    monkeypatch.setattr(StopGradientReplay, "__call__", lambda self, x: x.detach())
    expected = finite_difference_m_steps(updater, inner_batches, outer_batch, monkeypatch)
    assert any(
        not torch.allclose(result.eta_grads[k], g, rtol=1e-5, atol=1e-8)
        for k, g in expected.items()
    )


def one_terminal_batch(next_first_obs: np.ndarray) -> Batch:
    """One env, T = 4, an episode ending at t = 1; x_2 is the next episode's first state."""
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(5, 1, *OBS_SHAPE))
    obs[2, 0] = next_first_obs
    continues = np.ones((4, 1), np.float32)
    continues[1, 0] = 0.0
    trajectory = Trajectory(
        obs=obs,
        actions=np.zeros((4, 1), np.int64),
        rewards=rng.normal(size=(4, 1)),
        continues=continues,
        behaviour_log_probs=np.full((4, 1), np.log(0.5)),
    )
    return Batch.from_trajectories([trajectory], dtype=torch.float64)


def target_of(updater, batch, out):
    """FRODO's target g and the canonical v_s of ``updater`` on ``batch``."""
    policy = updater.objective.policy(batch, out)
    return updater.objective.target(updater.eta, batch, out, policy)


@pytest.mark.parametrize(
    "meta", [{"target": "plain"}, {"target": "residual"}, {"ratio_input": True}], ids=str
)
def test_no_target_sees_past_its_episode_end(meta):
    """g_0 and g_1 belong to the episode ending at t = 1: the next episode's first state x_2
    (and so V(x_2)) must not change them. It did when V(x_{t+1}) entered without d_t."""
    updater = tiny_updater("frodo", **meta)
    targets = []
    for first_obs in (np.zeros(OBS_SHAPE), np.full(OBS_SHAPE, 5.0)):
        batch = one_terminal_batch(first_obs)
        out = objectives.evaluate_agent(updater.agent, updater.params, batch)
        targets.append(target_of(updater, batch, out)[0].detach())
    torch.testing.assert_close(targets[0][:2], targets[1][:2], rtol=0, atol=0)
    assert not torch.equal(targets[0][2:], targets[1][2:])  # the next episode sees x_2


def test_residual_target_with_zero_head_starts_at_the_canonical_return():
    updater = tiny_updater("frodo", target="residual", perturb_head=False)
    batch = off_policy_batch(np.random.default_rng(5))
    out = objectives.evaluate_agent(updater.agent, updater.params, batch)
    target, canonical = target_of(updater, batch, out)
    torch.testing.assert_close(target, canonical)
    plain = tiny_updater("frodo", target="plain-zero-head", perturb_head=False)
    target = target_of(plain, batch, out)[0]
    torch.testing.assert_close(target, torch.zeros_like(canonical))


def test_centred_residual_has_the_residuals_correction_less_its_batch_mean():
    """With the same (perturbed) meta-network, centred g = residual g - mean(g - v_s)."""
    batch = off_policy_batch(np.random.default_rng(6))
    residual = tiny_updater("frodo", target="residual")
    centred = tiny_updater("frodo", target="residual-centred")
    centred.meta_net.load_state_dict(residual.meta_net.state_dict())
    out = objectives.evaluate_agent(residual.agent, residual.params, batch)
    g, v = target_of(residual, batch, out)
    g_c, v_c = target_of(centred, batch, out)
    torch.testing.assert_close(v_c, v)
    correction = g - v
    assert correction.mean().abs() > 1e-3  # the perturbed head does shift the targets
    torch.testing.assert_close(g_c - v_c, correction - correction.mean())


def test_ratio_input_with_mu_equal_to_pi_changes_nothing():
    """On-policy (mu = pi) the ratio input is 0: the target is that of a meta-network whose
    ratio weights are dropped."""
    with_ratio = tiny_updater("frodo", ratio_input=True)
    without = tiny_updater("frodo")
    with torch.no_grad():
        without.meta_net.head.load_state_dict(with_ratio.meta_net.head.state_dict())
        for name, p in without.meta_net.cell.named_parameters():
            q = getattr(with_ratio.meta_net.cell, name)
            p.copy_(q[:, :-1] if name == "weight_ih" else q)
    batch = random_batch(np.random.default_rng(6))
    out = objectives.evaluate_agent(with_ratio.agent, with_ratio.params, batch)
    log_pi_a, _ = objectives.policy_terms(out.logits, batch.actions)
    batch.behaviour_log_probs = log_pi_a.detach()  # mu = pi
    torch.testing.assert_close(
        target_of(with_ratio, batch, out)[0],
        target_of(without, batch, out)[0],
    )


def test_sliding_schedule_meta_steps_after_every_update_through_the_last_m():
    updater = tiny_updater("frodo", num_inner_steps=2, schedule="sliding")
    rng = np.random.default_rng(7)
    batches = [random_batch(rng) for _ in range(4)]
    for batch in batches[:2]:
        updater.update(batch)
    assert updater.num_meta_updates == 0
    assert all(p.grad_fn is None for p in updater.params.values())  # plain inner steps
    expected = analytic_from(updater, list(updater.schedule.pending), batches[2])
    applied: dict[str, torch.Tensor] = {}
    adam_step = updater.schedule.meta_step.optimizer.step

    def capture_then_step():
        applied.update({k: p.grad.clone() for k, p in updater.meta_net.named_parameters()})
        adam_step()

    updater.schedule.meta_step.optimizer.step = capture_then_step
    updater.update(batches[2])
    assert updater.num_meta_updates == 1
    for k, g in expected.items():
        torch.testing.assert_close(applied[k], g)
    updater.update(batches[3])
    assert updater.num_meta_updates == 2
    assert [p.batch for p in updater.schedule.pending] == batches[2:4]


def analytic_from(updater, window, held_out):
    """The meta-gradient from the window's first parameters through its batches."""
    from impala_frodo.rule.metagrad import meta_gradient

    return meta_gradient(
        detach_params(window[0].params),
        window[0].opt_state,
        updater.eta,
        [p.batch for p in window],
        held_out,
        updater.inner.optimizer,
        updater.inner_loss,
        updater.outer_loss,
    ).eta_grads


def test_the_self_consistency_term_by_hand():
    """1/2 mean (g_t - (r~_t + gamma c_t g_{t+1}))^2 with g_T = V(x_T), and its gradient
    to g, against explicit loops: stopped (g_{t+1} a constant) and unstopped."""
    rng = np.random.default_rng(11)
    batch = random_batch(rng)  # a terminal at (1, 0) and a truncation at (2, 1)
    steps, width = batch.shape
    gamma = 0.9
    outputs = objectives.AgentOutputs(
        logits=torch.zeros(steps, width, 2, dtype=torch.float64),
        values=torch.as_tensor(rng.normal(size=(steps, width))),
        bootstrap_value=torch.as_tensor(rng.normal(size=width)),
        next_values=torch.zeros(steps, width, dtype=torch.float64),
        truncation_values=torch.zeros(steps, width, dtype=torch.float64).index_put(
            (torch.tensor([2]), torch.tensor([1])), torch.tensor([0.7], dtype=torch.float64)
        ),
    )
    g = rng.normal(size=(steps, width))
    r = batch.rewards.numpy() + gamma * outputs.truncation_values.numpy()
    c = batch.continues.numpy()
    boot = outputs.bootstrap_value.numpy()
    y = np.empty_like(g)
    for t in range(steps):
        following = boot if t == steps - 1 else g[t + 1]
        y[t] = r[t] + gamma * c[t] * following
    n = steps * width
    expected_loss = 0.5 * ((g - y) ** 2).sum() / n
    grad_stopped = (g - y) / n
    grad_unstopped = grad_stopped.copy()
    for t in range(1, steps):
        grad_unstopped[t] -= gamma * c[t - 1] * (g[t - 1] - y[t - 1]) / n
    for stop, expected_grad in ((True, grad_stopped), (False, grad_unstopped)):
        target = torch.as_tensor(g).requires_grad_(True)
        loss = objectives.self_consistency(target, batch, outputs, gamma, stop_bootstrap=stop)
        (grad,) = torch.autograd.grad(loss, [target])
        assert loss.item() == pytest.approx(expected_loss, rel=1e-12)
        np.testing.assert_allclose(grad.numpy(), expected_grad, rtol=1e-10, atol=1e-14)
    # The two forms' gradients differ where an earlier step bootstraps from g_t.
    assert not np.allclose(grad_stopped, grad_unstopped)


@pytest.mark.parametrize("form", ["self", "self-unstopped"])
def test_a_self_consistent_target_costs_nothing(form):
    """A target that is its own bootstrap everywhere has a zero consistency term."""
    updater = tiny_updater("frodo", consistency_cost=1.0, consistency_form=form)
    rng = np.random.default_rng(12)
    batch = random_batch(rng, with_truncation=False)
    outputs = objectives.evaluate_agent(updater.agent, updater.params, batch)
    steps = batch.shape[0]
    r = objectives.bootstrapped_rewards(batch, outputs, 0.9)
    g = torch.empty_like(r)
    following = outputs.bootstrap_value
    for t in range(steps - 1, -1, -1):  # solve g_t = r_t + gamma c_t g_{t+1} backwards
        g[t] = r[t] + 0.9 * batch.continues[t] * following
        following = g[t]
    loss = objectives.self_consistency(g, batch, outputs, 0.9, stop_bootstrap=form == "self")
    assert loss.item() == pytest.approx(0.0, abs=1e-20)
