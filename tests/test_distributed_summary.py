"""experiments/distributed_summary.py: the issue-10 table from run directories alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.scripts import load_script


@pytest.fixture(scope="module")
def summary():
    return load_script("experiments/distributed_summary.py", "distributed_summary")


def write_run(run_dir: Path, records: list[dict], seed: int = 0) -> Path:
    run_dir.mkdir(parents=True)
    config = {"run": {"seed": seed, "total_env_steps": 1000, "returns_window": 500}}
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_dir


def record(steps, episodes, window_mean, interval_mean=0.0, count=0, lag=2.0):
    return {
        "env_steps": steps,
        "wall_time_s": steps / 100,
        "progress/episodes": episodes,
        "episode/return_window": window_mean,
        "episode/return": interval_mean,
        "episode/count": count,
        "perf/policy_lag": lag,
    }


def test_steps_to_0_8_waits_for_a_full_window_and_final_weights_by_episodes(summary, tmp_path):
    records = [
        record(300, 400, 0.9, lag=0.0),  # above 0.8, but fewer than 500 episodes
        record(600, 700, 0.85, lag=3.0),  # solved here
        record(900, 900, 0.7, 0.0, 10),  # its interval starts at 600 < 900: not "final"
        record(950, 950, 0.8, 1.0, 30),  # final: interval 900-950
        record(1000, 1000, 0.8, 0.0, 10),  # final: interval 950-1000
    ]
    run = summary.run_summary(write_run(tmp_path / "r", records))
    assert run["steps_to_0.8"] == 600
    assert run["final_return"] == pytest.approx(30 / 40)
    assert run["policy_lag"] == pytest.approx(1.8)
    assert run["wall_time_s"] == 10.0


def test_a_seed_that_never_reaches_0_8_is_not_solved(summary, tmp_path):
    sweep = tmp_path / "sweep"
    write_run(sweep / "a", [record(1000, 900, 0.79, 0.5, 5)], seed=0)
    write_run(sweep / "b", [record(500, 600, 0.81), record(1000, 900, 0.9, 1.0, 5)], seed=1)
    line = summary.row("x", sweep)
    assert line.startswith("| x | 1/2 (0k) |") and "2.00 (2.00-2.00)" in line
