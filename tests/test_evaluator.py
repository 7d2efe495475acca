"""Evaluation during training: an evaluator beside the learner, logged as eval/return."""

from __future__ import annotations

import json

import pytest

from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.networks.agent import AgentNet
from impala_frodo.networks.weights import pack_params, param_layout
from impala_frodo.records.runlog import read_metrics
from learner.training.evaluator import EvalSchedule, Evaluator


def test_the_evaluator_plays_weights_and_films_an_episode():
    import imageio.v3 as iio

    cfg = set_dotted(Config(), {"eval.episodes": 8})
    params = dict(AgentNet((10, 5), 3, (64, 64)).named_parameters())
    result = Evaluator(cfg, param_layout(params)).evaluate(1_000, pack_params(params), video=True)
    assert result.episodes == 8 and -1.0 <= result.mean <= 1.0 and result.stderr >= 0
    assert result.env_steps == 1_000 and set(result.scalars()) == {"eval/return", "eval/return_se"}
    frames = iio.imread(result.gif, extension=".gif")
    assert frames.shape == (10, 240, 120, 3) and result.gif_size == (240, 120)


def test_the_schedule_by_time_and_by_steps():
    now = [0.0]
    cfg = set_dotted(Config(), {"eval.every_s": 10.0, "eval.video_every_s": 25.0})
    schedule = EvalSchedule(cfg, clock=lambda: now[0])
    assert schedule.due(0) and schedule.start(0)  # the first at once, with a video
    now[0] = 9.0
    assert not schedule.due(5_000)
    now[0] = 10.0
    assert schedule.due(5_000) and not schedule.start(5_000)
    now[0] = 30.0
    assert schedule.start(9_000)  # 25 s since the last video
    steps = EvalSchedule(set_dotted(Config(), {"eval.every_env_steps": 1_000}))
    assert steps.due(0) and not steps.start(0) and not steps.due(999) and steps.due(1_000)
    assert not set_dotted(Config(), {}).eval.enabled


@pytest.mark.ray
def test_a_run_logs_eval_return_beside_the_training_return(ray_local, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from learner.app.driver import TrainOptions, train

    overrides = {
        "algo": "impala",
        "run.total_env_steps": 60_000,
        "run.envs_per_actor": 16,
        "run.logdir": str(tmp_path),
        "eval.every_env_steps": 5_000,
        "eval.video_every_s": 1.0,
        "eval.episodes": 5,
    }
    result = train(set_dotted(Config(), overrides), TrainOptions(progress=False))
    assert result.exit_code == 0, result.message
    records = read_metrics(result.run_dir / "metrics.jsonl")
    evals = [r for r in records if "eval/return" in r]
    assert evals and all(r["eval/return"] is not None for r in evals), records[-3:]
    # However short the run, it ends on an evaluation of its final weights.
    assert evals[-1]["env_steps"] == result.env_steps
    assert all(-1.0 <= r["eval/return"] <= 1.0 for r in evals)
    assert any("episode/return" in r for r in records)
    events = EventAccumulator(str(result.run_dir), size_guidance={"images": 0})
    events.Reload()
    assert "eval/video" in events.Tags()["images"]
    assert json.loads((result.run_dir / "config.json").read_text())["eval"]["episodes"] == 5
