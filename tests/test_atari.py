"""Atari: the ALE backend against Gymnasium's own ALE env, reward clipping and raw scores,
IMPALA's ResNet (torch and numpy), the 57 games' presets and the short form, exit-2 errors,
human-normalised scores, and a short Pong run through the Ray actor-learner.

Tests that need ``ale-py`` (the ``atari`` extra) skip without it; the Gymnasium comparison
also needs OpenCV (``AtariPreprocessing`` resizes with it; the extra installs it).
"""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch

from impala_frodo.acting.unroll import Unroller
from impala_frodo.config.checks import ConfigError
from impala_frodo.config.presets import atari as atari_presets
from impala_frodo.config.presets import load_preset, preset_names
from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.envs import BatchStep, make_batched_env
from impala_frodo.envs.atari import (
    AtariSettings,
    atari_game,
    atari_installed,
    channels_last,
)
from impala_frodo.envs.atari_scores import (
    ATARI_57,
    GAMES_BY_GYM_NAME,
    REFERENCE_SCORES,
    gym_name,
    human_normalised,
    summarise,
)
from impala_frodo.envs.base import BatchedEnv
from impala_frodo.networks.agent import AgentNet
from impala_frodo.networks.meta import MetaNet
from impala_frodo.networks.numpy_policy import NumpyPolicy
from impala_frodo.networks.numpy_resnet import conv3x3_same, max_pool3x3_s2
from impala_frodo.networks.torsos import ConvTorso, ResNetTorso, resolve_torso
from learner.control.exit_codes import ExitCode

needs_ale = pytest.mark.skipif(
    not atari_installed(), reason="ale-py is not installed (pip install '.[atari]')"
)
needs_cv2 = pytest.mark.skipif(
    importlib.util.find_spec("cv2") is None, reason="opencv is not installed ('.[atari]')"
)

# ------------------------------------------------------------------ scores


def test_human_normalised_scores_against_hand_computed_values():
    # Breakout 100 points: (100 - 1.7) / (30.5 - 1.7) = 98.3 / 28.8
    assert human_normalised("breakout", 100.0) == pytest.approx(3.4131944, abs=1e-6)
    # Pong 0 points (a draw): (0 + 20.7) / (14.6 + 20.7) = 20.7 / 35.3
    assert human_normalised("Pong", 0.0) == pytest.approx(0.5864023, abs=1e-6)
    assert human_normalised("ms_pacman", 307.3) == 0.0  # the random agent
    assert human_normalised("MsPacman", 6951.6) == pytest.approx(1.0)  # the human tester
    summary = summarise({"breakout": 100.0, "pong": 0.0, "ms_pacman": 6951.6})
    assert summary["median_hns"] == pytest.approx(1.0)
    assert summary["mean_hns"] == pytest.approx((3.4131944 + 0.5864023 + 1.0) / 3, abs=1e-6)
    assert summary["num_games"] == 3
    assert math.isnan(summarise({})["median_hns"])
    with pytest.raises(ValueError, match="the 57"):
        human_normalised("tetris", 1.0)


def test_the_57_games_and_their_names():
    assert len(ATARI_57) == 57 and len(GAMES_BY_GYM_NAME) == 57
    assert all(human > random for random, human in REFERENCE_SCORES.values())
    assert gym_name("montezuma_revenge") == "MontezumaRevenge"
    assert atari_game("ALE/UpNDown-v5") == "up_n_down" and atari_game("ALE/Pong") == "pong"
    for bad in ("ALE/Tetris-v5", "ALE/pong-v5", "ALE/Pong-v4", "ALE/"):
        with pytest.raises(ValueError, match="57 games: Alien"):
            atari_game(bad)


@needs_ale
def test_every_game_is_a_rom_of_the_installed_ale():
    from ale_py import roms

    assert set(ATARI_57) <= set(roms.get_all_rom_ids())


# ------------------------------------------------------------------ ResNet


