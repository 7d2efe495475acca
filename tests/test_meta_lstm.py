"""MetaNet's reverse LSTM equals the per-step ``nn.LSTMCell`` loop it replaces."""

from __future__ import annotations

import torch

from impala_frodo.networks.meta import MetaNet


def reference_targets(net: MetaNet, obs, rewards, discounts, next_values):
    """The plain formulation: ``net.cell`` per step in reverse time, state reset at ends."""
    steps, batch = rewards.shape
    inputs = torch.cat(
        [
            obs.reshape(steps, batch, -1),
            rewards[..., None],
            discounts[..., None],
            next_values[..., None],
        ],
        dim=-1,
    )
    continues = (discounts > 0).to(inputs.dtype).unsqueeze(-1)
    h = inputs.new_zeros(batch, net.hidden_size)
    c = inputs.new_zeros(batch, net.hidden_size)
    outputs = []
    for t in range(steps - 1, -1, -1):
        h, c = net.cell(inputs[t], (h * continues[t], c * continues[t]))
        outputs.append(h)
    return net.head(torch.stack(outputs[::-1])).squeeze(-1)


def test_reverse_lstm_matches_the_cell_loop_values_and_gradients():
    torch.manual_seed(0)
    steps, batch = 7, 5
    net = MetaNet((4, 3), hidden_size=6).double()
    obs = torch.rand(steps, batch, 4, 3, dtype=torch.float64)
    rewards = torch.randn(steps, batch, dtype=torch.float64)
    ends = torch.rand(steps, batch) < 0.3
    ends[0, 0] = ends[-1, 1] = ends[3, 2] = True  # ends at the first, last and a middle step
    discounts = 0.9 * (~ends).double()
    next_values = discounts * torch.randn(steps, batch, dtype=torch.float64)
    cotangent = torch.randn(steps, batch, dtype=torch.float64)
    params = list(net.parameters())

    fast = net(obs, rewards, discounts, next_values)
    slow = reference_targets(net, obs, rewards, discounts, next_values)
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)

    fast_grads = torch.autograd.grad((fast * cotangent).sum(), params, create_graph=True)
    slow_grads = torch.autograd.grad((slow * cotangent).sum(), params, create_graph=True)
    for a, b in zip(fast_grads, slow_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)

    # Second order (the meta-gradient differentiates through gradients): the same too.
    fast_gg = torch.autograd.grad(
        sum(g.square().sum() for g in fast_grads), params, materialize_grads=True
    )
    slow_gg = torch.autograd.grad(
        sum(g.square().sum() for g in slow_grads), params, materialize_grads=True
    )
    for a, b in zip(fast_gg, slow_gg, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_reset_cuts_the_dependence_on_later_steps():
    torch.manual_seed(1)
    steps, batch = 6, 2
    net = MetaNet((3,), hidden_size=4).double()
    obs = torch.rand(steps, batch, 3, dtype=torch.float64)
    rewards = torch.randn(steps, batch, dtype=torch.float64, requires_grad=True)
    discounts = torch.full((steps, batch), 0.9, dtype=torch.float64)
    discounts[2, 0] = 0.0  # episode of column 0 ends at t = 2
    targets = net(obs, rewards, discounts, torch.zeros_like(discounts))
    (grad,) = torch.autograd.grad(targets[:3, 0].sum(), rewards)
    assert grad[3:, 0].abs().max() == 0  # g_0..g_2 do not see the next episode
    assert grad[:3, 0].abs().min() > 0
    assert grad[:, 1].abs().max() == 0
