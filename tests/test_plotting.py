"""Figures: seeds counted once, envs in their own panels, curves on one step grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from impala_frodo.config.checks import ConfigError
from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.records.runlog import METRICS_FILE, create_run_dir
from impala_frodo.reports.plotting import (
    SWEEP_FILE,
    expand_run_dirs,
    final_values,
    load_runs,
    panels,
    plot_runs,
    seed_curves,
)
from learner.app.cli import main
from learner.control.exit_codes import ExitCode

METRIC = "episode/return"


def fake_run(
    parent: Path,
    algo: str,
    seed: int,
    last_step: int = 10_000,
    level: float = 0.0,
    settings: dict | None = None,
    metric: str = METRIC,
    **env,
) -> Path:
    """A run directory with a straight-line ``metric`` curve, without training."""
    overrides = {"algo": algo, "run.seed": seed, **(settings or {})}
    if env:
        overrides["env.kwargs"] = env
    cfg = set_dotted(Config(), overrides)
    run_dir = create_run_dir(cfg, parent)
    steps = np.arange(1_000, last_step + 1, 1_000)
    with open(run_dir / METRICS_FILE, "w") as f:
        for step in steps:
            f.write(json.dumps({"env_steps": int(step), metric: level + step / 1e5}) + "\n")
    return run_dir


def test_runs_of_one_seed_count_as_one_seed(tmp_path):
    runs = load_runs([fake_run(tmp_path, "impala", 0, level=x) for x in (0.0, 0.1, 0.2)])
    (curve,) = seed_curves(runs, METRIC)
    assert (curve.num_seeds, curve.num_runs) == (1, 3)
    assert curve.legend == "IMPALA (V-trace target): 1 seed (3 runs)"
    assert np.all(curve.stderr == 0) and curve.mean[-1] == pytest.approx(0.2)
    assert final_values(runs, METRIC)["IMPALA (V-trace target)"][2] == 1


def test_an_interrupted_run_does_not_shorten_the_curve(tmp_path):
    dirs = [fake_run(tmp_path, "frodo", seed, level=0.1 * seed) for seed in range(3)]
    dirs.append(fake_run(tmp_path, "frodo", 3, last_step=2_000, level=0.3))
    (curve,) = seed_curves(load_runs(dirs), METRIC)
    assert curve.steps[0] == 1_000 and curve.steps[-1] == 10_000
    assert (curve.num_seeds, curve.seeds_at_end) == (4, 3)
    assert curve.legend == "FRODO: 4 seeds (1 stop early)"
    # At the end: the mean and s.e. of the three seeds that got there.
    ends = np.array([0.0, 0.1, 0.2]) + 0.1
    assert curve.mean[-1] == pytest.approx(ends.mean())
    assert curve.stderr[-1] == pytest.approx(ends.std(ddof=1) / np.sqrt(3))
    assert np.isfinite(curve.mean).all()


def test_different_envs_go_to_different_panels(tmp_path):
    small = [fake_run(tmp_path, "impala", s, rows=10, columns=5) for s in (0, 1)]
    large = [fake_run(tmp_path, "impala", s, rows=11, columns=6) for s in (0, 1)]
    runs = load_runs(small + large)
    groups = panels(runs)
    assert [len(g) for g in groups] == [2, 2]
    assert {g[0].env_title for g in groups} == {
        "Catch-v0 columns=5, rows=10",
        "Catch-v0 columns=6, rows=11",
    }
    with pytest.raises(ConfigError, match="different envs"):
        seed_curves(runs, METRIC)
    out = plot_runs(small + large, tmp_path / "two.png")
    assert out.read_bytes().startswith(b"\x89PNG")


def test_sweeps_inside_runs_are_found_and_labelled_by_preset(tmp_path):
    sweep = tmp_path / "runs" / "sweep-catch-frodo-20250101-000000"
    sweep.mkdir(parents=True)
    (sweep / SWEEP_FILE).write_text(json.dumps({"name": "catch-frodo", "seeds": [0, 1]}))
    inside = [fake_run(sweep, "frodo", s) for s in (0, 1)]
    alone = fake_run(tmp_path / "runs", "frodo", 0)
    found = expand_run_dirs([tmp_path / "runs"])
    assert sorted(found) == sorted([*inside, alone])
    # One setting (the same config): one curve, named by the sweep's preset.
    (curve,) = seed_curves(load_runs(found), METRIC)
    assert (curve.label, curve.num_seeds, curve.num_runs) == ("FRODO (catch-frodo)", 2, 3)
    assert not (alone / "checkpoints").exists()  # made by the first checkpoint only


def test_plot_formats_and_resolution(tmp_path):
    run = fake_run(tmp_path, "impala", 0)
    assert plot_runs([run], tmp_path / "f.svg").read_text().lstrip().startswith("<?xml")
    assert plot_runs([run], tmp_path / "f", fmt="pdf").read_bytes().startswith(b"%PDF")
    small = plot_runs([run], tmp_path / "small.png", dpi=50).stat().st_size
    large = plot_runs([run], tmp_path / "large.png", dpi=200).stat().st_size
    assert large > 2 * small
    with pytest.raises(ConfigError, match=r"does not end in \.svg"):
        plot_runs([run], tmp_path / "f.png", fmt="svg")


def test_plot_command(tmp_path, capsys):
    fake_run(tmp_path / "runs", "impala", 0)
    out = tmp_path / "fig.svg"
    assert (
        main(["plot", str(tmp_path / "runs"), "--out", str(out), "--format", "svg"]) == ExitCode.OK
    )
    assert out.is_file() and str(out) in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "nothing"), "--out", str(out)]) == ExitCode.USAGE
    assert "not a run directory" in capsys.readouterr().err


def test_two_settings_are_two_curves_named_by_what_differs(tmp_path, capsys):
    """A 2-learner run and an async one of one preset are not averaged into one curve;
    the budget and the seed are bookkeeping, not a setting."""
    runs = tmp_path / "runs"
    preset = {"preset": "catch-frodo"}
    for seed in (0, 1):
        fake_run(runs, "frodo", seed, settings={**preset, "run.num_learners": 2}, level=0.5)
        fake_run(runs, "frodo", seed, settings={**preset, "meta.mode": "async"})
    fake_run(runs, "frodo", 2, settings={**preset, "meta.mode": "async", "run.total_env_steps": 9})
    out = tmp_path / "fig.png"
    assert main(["plot", str(runs), "--out", str(out), "--csv"]) == ExitCode.OK
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [
        "Catch-v0: FRODO (catch-frodo), meta.mode=async: 3 seeds, final episode/return "
        "0.100 +- 0.000",
        "Catch-v0: FRODO (catch-frodo), num_learners=2: 2 seeds, final episode/return "
        "0.600 +- 0.000",
    ]
    rows = out.with_suffix(".csv").read_text().splitlines()
    assert rows[0] == "panel,metric,curve,env_steps,mean,stderr,seeds"
    assert len(rows) == 1 + 2 * 200 and rows[-1].endswith(",0.6,0,2")


def test_frodo_and_its_consistency_arm_are_two_curves_named_by_the_term(tmp_path, capsys):
    """Issue 32's long runs: the self-consistent arm, started from the frodo preset with
    --set, is a curve of its own beside FRODO's and IMPALA's, named by its term."""
    runs = tmp_path / "minatar-2m" / "breakout"
    game = {"env.id": "MinAtar/Breakout-v0"}
    self_term = {"meta.consistency_cost": 0.1, "meta.consistency_form": "self"}
    for seed in (0, 1):
        impala = {**game, "preset": "minatar-breakout-impala"}
        frodo = {**game, "preset": "minatar-breakout-frodo"}
        fake_run(runs / "impala", "impala", seed, settings=impala)
        fake_run(runs / "frodo", "frodo", seed, settings=frodo, level=0.5)
        fake_run(runs / "frodo-self", "frodo", seed, settings={**frodo, **self_term}, level=1.0)
    assert main(["plot", str(runs), "--out", str(tmp_path / "fig.png")]) == ExitCode.OK
    assert capsys.readouterr().out.strip().splitlines() == [
        "Breakout-v0: FRODO (minatar-breakout-frodo): 2 seeds, final episode/return 0.600 +- 0.000",
        "Breakout-v0: FRODO (minatar-breakout-frodo), meta.consistency_cost=0.1, "
        "meta.consistency_form=self: 2 seeds, final episode/return 1.100 +- 0.000",
        "Breakout-v0: IMPALA (V-trace target) (minatar-breakout-impala): 2 seeds, "
        "final episode/return 0.100 +- 0.000",
    ]


def test_a_run_without_the_metric_is_left_out_with_a_warning(tmp_path, capsys):
    runs = tmp_path / "runs"
    fake_run(runs, "impala", 0)
    bare = fake_run(runs, "impala", 1, metric="loss/inner")
    out = tmp_path / "fig.png"
    assert main(["plot", str(runs), "--out", str(out)]) == ExitCode.OK
    captured = capsys.readouterr()
    assert f"warning: {bare} has no 'episode/return': left out" in captured.err
    assert "IMPALA (V-trace target): 1 seed," in captured.out
    assert main(["plot", str(bare), "--out", str(out)]) == ExitCode.USAGE
    assert "no run has the metric 'episode/return'" in capsys.readouterr().err