def test_resnet_is_chosen_for_atari_frames_and_has_impalas_shapes():
    assert resolve_torso("auto", (84, 84, 4)) == "resnet"
    assert resolve_torso("auto", (10, 10, 4)) == "conv"  # MinAtar keeps its conv
    agent = AgentNet((84, 84, 4), 18, (256,))
    assert isinstance(agent.torso, ResNetTorso)
    shapes = {k: tuple(v.shape) for k, v in agent.named_parameters()}
    assert shapes["torso.sections.0.conv.weight"] == (16, 4, 3, 3)
    assert shapes["torso.sections.1.blocks.1.conv1.weight"] == (32, 32, 3, 3)
    assert shapes["torso.sections.2.conv.weight"] == (32, 32, 3, 3)
    assert shapes["torso.dense.0.weight"] == (256, 32 * 11 * 11)  # 84 -> 42 -> 21 -> 11
    convs = [k for k in shapes if k.endswith("weight") and len(shapes[k]) == 4]
    assert len(convs) == 15  # 3 sections x (1 + 2 blocks x 2)
    obs = torch.rand(3, 2, 84, 84, 4)  # [T, B, H, W, C]
    logits, values = agent(obs)
    assert logits.shape == (3, 2, 18) and values.shape == (3, 2)


def test_meta_net_embeds_atari_frames_with_a_resnet_in_eta():
    meta = MetaNet((84, 84, 4), hidden_size=8, embed_size=16, embed_channels=4)
    assert isinstance(meta.embed, ResNetTorso) and meta.cell.input_size == 16 + 3
    assert tuple(meta.embed.sections[0].conv.weight.shape) == (4, 4, 3, 3)
    assert tuple(meta.embed.sections[2].conv.weight.shape) == (8, 8, 3, 3)
    assert isinstance(MetaNet((10, 10, 4)).embed, ConvTorso)
    zeros = torch.zeros(2, 3)
    g = meta(torch.rand(2, 3, 84, 84, 4), zeros, zeros + 0.99, zeros)
    assert g.shape == (2, 3)
    g.sum().backward()
    assert meta.embed.sections[0].conv.weight.grad.abs().sum() > 0  # phi(x) learns


@pytest.mark.parametrize("size", [(7, 5), (21, 21), (42, 42)])
def test_numpy_conv_and_pool_match_torch(size):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, *size, 3)).astype(np.float32)
    weight = rng.normal(size=(5, 3, 3, 3)).astype(np.float32)
    bias = rng.normal(size=5).astype(np.float32)
    nchw = torch.from_numpy(x).permute(0, 3, 1, 2)
    expected = torch.nn.functional.conv2d(
        nchw, torch.from_numpy(weight), torch.from_numpy(bias), padding=1
    )
    got = conv3x3_same(x, weight, bias)
    np.testing.assert_allclose(got, expected.permute(0, 2, 3, 1).numpy(), rtol=1e-4, atol=1e-4)
    pooled = torch.nn.functional.max_pool2d(nchw, 3, stride=2, padding=1)
    np.testing.assert_array_equal(max_pool3x3_s2(x), pooled.permute(0, 2, 3, 1).numpy())


def test_numpy_policy_gives_the_torch_resnets_logits_on_uint8_frames():
    torch.manual_seed(0)
    agent = AgentNet((84, 84, 4), 18, (256,))
    policy = NumpyPolicy.from_params(dict(agent.named_parameters()), obs_scale=1 / 255)
    assert policy.resnet is not None and not policy.conv
    frames = np.random.default_rng(1).integers(0, 256, size=(3, 84, 84, 4), dtype=np.uint8)
    with torch.no_grad():
        expected = agent(torch.from_numpy(frames).float() / 255)[0].numpy()
    np.testing.assert_allclose(policy.logits(frames), expected, rtol=1e-4, atol=1e-5)
    actions, log_probs = policy(frames)
    assert actions.shape == (3,) and actions.max() < 18 and np.all(log_probs < 0)


# ------------------------------------------------------------------ raw scores


class ClippedEnv(BatchedEnv):
    """One env: rewards 5, -3, 0.5 clipped to 1, -1, 0.5; the episode ends at step 3."""

    num_envs, observation_shape, num_actions = 1, (2,), 2

    def reset(self, seed=None):
        self.t = 0
        return np.zeros((1, 2), np.float32)

    def step(self, actions):
        raw = np.array([[5.0], [-3.0], [0.5]][self.t % 3], np.float32)
        self.t += 1
        return BatchStep(
            obs=np.zeros((1, 2), np.float32),
            rewards=np.clip(raw, -1, 1),
            terminated=np.array([self.t % 3 == 0]),
            truncated=np.zeros(1, bool),
            final_obs=self._empty_final_obs(),
            raw_rewards=raw,
        )


