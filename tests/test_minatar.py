"""Image observations end to end: the conv torso, G_eta's image embedding, image envs through
the actors and the actor-learner, and the conv agent's meta-gradient against finite
differences (float64). Tests that need the ``minatar`` package skip without it."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces

from actors.rollout import RolloutActor, RolloutSpec
from impala_frodo.acting.trajectory import Trajectory
from impala_frodo.acting.unroll import Unroller
from impala_frodo.config.checks import ConfigError
from impala_frodo.config.presets import load_preset, preset_names
from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.envs import make_batched_env
from impala_frodo.envs.minatar_envs import GAMES, minatar_installed
from impala_frodo.networks.agent import AgentNet
from impala_frodo.networks.meta import MetaNet
from impala_frodo.networks.numpy_policy import NumpyPolicy
from impala_frodo.networks.torsos import ConvTorso, resolve_torso
from impala_frodo.networks.weights import param_layout
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.metagrad import DifferentiableSGD
from impala_frodo.rule.updater import Updater
from learner.app.env_check import check_env_id
from tests.test_frodo_targets import finite_difference_m_steps
from tests.test_metagrad import analytic, finite_difference

needs_minatar = pytest.mark.skipif(
    not minatar_installed(), reason="minatar is not installed (pip install '.[minatar]')"
)
#: MinAtar Breakout: channel 3 holds the bricks, 3 full rows of 10 at an episode's start.
BREAKOUT_BRICK_CHANNEL, BREAKOUT_BRICKS = 3, 30


# ------------------------------------------------------------------ torsos


def test_torso_is_chosen_by_the_observation_shape():
    assert resolve_torso("auto", (10, 10, 4)) == "conv"
    assert resolve_torso("auto", (11, 6)) == "mlp"  # Catch's grid stays an MLP input
    assert resolve_torso("auto", (5,)) == "mlp"
    assert resolve_torso("mlp", (10, 10, 4)) == "mlp"
    with pytest.raises(ValueError, match=r"H, W >= 3"):
        resolve_torso("conv", (5,))
    with pytest.raises(ValueError, match=r"H, W >= 3"):
        resolve_torso("conv", (2, 10, 4))
    assert isinstance(AgentNet((10, 10, 4), 6).torso, ConvTorso)
    assert isinstance(AgentNet((10, 10, 4), 6, torso="mlp").torso, torch.nn.Sequential)


def test_conv_torso_is_minatars_network_on_channels_last_images():
    torch.manual_seed(0)
    agent = AgentNet((10, 10, 4), 6, (128,), torso="conv")
    shapes = {k: tuple(v.shape) for k, v in agent.named_parameters()}
    assert shapes["torso.conv.weight"] == (16, 4, 3, 3)  # one 3x3 conv, 16 channels
    assert shapes["torso.dense.0.weight"] == (128, 16 * 8 * 8)  # no padding: 8 x 8 out
    obs = torch.rand(3, 2, 10, 10, 4)  # [T, B, H, W, C]
    logits, values = agent(obs)
    assert logits.shape == (3, 2, 6) and values.shape == (3, 2)
    # The same as a plain NCHW convolution of each image, by hand.
    nchw = obs.reshape(6, 10, 10, 4).permute(0, 3, 1, 2).contiguous()
    conv = torch.nn.functional.conv2d(nchw, agent.torso.conv.weight, agent.torso.conv.bias)
    features = agent.torso.dense(conv.relu().reshape(6, -1))
    torch.testing.assert_close(values.reshape(6), agent.value(features).squeeze(-1))


def test_meta_net_embeds_images_and_takes_flat_observations_as_they_are():
    image = MetaNet((6, 5, 3), hidden_size=4, embed_size=7, embed_channels=2)
    assert image.embed is not None and image.cell.input_size == 7 + 3
    assert MetaNet((11, 6), hidden_size=4).embed is None
    assert MetaNet((11, 6), hidden_size=4).cell.input_size == 66 + 3
    steps, batch = 4, 3
    zeros = torch.zeros(steps, batch)
    g = image(torch.rand(steps, batch, 6, 5, 3), zeros, zeros + 0.9, zeros)
    assert g.shape == (steps, batch)


# ---------------------------------------------------------- image envs


class PixelEnv(gymnasium.Env):
    """uint8 RGB images [6, 5, 3]; episodes truncate after 3 steps; the reward is the action."""

    observation_space = spaces.Box(0, 255, shape=(6, 5, 3), dtype=np.uint8)
    action_space = spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), float(action), False, self.t == 3, {}

    def _obs(self):
        return np.full((6, 5, 3), 51 * self.t, dtype=np.uint8)


def test_a_gymnasium_pixel_env_keeps_its_shape_and_bytes_scaled_where_read():
    if "test/PixelEnv-v0" not in gymnasium.registry:
        gymnasium.register("test/PixelEnv-v0", entry_point=PixelEnv, disable_env_checker=True)
    env = make_batched_env("test/PixelEnv-v0", 2, seed=0)
    assert env.observation_shape == (6, 5, 3) and env.num_actions == 2
    assert env.observation_dtype == np.uint8 and env.observation_scale == 1 / 255
    obs = env.reset()
    assert obs.shape == (2, 6, 5, 3) and obs.dtype == np.uint8 and obs.max() == 0
    env.step(np.array([0, 1]))
    step = env.step(np.array([1, 1]))
    np.testing.assert_array_equal(step.obs, 102)
    step = env.step(np.array([1, 0]))  # truncated: the last image kept, the next one fresh
    assert step.truncated.all() and not step.terminated.any()
    assert step.final_obs.shape == (2, 6, 5, 3) and step.final_obs.dtype == np.uint8
    np.testing.assert_array_equal(step.final_obs, 153)
    np.testing.assert_array_equal(step.obs, 0)
    env.close()


def test_byte_images_reach_the_networks_as_floats_in_unit_range():
    """Unrolls carry uint8 pixels; the batch and the acting policy both read them x 1/255."""
    if "test/PixelEnv-v0" not in gymnasium.registry:
        gymnasium.register("test/PixelEnv-v0", entry_point=PixelEnv, disable_env_checker=True)
    env = make_batched_env("test/PixelEnv-v0", 2, seed=0)
    agent = AgentNet(env.observation_shape, env.num_actions, (4,), torso="conv", conv_channels=2)
    policy = NumpyPolicy.from_params(dict(agent.named_parameters()), obs_scale=1 / 255)
    tr = Unroller(env, unroll_length=3, seed=0).unroll(policy)  # truncated at the third step
    assert tr.obs.dtype == np.uint8 and tr.truncation_obs.dtype == np.uint8
    assert tr.obs_scale == env.observation_scale
    with torch.no_grad():  # mu read x / 255: the agent's logits on the scaled image
        expected = agent(torch.from_numpy(tr.obs[1]).float() / 255)[0].numpy()
    np.testing.assert_allclose(policy.logits(tr.obs[1]), expected, rtol=1e-5, atol=1e-6)
    batch = Batch.from_trajectories([tr, tr])
    assert batch.obs.dtype == torch.float32 and batch.truncation_obs.dtype == torch.float32
    torch.testing.assert_close(batch.obs[:, 0], torch.from_numpy(tr.obs[:, 0]).float() / 255)
    torch.testing.assert_close(batch.truncation_obs, torch.full((4, 6, 5, 3), 0.6))
    other = Trajectory(**{**vars(tr), "obs_scale": 1.0})
    with pytest.raises(ValueError, match="obs_scale"):
        Batch.from_trajectories([tr, other])
    env.close()


def test_minatar_ids_without_the_package_say_how_to_install(monkeypatch):
    from impala_frodo.envs import minatar_envs

    monkeypatch.setattr(minatar_envs, "minatar_installed", lambda: False)
    monkeypatch.setattr(gymnasium, "registry", {})
    with pytest.raises(ValueError, match=r"impala-frodo\[minatar\]"):
        make_batched_env("MinAtar/Breakout-v0", 1)
    with pytest.raises(ConfigError, match=r"impala-frodo\[minatar\]"):
        check_env_id("MinAtar/Breakout-v0")  # the CLI's check: a usage error, not a crash


def test_every_minatar_preset_builds_a_conv_agent_on_a_minatar_game():
    names = [n for n in preset_names() if n.startswith("minatar-")]
    games = {n.split("-")[1] for n in names}
    assert games == {"breakout", "spaceinvaders", "asterix", "freeway", "seaquest"}
    for game in games:
        assert {f"minatar-{game}-{arm}" for arm in ("impala", "frodo", "frodo-self")} <= set(names)
    for name in names:
        cfg = load_preset(name)
        if minatar_installed():
            check_env_id(cfg.env.id)
        assert cfg.env.id.removeprefix("MinAtar/").removesuffix("-v0") in GAMES
        assert cfg.env.kwargs["sticky_action_prob"] == 0.1
        assert cfg.agent.torso == "conv" and cfg.agent.hidden_sizes == (128,)


def flat_config(cfg: Config) -> dict[str, object]:
    """Every key of a config, dotted (``meta.consistency_cost``), bookkeeping included."""
    flat: dict[str, object] = {}
    for key, value in cfg.to_dict().items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        flat.update({key if name is None else f"{key}.{name}": v for name, v in items})
    return flat


def test_each_frodo_self_preset_is_its_frodo_preset_with_the_self_consistent_term():
    """Issue 32's third arm: minatar-<game>-frodo-self differs from minatar-<game>-frodo
    in its consistency term alone (the budget too is the same), a term the frodo preset
    does not have."""
    games = {n.split("-")[1] for n in preset_names() if n.startswith("minatar-")}
    for game in games:
        frodo = flat_config(load_preset(f"minatar-{game}-frodo"))
        self_ = flat_config(load_preset(f"minatar-{game}-frodo-self"))
        differ = {
            k: (frodo[k], self_[k])
            for k in frodo.keys() | self_.keys()
            if frodo.get(k) != self_.get(k)
        }
        assert differ == {
            "preset": (f"minatar-{game}-frodo", f"minatar-{game}-frodo-self"),
            "meta.consistency_cost": (0.0, 0.1),
            "meta.consistency_form": ("canonical", "self"),
        }, game


@needs_minatar
@pytest.mark.parametrize("game", sorted(GAMES))
def test_minatar_games_are_binary_channels_last_images(game):
    env = make_batched_env(f"MinAtar/{game}-v0", 2, seed=0)
    assert env.observation_shape == (10, 10, GAMES[game]) and env.num_actions == 6
    assert env.observation_dtype == np.uint8 and env.observation_scale == 1.0
    obs = env.reset()
    assert obs.dtype == np.uint8 and set(np.unique(obs)) <= {0, 1}
    env.close()


@needs_minatar
def test_minatar_breakout_through_a_rollout_actor():
    """Shapes and dtypes of [T+1, B, 10, 10, C] unrolls, and episodes that end and restart."""
    cfg = set_dotted(
        Config(),
        {
            "env.id": "MinAtar/Breakout-v0",
            "env.kwargs": {"sticky_action_prob": 0.1},
            "agent.hidden_sizes": [8],
            "run.envs_per_actor": 4,
            "run.unroll_length": 25,
        },
    )
    agent = AgentNet.from_config((10, 10, 4), 6, cfg.agent)
    params = {k: v.detach() for k, v in agent.named_parameters()}
    spec = RolloutSpec.from_config(cfg, num_envs=cfg.run.envs_per_actor)
    actor = RolloutActor(spec, param_layout(params), seed=1)
    assert actor.policy.conv  # mu evaluates the conv torso
    ended = 0
    for version in range(1, 9):
        tr = actor.unroll(version, params)
        assert tr.obs.shape == (26, 4, 10, 10, 4) and tr.obs.dtype == np.uint8  # 1 byte a cell
        assert tr.actions.shape == (25, 4) and tr.actions.dtype == np.int64
        assert tr.actions.min() >= 0 and tr.actions.max() < 6
        assert tr.rewards.dtype == np.float32 and tr.continues.dtype == np.float32
        assert tr.truncation_index.size == 0  # MinAtar episodes end by termination only
        bricks = tr.obs[..., BREAKOUT_BRICK_CHANNEL].sum(axis=(-1, -2))  # [T+1, B]
        t, b = np.nonzero(tr.continues == 0)
        # After an end the next observation is a new episode's first: every brick back.
        np.testing.assert_array_equal(bricks[t + 1, b], BREAKOUT_BRICKS)
        ended += t.size
        assert len(tr.episode_returns) == t.size
        assert all(r >= 0 and r == int(r) for r in tr.episode_returns)  # a point per brick
    assert ended > 0, "random Breakout play must lose the ball within 200 steps"
    # A learner batch of these unrolls trains a FRODO agent (conv torso, conv phi).
    batch = Batch.from_trajectories([tr, tr])
    assert batch.obs.shape == (26, 8, 10, 10, 4) and batch.obs.dtype == torch.float32
    torch.testing.assert_close(batch.obs[:, :4], torch.from_numpy(tr.obs).float())
    # FRODO's meta step reaches the conv embedding phi of the frames, a part of eta (the
    # plain target: at the residual form's zero head only the head would move at first).
    frodo = Updater(
        set_dotted(cfg, {"algo": "frodo", "meta.target": "plain", "meta.num_inner_steps": 2}),
        (10, 10, 4),
        6,
    )
    before = {k: v.detach().clone() for k, v in frodo.eta.items() if k.startswith("embed.")}
    for _ in range(3):  # two inner steps, then the held-out batch: one meta step
        assert np.isfinite(frodo.update(batch)["loss/inner"])
    assert frodo.num_meta_updates == 1
    moved = [k for k, v in before.items() if not torch.equal(v, frodo.eta[k])]
    assert before and set(moved) == set(before), f"moved by the meta step: {moved}"
    actor.close()


def breakout_value_losses(seed: int, lrs: Sequence[float], updates: int = 20) -> list[list[float]]:
    """IMPALA's value loss over ``updates`` updates on one fixed batch of Breakout frames,
    for each learning rate, from the same agent (seeded ``seed``).

    Prediction (V only) with plain SGD; the unroll's last step is made terminal, so the
    n-step targets are the discounted rewards to the unroll's end: fixed while V learns.
    """
    cfg = set_dotted(
        Config(),
        {
            "algo": "impala",
            "task": "prediction",
            "env.id": "MinAtar/Breakout-v0",
            "agent.hidden_sizes": [128],  # the MinAtar presets' network
            "optim.name": "sgd",
            "run.envs_per_actor": 4,
            "run.unroll_length": 25,
        },
    )
    torch.manual_seed(seed)
    agent = AgentNet.from_config((10, 10, 4), 6, cfg.agent)
    params = {k: v.detach() for k, v in agent.named_parameters()}
    spec = RolloutSpec.from_config(cfg, num_envs=cfg.run.envs_per_actor)
    actor = RolloutActor(spec, param_layout(params), seed=1)
    for version in range(1, 9):
        trajectory = actor.unroll(version, params)
    actor.close()
    continues = trajectory.continues.copy()
    continues[-1] = 0.0
    trajectory = Trajectory(**{**vars(trajectory), "continues": continues})
    batch = Batch.from_trajectories([trajectory])
    runs = []
    for lr in lrs:
        torch.manual_seed(seed)
        updater = Updater(set_dotted(cfg, {"optim.lr": lr}), (10, 10, 4), 6)
        runs.append([updater.update(batch)["loss/value"] for _ in range(updates)])
    return runs


@needs_minatar
def test_the_value_loss_on_minatar_frames_falls_and_not_without_learning():
    """V (conv torso) fits a fixed batch of Breakout frames (:func:`breakout_value_losses`):
    it falls at every update and, averaged over the last 5 of 20, ends below 0.95 of the
    first; the same run with the learning rate at the smallest positive float (SGD's steps
    round to nothing) stays at the first. Measured over agent seeds 0-9: 0.46-0.88 of the
    first, falling at every update, with learning; exactly 1.0 without."""
    learning, frozen = breakout_value_losses(0, [0.05, math.ulp(0.0)])
    assert all(b < a for a, b in itertools.pairwise(learning)), learning
    assert np.mean(learning[-5:]) < 0.95 * learning[0], learning
    assert np.mean(frozen[-5:]) > 0.99 * frozen[0], frozen
    assert frozen[0] == learning[0]  # the same agent on the same batch


@needs_minatar
@pytest.mark.ray
def test_frodo_on_minatar_runs_through_the_ray_actor_learner(ray_local, tmp_path):
    """A short FRODO run on Breakout writes what a run writes: a metrics.jsonl record after
    the first update and up to the budget, with the losses, the meta-gradient and the
    learned target's statistics, and a final checkpoint of the conv agent and the
    meta-network with its frame embedding, its counters those of the run."""
    from impala_frodo.records.checkpoint import load_checkpoint
    from impala_frodo.records.runlog import read_metrics
    from learner.app.driver import TrainOptions, train
    from learner.control.exit_codes import ExitCode

    steps_per_update, inner_steps = 4 * 10, 2  # one unroll of 4 envs x 10 steps
    cfg = set_dotted(
        load_preset("minatar-breakout-frodo"),
        {
            "run.num_actors": 2,
            "run.envs_per_actor": 4,
            "run.unroll_length": 10,
            "run.total_env_steps": 1_600,
            "run.logdir": str(tmp_path / "runs"),
            "meta.num_inner_steps": inner_steps,
        },
    )
    result = train(cfg, TrainOptions(progress=False, handle_signals=False))
    assert result.exit_code == ExitCode.OK and result.reason == "budget"
    assert result.env_steps == 1_600 == result.updates * steps_per_update
    assert result.episodes > 0 and np.isfinite(result.mean_return)

    records = read_metrics(result.run_dir / "metrics.jsonl")
    steps = [r["env_steps"] for r in records]
    assert steps[0] == steps_per_update and steps[-1] == result.env_steps
    assert steps == sorted(set(steps)), "records' env steps must increase"
    every_record = ("loss/inner", "loss/value", "loss/policy", "meta/target_minus_return_rms")
    for record in records:
        missing = [k for k in every_record if k not in record]
        assert not missing, f"record at {record['env_steps']} lacks {missing}"
        assert all(np.isfinite(record[k]) for k in every_record), record
    grad_norms = [r["meta/grad_norm"] for r in records if "meta/grad_norm" in r]
    assert grad_norms and all(0 < g < np.inf for g in grad_norms), grad_norms
    assert sum(r["episode/count"] for r in records) == result.episodes
    assert records[-1]["progress/updates"] == result.updates

    state = load_checkpoint(result.run_dir / "checkpoints" / "latest.pt")
    counters, updater = state["counters"], state["updater"]
    assert counters["env_steps"] == result.env_steps and counters["episodes"] == result.episodes
    # The chain schedule: a window ends before every M-th update from the (M + 1)-th on,
    # and the preset's cadence ("auto": one window in 4 here) takes an outer step in the
    # first of every 4 of them.
    assert cfg.meta_every == 4
    windows = (result.updates - 1) // inner_steps
    assert updater["num_updates"] == result.updates
    assert updater["num_meta_updates"] == len(range(0, windows, cfg.meta_every))
    assert updater["params"]["torso.conv.weight"].shape == (16, 4, 3, 3)  # Breakout's 4 channels
    assert updater["meta_net"]["embed.conv.weight"].shape == (16, 4, 3, 3)  # phi of the frames


# ------------------------------------------------- meta-gradient, conv agent

IMAGE_SHAPE, NUM_ACTIONS, STEPS, WIDTH = (4, 4, 2), 3, 4, 2


def image_batch(rng: np.random.Generator) -> Batch:
    """A float64 batch of random binary images, with a terminal and an off-policy mu."""
    actions = rng.integers(NUM_ACTIONS, size=(STEPS, WIDTH))
    continues = np.ones((STEPS, WIDTH))
    continues[1, 0] = 0.0
    trajectory = Trajectory(
        obs=rng.integers(0, 2, size=(STEPS + 1, WIDTH, *IMAGE_SHAPE)).astype(np.float64),
        actions=actions,
        rewards=rng.normal(size=(STEPS, WIDTH)),
        continues=continues,
        behaviour_log_probs=np.log(rng.uniform(0.1, 0.9, size=(STEPS, WIDTH))),
    )
    return Batch.from_trajectories([trajectory], dtype=torch.float64)


def tiny_conv_updater(num_inner_steps: int) -> Updater:
    torch.manual_seed(0)
    cfg = Config.from_dict(
        {
            "algo": "frodo",
            "agent": {"torso": "auto", "conv_channels": 2, "hidden_sizes": [4]},
            "optim": {"name": "sgd", "lr": 0.1},
            "meta": {
                "num_inner_steps": num_inner_steps,
                "hidden_size": 3,
                "embed_size": 3,
                "embed_channels": 2,
                "target": "plain",
            },
            "loss": {"gamma": 0.9, "lambda_": 0.95},
        }
    )
    updater = Updater(cfg, IMAGE_SHAPE, NUM_ACTIONS)
    assert isinstance(updater.agent.torso, ConvTorso) and updater.meta_net.embed is not None
    return updater.double()


def test_conv_agent_meta_gradient_matches_finite_differences():
    """M = 1: the meta-gradient is the exact derivative, the image embedding's included."""
    updater = tiny_conv_updater(num_inner_steps=1)
    rng = np.random.default_rng(0)
    inner, outer = [image_batch(rng)], image_batch(rng)
    result = analytic(updater, inner, outer)
    expected = finite_difference(
        updater, inner, outer, lambda: DifferentiableSGD(updater.inner.optimizer.lr)
    )
    assert result.eta_grads["embed.conv.weight"].abs().sum() > 1e-6, "phi(x) must learn"
    for name, g in expected.items():
        torch.testing.assert_close(result.eta_grads[name], g, rtol=1e-5, atol=1e-8, msg=name)


def test_conv_agent_meta_gradient_through_two_inner_steps(monkeypatch):
    updater = tiny_conv_updater(num_inner_steps=2)
    rng = np.random.default_rng(1)
    inner, outer = [image_batch(rng), image_batch(rng)], image_batch(rng)
    result = analytic(updater, inner, outer)
    expected = finite_difference_m_steps(updater, inner, outer, monkeypatch)
    for name, g in expected.items():
        torch.testing.assert_close(result.eta_grads[name], g, rtol=1e-5, atol=1e-8, msg=name)
