"""benchmarks/bench_async_meta.py: its per-update timings run on the current learners (the
benchmark's stand-in meta link must offer what the async schedule reads)."""

from __future__ import annotations

import sys

import pytest

from tests.scripts import REPO_ROOT, load_script


@pytest.fixture(scope="module")
def bench():
    # It imports its neighbours (bench_e2e, bench_learner) as a script run from benchmarks/.
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    try:
        yield load_script("benchmarks/bench_async_meta.py", "bench_async_meta")
    finally:
        sys.path.remove(str(REPO_ROOT / "benchmarks"))


def test_per_update_times_run_every_learner_and_the_meta_step(bench):
    times = bench.per_update_times(envs=4, updates=60, repeats=1)
    assert set(times) == {
        "impala_update_ms",
        "frodo_inline_update_ms",
        "frodo_async_learner_update_ms",
        "meta_learner_step_ms",
    }
    assert all(value > 0 for value in times.values()), times