def test_unrolls_learn_clipped_rewards_and_log_raw_scores():
    policy = NumpyPolicy.from_params(dict(AgentNet((2,), 2, ()).named_parameters()))
    tr = Unroller(ClippedEnv(), unroll_length=6).unroll(policy)
    np.testing.assert_array_equal(tr.rewards[:, 0], [1, -1, 0.5, 1, -1, 0.5])
    assert tr.episode_returns == [2.5, 2.5]  # 5 - 3 + 0.5, not 1 - 1 + 0.5


# ------------------------------------------------------------------ backend


@needs_ale
def test_atari_env_keeps_uint8_channels_last_frames_and_the_full_action_set():
    env = make_batched_env("ALE/Pong-v5", 2, seed=0)
    assert env.observation_shape == (84, 84, 4) and env.num_actions == 18
    assert env.observation_dtype == np.uint8 and env.observation_scale == 1 / 255
    obs = env.reset()
    assert obs.shape == (2, 84, 84, 4) and obs.dtype == np.uint8
    step = env.step(np.array([0, 1]))
    assert step.obs.shape == (2, 84, 84, 4) and step.raw_rewards is not None
    env.close()
    frames = np.arange(2 * 4 * 3 * 5).reshape(2, 4, 3, 5)  # [N, C, H, W]
    assert channels_last(frames).shape == (2, 3, 5, 4)
    assert channels_last(frames)[1, 2, 3, 0] == frames[1, 0, 2, 3]


@needs_ale
@needs_cv2
@pytest.mark.parametrize("game", ["Pong", "Breakout"])
def test_backend_matches_gymnasiums_ale_env_with_the_same_preprocessing(game):
    """Frames and rewards of ``BatchedAtari`` and of Gymnasium's ``ALE/<Game>-v5`` with
    ``AtariPreprocessing`` and ``FrameStackObservation``, one seed, one action sequence.
    No no-ops (the two draw them from different generators); the stacks agree once full
    (Gymnasium pads the first with the reset frame, the ALE with zeros)."""
    import ale_py
    import gymnasium
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

    gymnasium.register_envs(ale_py)
    reference = gymnasium.make(
        f"ALE/{game}-v5", frameskip=1, repeat_action_probability=0.0, full_action_space=True
    )
    reference = FrameStackObservation(
        AtariPreprocessing(reference, noop_max=0, frame_skip=4, screen_size=84), 4
    )
    env = make_batched_env(f"ALE/{game}-v5", 1, noop_max=0, clip_rewards=False)
    ref_obs, _ = reference.reset(seed=7)
    obs = env.reset(seed=7)
    np.testing.assert_array_equal(obs[0, :, :, -1], ref_obs[-1])  # the newest frame
    rng = np.random.default_rng(0)
    rewards = []
    for t in range(400):
        action = int(rng.integers(18))
        ref_obs, ref_reward, ref_term, _, _ = reference.step(action)
        step = env.step(np.array([action]))
        assert step.rewards[0] == ref_reward and step.raw_rewards[0] == ref_reward
        assert bool(step.terminated[0]) == ref_term, t
        if ref_term:
            break
        expected = np.moveaxis(ref_obs, 0, -1)  # [4, 84, 84] -> [84, 84, 4]
        if t >= 3:
            np.testing.assert_array_equal(step.obs[0], expected, err_msg=f"step {t}")
        else:
            np.testing.assert_array_equal(step.obs[0, :, :, -1], expected[:, :, -1])
        rewards.append(ref_reward)
    assert np.unique(step.obs).size > 10, "frames must be images, not blanks"
    if game == "Pong":
        assert any(r != 0 for r in rewards), "random Pong loses points within 400 steps"
    env.close()
    reference.close()


