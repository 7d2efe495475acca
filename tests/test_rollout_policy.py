"""mu acts with numpy: NumpyPolicy against the torch agent, its sampling, and torch-free actors."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from impala_frodo.config.schema import Config
from impala_frodo.networks.agent import AgentNet, agent_layout
from impala_frodo.networks.numpy_policy import NumpyPolicy
from impala_frodo.networks.weights import pack_params, param_layout


def agent_and_policy(obs_shape, num_actions, hidden, torso="auto", scale=1.0, seed=0):
    torch.manual_seed(seed)
    agent = AgentNet(obs_shape, num_actions, hidden, torso=torso, conv_channels=3)
    for p in agent.parameters():  # away from init's small values: every term matters
        p.data.normal_(0.0, 0.5)
    policy = NumpyPolicy.from_params(dict(agent.named_parameters()), obs_scale=scale)
    return agent, policy


@pytest.mark.parametrize(
    ("obs_shape", "hidden", "torso"),
    [
        ((10, 5), (64, 64), "auto"),  # Catch: a 2-layer MLP on the flattened board
        ((5,), (), "auto"),  # the random walk: linear heads on one-hot states
        ((4,), (7,), "mlp"),  # CartPole-like vectors
        ((6, 5, 3), (8,), "conv"),  # an image: conv 3x3, then a dense layer
        ((6, 5, 3), (), "conv"),  # conv features straight into the heads
    ],
)
def test_numpy_logits_equal_the_torch_agents(obs_shape, hidden, torso):
    agent, policy = agent_and_policy(obs_shape, 4, hidden, torso)
    obs = np.random.default_rng(0).normal(size=(9, *obs_shape)).astype(np.float32)
    with torch.no_grad():
        expected = agent(torch.from_numpy(obs))[0].numpy()
    np.testing.assert_allclose(policy.logits(obs), expected, rtol=1e-5, atol=1e-5)


def test_byte_images_are_scaled_before_the_network():
    agent, policy = agent_and_policy((6, 5, 2), 3, (8,), scale=1 / 255)
    obs = np.random.default_rng(1).integers(0, 256, size=(4, 6, 5, 2), dtype=np.uint8)
    with torch.no_grad():
        expected = agent(torch.from_numpy(obs).float() / 255)[0].numpy()
    np.testing.assert_allclose(policy.logits(obs), expected, rtol=1e-5, atol=1e-5)


def test_sampled_actions_follow_the_softmax_and_report_their_log_probs():
    layout = (("policy.bias", (3,)), ("policy.weight", (3, 1)))
    policy = NumpyPolicy(layout, seed=0)
    policy.load(np.array([0.0, 1.0, 2.0, 0.0, 0.0, 0.0], np.float32), version=3)
    obs = np.zeros((20_000, 1), np.float32)
    actions, log_probs = policy(obs)
    probs = np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum()
    counts = np.bincount(actions, minlength=3)
    # Binomial standard error per action: about 0.003 here; 5 of them is never hit by chance.
    np.testing.assert_allclose(counts / counts.sum(), probs, atol=5 * np.sqrt(0.25 / 20_000))
    np.testing.assert_allclose(log_probs, np.log(probs)[actions], rtol=1e-6)
    assert actions.dtype == np.int64 and log_probs.dtype == np.float32
    again, _ = NumpyPolicy.from_params(
        {"policy.bias": np.array([0.0, 1.0, 2.0]), "policy.weight": np.zeros((3, 1))}, seed=0
    )(obs)
    np.testing.assert_array_equal(actions, again)  # same seed, same draws


def test_weights_are_read_in_place_and_checked():
    params = {"policy.weight": torch.randn(2, 3), "policy.bias": torch.randn(2)}
    flat = pack_params(params)
    assert flat.dtype == np.float32 and flat.shape == (8,)
    policy = NumpyPolicy(param_layout(params))
    with pytest.raises(RuntimeError, match="no weights"):
        policy.logits(np.zeros((1, 3), np.float32))
    policy.load(flat, version=1)
    for name, value in policy.params.items():
        np.testing.assert_array_equal(value, params[name].numpy())
        assert np.shares_memory(value, flat)  # views, not copies
    with pytest.raises(ValueError, match=r"expected \(8,\)"):
        policy.load(flat[:5], version=2)
    with pytest.raises(ValueError, match="layout"):
        NumpyPolicy((("torso.0.weight", (2, 3)),))  # no policy head


def test_agent_layout_is_the_learners_packing():
    cfg = Config()
    agent = AgentNet.from_config((10, 5), 3, cfg.agent)
    assert agent_layout((10, 5), 3, cfg.agent) == param_layout(dict(agent.named_parameters()))


def test_a_rollout_actor_never_imports_torch():
    """The actor process path (config, env, numpy mu, Unroller) runs without torch."""
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        from actors.rollout import RolloutActor, RolloutSpec
        from impala_frodo.config.schema import Config
        layout = (("policy.bias", (3,)), ("policy.weight", (3, 4)),
                  ("torso.0.bias", (4,)), ("torso.0.weight", (4, 50)))
        cfg = Config()
        spec = RolloutSpec.from_config(cfg, num_envs=cfg.run.envs_per_actor)
        actor = RolloutActor(spec, layout, seed=0)
        size = sum(int(np.prod(s)) for _, s in layout)
        tr = actor.unroll(0, np.zeros(size, np.float32))
        assert tr.actions.shape == (cfg.run.unroll_length, cfg.run.envs_per_actor)
        print("torch" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False", "the actor path imported torch"
