"""benchmarks/bench_orchestration.py in its quickest form: two stand-in learners, two
synthetic actors, one local node; its report's keys, and the bytes through the driver
against what the trajectories' shapes predict."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import ray

from tests.scripts import REPO_ROOT

pytestmark = pytest.mark.ray

NAME = "bench_orchestration"
#: The quickest run: Catch 11 x 6 (float32 observations), B envs per actor, T steps: an
#: unroll of 190 KB, above Ray's 100 KiB for results returned inside the reply.
T, B, LEARNERS = 20, 32, 2
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


@pytest.fixture
def ray_for_learners():
    """A local Ray as the driver starts one for learners of their own: task results above
    Ray's default go to the object store (``inline_results=False``), not into the driver."""
    from learner.cluster.session import local_ray_init_kwargs

    if ray.is_initialized():
        ray.shutdown()
    ray.init(**local_ray_init_kwargs(num_cpus=2, inline_results=False))
    yield
    ray.shutdown()


def test_the_quickest_run_reports_the_bytes_its_trajectories_predict(bench, ray_for_learners):
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
    # Each update the driver reads N unrolls' summaries and hands the learners references:
    # no unroll is deserialised or shipped by it (before issue 30 it fetched N and shipped
    # the N shards of their batch: 2 N unrolls' bytes); the learners fetched them.
    kinds = row["bytes_by_kind"]
    assert row["data_bytes_per_update"] == 0, kinds
    assert "in Trajectory" not in kinds and "out Batch" not in kinds, kinds
    assert 0 < kinds["in UnrollSummary"] < LEARNERS * FRAMING, kinds
    assert kinds["out list"] < LEARNERS * FRAMING, kinds  # the references, not the unrolls
    assert row["driver_bytes_per_update"] == pytest.approx(sum(kinds.values()), abs=1)
    assert row["driver_bytes_per_update"] < unroll  # summaries, references, replies

    # Two windows: their medians are means, so overhead = wall - learner holds exactly.
    assert row["env_steps_per_update"] == LEARNERS * T * B
    assert row["learner_ms_per_update"] >= 5.0
    assert row["overhead_ms_per_update"] == pytest.approx(
        row["wall_ms_per_update"] - row["learner_ms_per_update"], abs=0.02
    )
    assert 0 < row["env_steps_per_s"] < row["ideal_env_steps_per_s"]
    assert row["driver_cpu_ms_per_update"] > 0
