"""benchmarks/bench_vs_rllib.py: its pure helpers (no RLlib) and the RLlib config (RLlib only)."""

from __future__ import annotations

import json
import math

import pytest

from impala_frodo.config.schema import Config
from tests.scripts import REPO_ROOT, load_script

SCRIPT = REPO_ROOT / "benchmarks" / "bench_vs_rllib.py"


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/bench_vs_rllib.py", "bench_vs_rllib")


def test_commands(bench, tmp_path):
    ours = bench.ours_command(3, tmp_path / "ours")
    assert ours[1:5] == ["-m", "learner", "train", "--algo"]
    assert ours[ours.index("--seed") + 1] == "3"
    assert ours[ours.index("--stop-at-return") + 1] == "0.8"
    assert ours[ours.index("--logdir") + 1] == str(tmp_path / "ours")
    child = bench.rllib_command(2, 90.0, 1234.5, 0.5)
    assert child[1] == str(SCRIPT) and "--rllib-child" in child
    assert child[child.index("--seed") + 1] == "2"
    assert float(child[child.index("--spawn-time") + 1]) == 1234.5


def test_rllib_record_reads_the_env_runner_metrics(bench):
    result = {
        "env_runners": {
            "episode_return_mean": 0.81,
            "num_env_steps_sampled_lifetime": 12800,
            "num_episodes_lifetime": 1400,
        },
        "learners": {},
    }
    record = bench.rllib_record(result, 12.3456)
    assert record == {"t": 12.346, "env_steps": 12800, "episodes": 1400, "return_mean": 0.81}
    assert bench.metric_solved(record, 0.8, 500)
    assert not bench.metric_solved(record, 0.9, 500)
    assert not bench.metric_solved(record, 0.8, 2000)  # fewer episodes than the window
    # Before any episode: the key missing, or NaN.
    for runners in ({}, {"episode_return_mean": math.nan}):
        early = bench.rllib_record({"env_runners": runners}, 1.0)
        assert early["return_mean"] is None and early["env_steps"] == 0
        assert not bench.metric_solved(early, 0.8, 500)


def test_window_return_weights_records_by_their_new_episodes(bench):
    def rec(episodes, ret):
        return {"episodes": episodes, "return_mean": ret}

    assert bench.window_return([], 500) is None
    assert bench.window_return([rec(300, 0.0)], 500) is None  # window not full
    # 300 episodes at 0.0, then 200 at 1.0: the full window's mean is 0.4.
    records = [rec(300, 0.0), rec(500, 1.0)]
    assert bench.window_return(records, 500) == pytest.approx(0.4)
    # 400 more at 0.5: the window holds those 400 and the last 100 of the 1.0s.
    records.append(rec(900, 0.5))
    assert bench.window_return(records, 500) == pytest.approx((400 * 0.5 + 100 * 1.0) / 500)
    # A record without new episodes (or without a mean) adds nothing.
    records.append(rec(900, None))
    assert bench.window_return(records, 500) == pytest.approx(0.6)


def test_parse_records_skips_other_lines(bench):
    record = {"t": 1.0, "env_steps": 640, "episodes": 64, "return_mean": -0.5}
    stdout = f"(SingleAgentEnvRunner pid=1) noise\n{bench.RECORD_PREFIX}{json.dumps(record)}\n"
    assert bench.parse_records(stdout) == [record]


def test_steady_rate_leaves_out_start_up(bench):
    records = [
        {"t": 5.0, "env_steps": 0},  # env runners still starting
        {"t": 10.0, "env_steps": 1000},
        {"t": 12.0, "env_steps": 5000},
    ]
    assert bench.steady_rate(records) == 2000.0
    assert bench.steady_rate(records[:2]) is None


def test_summary_and_ratios(bench):
    def run(solved, wall, rate, **extra):
        solve = wall - 1 if solved else None
        return {
            "solved": solved,
            "wall_s": wall,
            "solve_s": solve,
            "env_steps": 30000,
            "env_steps_per_s": rate,
            **extra,
        }

    ours = bench.summarize([run(True, 10.0, 100.0), run(True, 12.0, 300.0)])
    rllib = bench.summarize(
        [
            run(True, 40.0, 10.0, metric_solve_s=30.0, metric_env_steps=25000),
            run(False, 130.0, 20.0, metric_solve_s=None, metric_env_steps=None),
        ]
    )
    assert ours["solved"] == "2/2" and rllib["solved"] == "1/2"
    assert ours["median_wall_s"] == 11.0 and rllib["median_wall_s"] == 40.0  # solved runs only
    assert rllib["median_env_steps_per_s"] == 15.0  # all runs
    assert "median_metric_solve_s" not in ours and rllib["median_metric_solve_s"] == 30.0
    assert bench.ratios(ours, rllib) == {
        "env_steps_per_s": round(200 / 15, 3),
        "wall_s": 0.275,
        "solve_s": round(10 / 39, 3),
        "env_steps": 1.0,
        "solve_s_vs_metric": round(10 / 30, 3),
        "env_steps_vs_metric": 1.2,
    }


def test_rllib_config_matches_ours(bench):
    pytest.importorskip("ray.rllib")
    cfg = Config()
    config = bench.rllib_config(cfg, seed=4, iteration_s=0.5)
    assert config.num_env_runners == cfg.run.num_actors
    assert config.num_envs_per_env_runner == cfg.run.envs_per_actor
    assert config.get_rollout_fragment_length() == cfg.run.unroll_length
    assert config.train_batch_size_per_learner == cfg.run.unroll_length * cfg.run.envs_per_actor
    assert config.num_learners == 0
    assert config.lr == cfg.optim.lr and config.entropy_coeff == cfg.loss.entropy_cost
    assert config.grad_clip is None and config.seed == 4
    assert config.metrics_num_episodes_for_smoothing == cfg.run.returns_window
    assert config.learner_class.__name__ == "RMSPropIMPALALearner"