@needs_ale
def test_rewards_clipped_for_learning_and_raw_scores_in_episode_returns():
    """Space Invaders pays 5 to 30 points an invader: learning sees +1, returns the points.
    Episodes capped at 400 frames end as truncations, their last frames kept."""
    env = make_batched_env("ALE/SpaceInvaders-v5", 4, seed=0, max_episode_frames=400)
    unroller = Unroller(env, unroll_length=110, seed=0)
    policy = NumpyPolicy.from_params(
        dict(AgentNet((84, 84, 4), 18, (8,), torso="mlp").named_parameters()), obs_scale=1 / 255
    )
    tr = unroller.unroll(policy)
    assert tr.rewards.max() <= 1.0 and tr.rewards.min() >= -1.0
    assert tr.rewards.max() == 1.0, "random play shoots an invader within 100 steps"
    assert tr.truncation_index.size == 4 and tr.truncation_obs.shape == (4, 84, 84, 4)
    assert tr.truncation_obs.dtype == np.uint8
    assert len(tr.episode_returns) == 4  # each env's capped episode
    returns = np.array(tr.episode_returns)
    assert returns.max() > 1.0 and np.all(returns % 5 == 0), returns  # raw points
    ended = tr.continues == 0
    assert np.all(tr.rewards[ended] <= 1.0)
    env.close()


@needs_ale
def test_same_seed_same_game_and_noop_starts_differ_between_envs():
    def first_frames(seed):
        env = make_batched_env("ALE/Breakout-v5", 3, seed=seed)
        frames = [env.reset()]
        frames += [env.step(np.array([1, 3, 4])).obs for _ in range(30)]
        env.close()
        return np.stack(frames)

    a, b = first_frames(5), first_frames(5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, first_frames(6))
    # Up to 30 no-ops: Space Invaders' invaders march from the first frame, so envs that
    # waited different numbers of no-ops start from different frames; with none, alike.
    for noop_max, alike in ((30, False), (0, True)):
        env = make_batched_env("ALE/SpaceInvaders-v5", 4, seed=1, noop_max=noop_max)
        obs = env.reset()
        assert all(np.array_equal(obs[0], obs[i]) for i in range(1, 4)) == alike, noop_max
        env.close()


def test_atari_settings_are_checked():
    assert AtariSettings().to_kwargs()["max_episode_frames"] == 108_000
    for bad in ({"noop_max": -1}, {"frameskip": 0}, {"repeat_action_probability": 1.0}):
        with pytest.raises(ValueError):
            AtariSettings(**bad)


# ------------------------------------------------------------------ presets and CLI


def test_every_game_has_generated_impala_and_frodo_presets():
    names = set(preset_names())
    for game in ATARI_57:
        for algo in atari_presets.ALGOS:
            name = atari_presets.preset_name(game, algo)
            assert name in names
            text = (atari_presets.PRESET_DIR / f"{name}.toml").read_text()
            assert text == atari_presets.preset_text(game, algo), f"{name}: regenerate"
    cfg = load_preset("atari-pong-frodo")
    assert cfg.algo == "frodo" and cfg.env.id == "ALE/Pong-v5"
    assert cfg.agent.torso == "resnet" and cfg.agent.hidden_sizes == (256,)
    assert cfg.env.kwargs["noop_max"] == 30 and cfg.env.kwargs["clip_rewards"] is True
    assert cfg.run.unroll_length == 20 and cfg.run.total_env_steps * 4 == 200_000_000
    impala = load_preset("atari-mspacman-impala")
    assert impala.algo == "impala" and impala.optim.max_grad_norm == 40.0


def _train_args(*argv: str):
    from learner.app.args import build_parser, normalise_argv

    return build_parser().parse_args(normalise_argv(argv))


def test_the_short_form_applies_the_atari_defaults(monkeypatch):
    from learner.app import args as cli

    monkeypatch.setattr(cli, "check_env", lambda cfg: None)  # no ALE needed here
    cfg = cli.config_from_args(_train_args("--env", "ALE/Breakout-v5", "--algo", "impala"))
    assert cfg == load_preset("atari-breakout-impala")
    cfg = cli.config_from_args(_train_args("--env", "ALE/Breakout-v5", "--seed", "3"))
    assert cfg.algo == "frodo" and cfg.agent.torso == "resnet" and cfg.run.seed == 3
    cfg = cli.config_from_args(_train_args("--env", "ALE/Breakout-v5", "--algo", "mgrl"))
    assert cfg.algo == "mgrl" and cfg.env.kwargs == load_preset("atari-breakout-impala").env.kwargs
    assert cli.config_from_args(_train_args("--env", "CartPole-v1")).agent == Config().agent


