"""benchmarks/bench_orchestration.py in its quickest form: two stand-in learners, two
synthetic actors, one local node; its report's keys, and the bytes through the driver
against what the trajectories' shapes predict."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from tests.scripts import REPO_ROOT

pytestmark = pytest.mark.ray

NAME = "bench_orchestration"
#: The quickest run: Catch 11 x 6 (float32 observations), B envs per actor, T steps.
T, B, LEARNERS = 5, 8, 2
#: Pickle's framing of one object around its arrays (measured: ~0.8 KB a trajectory,
#: ~2.4 KB a shard).
FRAMING = 4096
REPORT_KEYS = {"benchmark", "commit", "date", "cpus", "load_average", "load_average_after"}
ROW_KEYS = {
    "workload",
    "learner",
    "learners",
    "actors",
    "env_steps_per_update",
    "wall_ms_per_update",
    "driver_cpu_ms_per_update",
    "learner_ms_per_update",
    "overhead_ms_per_update",
    "take_ms_per_update",
    "env_steps_per_s",
    "ideal_env_steps_per_s",
    "driver_bytes_per_update",
    "data_bytes_per_update",
    "bytes_by_kind",
    "trajectory_array_bytes",
    "learner_nodes",
}


@pytest.fixture(scope="module")
def bench():
    """The script as a module, in ``sys.modules`` while the tests run (its dataclass needs
    that; the script has its classes pickled by value for Ray's workers)."""
    spec = importlib.util.spec_from_file_location(NAME, REPO_ROOT / "benchmarks" / f"{NAME}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[NAME] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(NAME, None)


def test_the_quickest_run_reports_the_bytes_its_trajectories_predict(bench, ray_local):
    setting = bench.Setting(
        "catch",
        LEARNERS,
        2,
        5.0,
        warmup=2,
        updates=3,
        windows=2,
        envs_per_actor=B,
        unroll_length=T,
        progress_timeout_s=60.0,
    )
    report = json.loads(json.dumps(bench.measure([setting])))
    assert report.keys() >= REPORT_KEYS
    (row,) = report["rows"]
    assert row.keys() >= ROW_KEYS, ROW_KEYS - row.keys()
    assert (row["learners"], row["actors"], row["learner_nodes"]) == (LEARNERS, 2, 1)

    # One unroll's arrays: observations [T+1, B, 11, 6] float32; actions int64, rewards,
    # continues and log-probabilities float32, each [T, B].
    unroll = (T + 1) * B * 11 * 6 * 4 + T * B * (8 + 4 + 4 + 4)
    assert row["trajectory_array_bytes"] == unroll
    # Each update the driver fetches N unrolls and ships the N shards of their batch (the
    # same columns, Catch's observations float32 already), each with pickle's framing.
    kinds = row["bytes_by_kind"]
    assert 0 <= kinds["in Trajectory"] - LEARNERS * unroll < LEARNERS * FRAMING, kinds
    assert 0 <= kinds["out Batch"] - LEARNERS * unroll < LEARNERS * FRAMING, kinds
    assert row["data_bytes_per_update"] == kinds["in Trajectory"] + kinds["out Batch"]
    assert row["driver_bytes_per_update"] == pytest.approx(sum(kinds.values()), abs=1)
    assert row["driver_bytes_per_update"] > row["data_bytes_per_update"]  # weights, replies

    # Two windows: their medians are means, so overhead = wall - learner holds exactly.
    assert row["env_steps_per_update"] == LEARNERS * T * B
    assert row["learner_ms_per_update"] >= 5.0
    assert row["overhead_ms_per_update"] == pytest.approx(
        row["wall_ms_per_update"] - row["learner_ms_per_update"], abs=0.02
    )
    assert 0 < row["env_steps_per_s"] < row["ideal_env_steps_per_s"]
    assert row["driver_cpu_ms_per_update"] > 0
