"""Run directories for plots: the metrics schema, figures, and multi-seed sweeps."""

from __future__ import annotations

import json

import pytest

from impala_frodo.config.checks import ConfigError
from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.records.runlog import METRICS_FILE, create_run_dir, read_metrics
from impala_frodo.reports.plotting import final_values, load_runs, plot_runs, seed_curves
from learner.training.sync import train_sync

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tiny_run(tmp_path, algo: str, seed: int, steps: int = 6400, **overrides) -> str:
    cfg = set_dotted(
        Config(),
        {
            "algo": algo,
            "run.seed": seed,
            "run.total_env_steps": steps,
            "run.num_envs": 16,
            **overrides,
        },
    )
    run_dir = create_run_dir(cfg, tmp_path)
    train_sync(cfg, run_dir=run_dir, num_records=10)
    return str(run_dir)


def test_metrics_file_schema(tmp_path):
    run_dir = tiny_run(tmp_path, "frodo", 0)
    records = read_metrics(f"{run_dir}/{METRICS_FILE}")
    assert 8 <= len(records) <= 11
    steps = [r["env_steps"] for r in records]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    for record in records:
        for key in ("env_steps", "wall_time_s", "time", "loss/inner", "perf/env_steps_per_s"):
            assert isinstance(record[key], int | float), key
        assert all(isinstance(v, int | float) or v is None for v in record.values())
    assert any("episode/return" in r and -1 <= r["episode/return"] <= 1 for r in records)
    assert any("loss/outer" in r for r in records)  # FRODO logs its meta steps
    config = json.loads((tmp_path / run_dir / "config.json").read_text())
    assert config["algo"] == "frodo" and config["run"]["seed"] == 0


def test_plot_writes_a_png_from_two_runs(tmp_path):
    runs = [tiny_run(tmp_path, "impala", 0), tiny_run(tmp_path, "frodo", 1)]
    out = plot_runs(runs, tmp_path / "figs" / "fig.png")
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    curves = seed_curves(load_runs(runs), "episode/return")
    assert {c.label for c in curves} == {"IMPALA (V-trace target)", "FRODO"}
    assert all(c.num_seeds == 1 for c in curves)


def test_seed_curves_average_over_seeds(tmp_path):
    runs = load_runs([tiny_run(tmp_path, "impala", s) for s in (0, 1, 2)])
    (curve,) = seed_curves(runs, "episode/return")
    assert curve.num_seeds == 3 and (curve.stderr >= 0).all() and curve.stderr.max() > 0
    mean, se, n = final_values(runs, "episode/return")["IMPALA (V-trace target)"]
    assert n == 3 and se > 0 and -1 <= mean <= 1


def test_plot_rejects_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(ConfigError, match="not a run directory"):
        plot_runs([tmp_path], tmp_path / "fig.png")


@pytest.mark.ray
def test_two_seed_sweep_leaves_two_run_directories(tmp_path, ray_local):
    from learner.app.sweep import run_sweep

    cfg = set_dotted(Config(), {"algo": "impala", "run.total_env_steps": 3200, "run.num_envs": 16})
    result = run_sweep(cfg, [0, 1], tmp_path, name="tiny", cpus_per_seed=0.5, progress=False)
    assert not result.failures
    assert sorted(result.run_dirs) == [0, 1]
    for seed, run_dir in result.run_dirs.items():
        assert run_dir.parent == result.sweep_dir
        assert read_metrics(run_dir / METRICS_FILE)[-1]["env_steps"] >= 3200
        assert json.loads((run_dir / "config.json").read_text())["run"]["seed"] == seed


@pytest.mark.ray
def test_a_failed_seed_is_reported_and_the_others_go_on(tmp_path, ray_local):
    from learner.app.sweep import run_sweep, train_seed

    def flaky(config, run_dir):
        if config["run"]["seed"] == 1:
            raise RuntimeError("seed 1 broke")
        return train_seed(config, run_dir)

    cfg = set_dotted(Config(), {"algo": "impala", "run.total_env_steps": 3200, "run.num_envs": 16})
    result = run_sweep(
        cfg, [0, 1, 2], tmp_path, name="flaky", cpus_per_seed=0.5, progress=False, trainer=flaky
    )
    assert list(result.failures) == [1] and "seed 1 broke" in result.failures[1]
    assert sorted(result.summaries) == [0, 2]