def test_unknown_game_or_missing_extra_is_exit_2_with_one_line(monkeypatch, capsys):
    from impala_frodo.envs import atari
    from learner.app.cli import main

    assert main(["train", "--env", "ALE/Tetris-v5"]) == ExitCode.USAGE
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown Atari env id 'ALE/Tetris-v5'" in err
    assert "Pong" in err and "MsPacman" in err
    monkeypatch.setattr(atari, "atari_installed", lambda: False)
    assert main(["train", "--preset", "atari-pong-impala"]) == ExitCode.USAGE
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "impala-frodo[atari]" in err
    with pytest.raises(ValueError, match=r"impala-frodo\[atari\]"):
        make_batched_env("ALE/Pong-v5", 1)
    with pytest.raises(ConfigError, match="57 games"):
        atari_presets.atari_defaults("ALE/Foo-v5", None)


# ------------------------------------------------------------------ through the actors


@needs_ale
@pytest.mark.ray
def test_pong_through_the_ray_actor_learner_writes_records(ray_local, tmp_path):
    """A few thousand env steps of IMPALA on Pong: 2 actors x 4 envs, the ResNet learner and
    torch acting (``run.actor_inference = "auto"``); episodes capped at 400 frames so that
    they end (as truncations, which bootstrap).

    The cap is the only way a Pong episode ends this early (game over takes 21 points), so
    every episode lasts exactly 400 / 4 = 100 agent steps and each env ends one every 100
    of its steps; its return is a whole score (a point is +1 or -1). The run reports those
    episodes: in its result, its mean and its metrics.jsonl records."""
    from learner.app.driver import TrainOptions, train

    frameskip, cap_frames, envs_per_actor, unroll_length = 4, 400, 4, 20
    cfg = set_dotted(
        load_preset("atari-pong-impala"),
        {
            "run.num_actors": 2,
            "run.envs_per_actor": envs_per_actor,
            "run.unroll_length": unroll_length,
            "run.total_env_steps": 1_600,
            "run.queue_size": 4,
            "run.logdir": str(tmp_path / "runs"),
            "run.log_every_updates": 5,
        },
    )
    cfg = set_dotted(cfg, {"env.kwargs": {**cfg.env.kwargs, "max_episode_frames": cap_frames}})
    assert cfg.env.kwargs["frameskip"] == frameskip
    unrolls_by_actor = {}
    result = train(
        cfg,
        TrainOptions(
            progress=False,
            handle_signals=False,
            callback=lambda ctx: unrolls_by_actor.update(ctx.learner.books.trajectories_by_actor),
        ),
    )
    assert result.exit_code == ExitCode.OK and result.reason == "budget"
    steps_per_unroll = envs_per_actor * unroll_length
    assert result.env_steps == 1_600 == result.updates * steps_per_unroll  # one unroll an update

    episode_steps = cap_frames // frameskip
    returns, lengths = result.history.episode_returns, result.history.episode_lengths
    assert lengths == [episode_steps] * result.episodes
    assert sum(unrolls_by_actor.values()) == result.updates
    assert result.episodes == sum(
        envs_per_actor * (n * unroll_length // episode_steps) for n in unrolls_by_actor.values()
    ), unrolls_by_actor
    assert all(r == int(r) and -21 <= r <= 21 for r in returns), returns
    assert result.mean_return == pytest.approx(np.mean(returns[-cfg.run.returns_window :]))

    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").open()]
    assert len(records) >= 2 and records[-1]["env_steps"] == result.env_steps
    assert all(np.isfinite(r["loss/policy"]) and np.isfinite(r["loss/value"]) for r in records)
    ended = [r for r in records if r["episode/count"] > 0]
    assert sum(r["episode/count"] for r in ended) == result.episodes
    assert sum(r["episode/return"] * r["episode/count"] for r in ended) == pytest.approx(
        sum(returns)
    )
    assert all(r["episode/length"] == episode_steps for r in ended)
    assert records[-1]["episode/return_window"] == pytest.approx(result.mean_return)


# ------------------------------------------------------------------ summaries


def _fake_run(root, name: str, preset: str, scores: list[float], window: bool = True):
    """A run directory as ``train`` writes it: config.json and metrics.jsonl records."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    cfg = load_preset(preset)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict()))
    lines = []
    for i, score in enumerate(scores):
        record = {"env_steps": 1000 * (i + 1), "episode/return": score}
        if window:  # the last-episodes mean, here of the last 2 intervals' scores
            record["episode/return_window"] = float(np.mean(scores[max(0, i - 1) : i + 1]))
        lines.append(json.dumps(record))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run_dir


def test_atari_summary_reports_scores_and_median_and_mean_hns(tmp_path, capsys):
    from impala_frodo.reports.atari_summary import atari_summary, hns_curves
    from impala_frodo.reports.plotting import load_runs
    from learner.app.cli import main

    dirs = [
        # the window (last 2 intervals) ends at 0 and at 100; the last intervals at 21, 150
        _fake_run(tmp_path, "p", "atari-pong-impala", [-21.0] * 9 + [21.0]),
        _fake_run(tmp_path, "b", "atari-breakout-impala", [1.0] * 8 + [50.0, 150.0]),
        # no window in the records: the last 10 % of the interval means, 6951.6 (human)
        _fake_run(tmp_path, "m", "atari-mspacman-impala", [6951.6] * 10, window=False),
        _fake_run(tmp_path, "c", "catch-impala", [1.0] * 10),  # not Atari: ignored
    ]
    runs = load_runs(dirs)
    row = atari_summary(runs)["IMPALA (V-trace target)"]
    assert set(row["games"]) == {"pong", "breakout", "ms_pacman"}
    assert row["games"]["pong"]["score"] == 0.0
    assert row["games"]["pong"]["hns"] == pytest.approx(0.5864, abs=1e-4)
    assert row["median_hns"] == pytest.approx(1.0)
    assert row["mean_hns"] == pytest.approx((0.5864023 + 3.4131944 + 1.0) / 3, abs=1e-4)
    steps, median, mean, games = hns_curves(runs)["IMPALA (V-trace target)"]
    assert games == 3 and steps[0] == 1000 and steps[-1] == 10_000
    # the curves are of the interval scores: 21, 150 and 6951.6 at the end
    last = [human_normalised("pong", 21.0), human_normalised("breakout", 150.0), 1.0]
    assert median[-1] == pytest.approx(sorted(last)[1]) and mean[-1] == pytest.approx(np.mean(last))
    out = tmp_path / "fig.png"
    assert main(["plot", *map(str, dirs[:3]), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "median human-normalised score 1.000" in err and "over 3 game(s)" in err
    assert (tmp_path / "fig-hns.png").stat().st_size > 0


# ------------------------------------------------------------------ torch acting


def test_actors_act_in_torch_for_the_resnet_and_in_numpy_otherwise():
    """``run.actor_inference = "auto"``: torch for IMPALA's ResNet (measured faster),
    numpy for the MLP and MinAtar's conv; both give the torch agent's logits."""
    from impala_frodo.networks.agent import agent_layout
    from impala_frodo.networks.torch_policy import TorchPolicy, make_policy
    from impala_frodo.networks.weights import pack_params

    cfg = load_preset("atari-pong-impala")
    torch.manual_seed(0)
    agent = AgentNet.from_config((84, 84, 4), 18, cfg.agent)
    layout = agent_layout((84, 84, 4), 18, cfg.agent)
    flat = pack_params(dict(agent.named_parameters()))
    policies = {}
    for inference in ("auto", "torch", "numpy"):
        policy = make_policy(
            layout, cfg.agent, (84, 84, 4), 18, obs_scale=1 / 255, inference=inference
        )
        policy.load(flat, version=3)
        policies[inference] = policy
    assert isinstance(policies["auto"], TorchPolicy) and isinstance(policies["torch"], TorchPolicy)
    assert type(policies["numpy"]) is NumpyPolicy and policies["auto"].version == 3
    frames = np.random.default_rng(2).integers(0, 256, size=(4, 84, 84, 4), dtype=np.uint8)
    with torch.no_grad():
        expected = agent(torch.from_numpy(frames).float() / 255)[0].numpy()
    for policy in policies.values():
        np.testing.assert_allclose(policy.logits(frames), expected, rtol=1e-4, atol=1e-5)
    actions, log_probs = policies["auto"](frames)
    assert actions.shape == (4,) and np.all(log_probs <= 0)
    small = Config().agent  # Catch's MLP: numpy under auto
    mlp_layout = agent_layout((10, 5), 3, small)
    assert type(make_policy(mlp_layout, small, (10, 5), 3)) is NumpyPolicy
    with pytest.raises(ConfigError, match="actor_inference"):
        set_dotted(Config(), {"run.actor_inference": "jax"})
