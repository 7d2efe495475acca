"""Data-parallel learners on a local Ray (2 CPUs): two learner processes train, stay equal,
checkpoint and resume every rank, end the run with a final checkpoint when one dies and
none may be replaced, and bad input is refused up front. (Their exactness against one
learner: tests/test_data_parallel.py.)"""

from __future__ import annotations

import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import ray
import torch

from impala_frodo.config.checks import ConfigError
from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.records.checkpoint import load_checkpoint
from impala_frodo.records.runlog import read_metrics
from impala_frodo.rule.updater import Updater
from learner.app.driver import TrainOptions, train
from learner.control.exit_codes import ExitCode
from learner.training.group import LearnerGroup
from learner.training.sync import train_sync

pytestmark = pytest.mark.ray

STEPS_PER_UPDATE = 2 * 8 * 10  # two learners, one 8-env x 10-step unroll each


def group_cfg(tmp_path: Path, algo: str = "frodo", **overrides) -> Config:
    base = {
        "algo": algo,
        "run.num_actors": 2,
        "run.num_learners": 2,
        "run.learner_num_cpus": 0.5,
        "run.envs_per_actor": 8,
        "run.unroll_length": 10,
        "run.total_env_steps": 8_000,
        "run.queue_size": 4,
        "run.log_every_s": 0.2,
        "run.checkpoint_every_s": 0.5,
        "run.logdir": str(tmp_path / "runs"),
        "meta.num_inner_steps": 3,
        "meta.every": 1,  # a meta step every window: the counts below are per window
    }
    return set_dotted(Config(), base | overrides)


def options(**kwargs) -> TrainOptions:
    return TrainOptions(progress=False, handle_signals=False, **kwargs)


def rank_params(group: LearnerGroup) -> list[dict[str, torch.Tensor]]:
    return ray.get([rank.acting_params.remote() for rank in group.ranks], timeout=60)


def rank_eta(group: LearnerGroup) -> list[dict[str, torch.Tensor]]:
    states = ray.get([rank.state_dict.remote() for rank in group.ranks], timeout=60)
    return [state["meta_net"] for state in states]


def assert_equal_ranks(group: LearnerGroup) -> None:
    for states in (rank_params(group), rank_eta(group)):
        for name, value in states[0].items():
            assert torch.equal(value, states[1][name]), name


def test_two_learners_train_stay_equal_and_resume_every_rank(ray_local, tmp_path):
    checks: dict[str, object] = {}

    def callback(ctx) -> None:
        group = ctx.learner.updater
        if ctx.learner.books.counters.updates == 12:  # after meta steps (M = 3)
            assert_equal_ranks(group)
            checks["nodes"] = group.node_ids
            checks["meta"] = ctx.learner.books.counters.meta_updates

    result = train(group_cfg(tmp_path), options(callback=callback))
    assert result.exit_code == ExitCode.OK and result.reason == "budget"
    assert checks["meta"] >= 3 and len(checks["nodes"]) == 2
    # One update takes one unroll per learner: the global batch is twice a learner's.
    assert result.env_steps == result.updates * STEPS_PER_UPDATE
    records = [
        r for r in read_metrics(result.run_dir / "metrics.jsonl") if "perf/collective_s" in r
    ]
    assert records and all(r["perf/learner_update_s"] > 0 for r in records)

    saved = load_checkpoint(result.run_dir / "checkpoints" / "latest.pt")
    resumed_at: dict[str, object] = {}

    def on_resume(ctx) -> None:
        if "updates" not in resumed_at:  # the first update after the resume
            resumed_at["updates"] = ctx.learner.books.counters.updates
            assert_equal_ranks(ctx.learner.updater)

    again = train(
        group_cfg(tmp_path, **{"run.total_env_steps": 16_000}),
        options(resume_dir=result.run_dir, callback=on_resume),
    )
    assert again.exit_code == ExitCode.OK
    assert resumed_at["updates"] == saved["counters"]["updates"] + 1
    assert again.env_steps >= 16_000


