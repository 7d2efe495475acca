"""`impala-frodo sweep --distributed`: seeds through the Ray actor-learner (2 CPUs).

One seed is a learner task of 1 CPU and 2 actors of 0.5 CPU in one placement
group, so on 2 CPUs the seeds run one after another.
"""

from __future__ import annotations

import json
import time

import pytest

from impala_frodo.config.checks import ConfigError
from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.records.runlog import METRICS_FILE, read_metrics
from learner.app.cli import main
from learner.control.exit_codes import ExitCode

pytestmark = pytest.mark.ray

#: 2 actors x 8 envs x 10 steps: 160 env steps per update round, seconds per seed.
SMALL = [
    "--num-actors", "2",
    "--envs-per-actor", "8",
    "--unroll-length", "10",
    "--total-env-steps", "3200",
    "--queue-size", "4",
    "--set", "meta.num_inner_steps=3",
    "--set", "run.log_every_updates=4",
]  # fmt: skip


def test_distributed_sweep_of_two_seeds_writes_run_dirs_with_the_policy_lag(
    ray_local, tmp_path, capsys
):
    logdir = tmp_path / "runs"
    argv = ["sweep", "--distributed", "--preset", "catch-frodo", "--seeds", "2", *SMALL]
    assert (
        main([*argv, "--no-progress", "--seed-timeout", "600", "--logdir", str(logdir)])
        == ExitCode.OK
    )
    err = capsys.readouterr().err
    assert "2/2 seeds done" in err and "final" in err and "mean policy lag" in err

    (sweep,) = logdir.iterdir()
    assert json.loads((sweep / "sweep.json").read_text())["trainer"] == "distributed"
    run_dirs = sorted(d for d in sweep.iterdir() if d.is_dir())
    assert len(run_dirs) == 2
    seeds = []
    for run_dir in run_dirs:
        config = json.loads((run_dir / "config.json").read_text())
        seeds.append(config["run"]["seed"])
        assert config["algo"] == "frodo" and config["run"]["num_actors"] == 2
        records = read_metrics(run_dir / METRICS_FILE)
        assert records[-1]["env_steps"] >= 3200
        lags = [r["perf/policy_lag"] for r in records if r.get("perf/policy_lag") is not None]
        assert lags and all(lag >= 0 for lag in lags)  # measured by the learner
        assert any(run_dir.glob("events.out.tfevents.*")), "TensorBoard events"
        assert (run_dir / "checkpoints" / "latest.pt").is_file()  # the driver's final one
    assert sorted(seeds) == [0, 1]

    out = tmp_path / "fig.png"
    assert main(["plot", str(sweep), "--out", str(out)]) == ExitCode.OK  # plot reads them unchanged
    assert out.read_bytes().startswith(b"\x89PNG")


def test_a_seed_past_its_deadline_is_stopped_and_the_next_one_runs(ray_local, tmp_path):
    """Seed 0 never ends: it is cancelled at its deadline, its placement group freed,
    and seed 1, which needs the whole 2 CPUs, runs after it."""
    from learner.app.sweep import run_sweep

    def hangs_on_seed_0(config, run_dir):
        if config["run"]["seed"] == 0:
            time.sleep(120)  # far past the deadline, short enough if it is missed
        return {"env_steps": 0, "perf/policy_lag": 1.5}

    cfg = set_dotted(Config(), {"run.num_actors": 2, "run.actor_num_cpus": 0.5})
    start = time.monotonic()
    result = run_sweep(
        cfg,
        [0, 1],
        tmp_path,
        name="deadline",
        progress=False,
        distributed=True,
        seed_timeout_s=10.0,  # seed 1's task must start within it, even on a loaded machine
        trainer=hangs_on_seed_0,
    )
    assert time.monotonic() - start < 60
    assert list(result.failures) == [0] and "timed out after 10 s" in result.failures[0]
    assert list(result.summaries) == [1] and result.mean_policy_lag() == 1.5


def test_a_distributed_seed_larger_than_the_cluster_is_refused(ray_local, tmp_path):
    from learner.app.sweep import run_sweep

    cfg = set_dotted(Config(), {"run.num_actors": 4, "run.actor_num_cpus": 0.5})
    with pytest.raises(ConfigError, match="needs 3 CPUs"):
        run_sweep(cfg, [0], tmp_path, name="big", progress=False, distributed=True)