def test_every_rank_loads_the_checkpoint(ray_local, tmp_path):
    cfg = group_cfg(tmp_path)
    group = LearnerGroup(cfg.run, partial(Updater, cfg, (50,), 3))
    try:
        state = ray.get(group.ranks[0].state_dict.remote(), timeout=60)
        state["params"] = {k: v + 1.0 for k, v in state["params"].items()}
        state["num_updates"] = 7
        group.load_state_dict(state)
        for params in rank_params(group):
            for name, value in params.items():
                assert torch.equal(value, state["params"][name]), name
        assert group.num_updates == 7
    finally:
        group.shutdown()


def test_a_dead_learner_with_no_restarts_left_ends_the_run_with_a_final_checkpoint(
    ray_local, tmp_path
):
    """With ``run.max_learner_restarts = 0`` a lost learner is not replaced: the run ends
    at once (exit 1), its final checkpoint the survivor's state at the last completed
    update. (Replacements: tests/test_rank_restarts.py.)"""
    killed: dict[str, float] = {}

    def callback(ctx) -> None:
        if ctx.learner.books.counters.updates == 15 and not killed:
            killed["at"] = time.monotonic()
            ray.kill(ctx.learner.updater.ranks[1], no_restart=True)

    cfg = group_cfg(
        tmp_path,
        "impala",
        **{"run.progress_timeout_s": 20.0, "run.max_learner_restarts": 0},
    )
    result = train(cfg, options(callback=callback))
    ended = time.monotonic()
    assert result.reason == "learners" and result.exit_code == ExitCode.FAILED
    assert "learner rank 1 (dead) lost" in result.message, result.message
    assert "learner restarts spent" in result.message, result.message
    assert ended - killed["at"] < 20.0 + 10.0  # within the deadline (and shut-down)
    saved = load_checkpoint(result.run_dir / "checkpoints" / "latest.pt")
    assert saved["counters"]["updates"] == saved["updater"]["num_updates"] == 15


def test_learners_not_placed_in_time_end_the_run_with_exit_1_not_a_traceback(ray_local, tmp_path):
    """A placement that waits past ``run.progress_timeout_s`` (here: another job holds the
    CPUs) is a learner failure at start-up, as a learner lost later is."""

    @ray.remote(num_cpus=2)
    class Ballast:
        def ready(self) -> bool:
            return True

    ballast = Ballast.remote()
    ray.get(ballast.ready.remote(), timeout=60)
    try:
        result = train(group_cfg(tmp_path, "impala", **{"run.progress_timeout_s": 3.0}), options())
    finally:
        ray.kill(ballast)
    assert result.reason == "learners" and result.exit_code == ExitCode.FAILED, result.message
    assert "placing 2 learners" in result.message and "no answer within" in result.message


def test_the_synchronous_trainer_refuses_several_learners(tmp_path):
    with pytest.raises(ConfigError, match="distributed trainer"):
        train_sync(group_cfg(tmp_path))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--num-learners", "0"], "run.num_learners must be"),
        (["--num-learners", "3", "--num-actors", "2"], "give every learner at least one actor"),
        (  # shares are fitted to the machine, down to 0.05 CPU a process
            ["--num-learners", "41", "--num-actors", "41"],
            "would get under 0.05 CPU each",
        ),
        (
            [
                *("--num-learners", "2", "--set", "run.learner_num_cpus=0.5"),
                *("--set", "run.learner_placement=strict-spread"),
            ],
            "but the local Ray instance this run starts has 1 live node(s): use 'spread' or",
        ),
    ],
    ids=["none", "more-than-actors", "cpus", "strict-spread-on-one-node"],
)
def test_learners_that_cannot_be_had_are_refused_in_one_line(tmp_path, args, message):
    argv = ["train", "--preset", "catch-impala", "--logdir", str(tmp_path), "--no-progress"]
    proc = subprocess.run(
        [sys.executable, "-m", "learner", *argv, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
