"""Env steps per second of batched Catch implementations, printed as JSON.

Compares, at B = 1, 16, 64, 256 with uniformly random actions (drawn before timing):

- ``batched_catch``: ``impala_frodo.envs.BatchedCatch`` (numpy, vectorised over B);
- ``sync_vector_env``: ``gymnasium.vector.SyncVectorEnv`` over B ``Catch`` (same-step autoreset);
- ``python_loop``: a Python loop over B ``Catch`` envs, resetting ended ones, stacking obs;
- ``gymnasium_batched``: ``impala_frodo.envs.GymnasiumBatchedEnv`` over ``gymnasium.make``
  Catch (our generic path, with Gymnasium's checker/order wrappers).

Each figure is the median over ``--repeats`` timed runs of ``max(--min-steps, --env-steps // B)``
batched steps. Usage: ``python benchmarks/bench_envs.py [--repeats 5] [--rows 10 --columns 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from impala_frodo.envs import CATCH_ID, BatchedCatch, Catch, GymnasiumBatchedEnv

BATCH_SIZES = (1, 16, 64, 256)

#: A runner takes the actions ``[T, B]`` and steps through them (after an untimed reset).
Runner = Callable[[np.ndarray], None]


def batched_catch_runner(num_envs: int, rows: int, columns: int) -> Runner:
    env = BatchedCatch(num_envs, rows, columns, seed=0)
    env.reset()

    def run(actions: np.ndarray) -> None:
        for a in actions:
            env.step(a)

    return run


def gymnasium_batched_runner(num_envs: int, rows: int, columns: int) -> Runner:
    env = GymnasiumBatchedEnv(CATCH_ID, num_envs, seed=0, rows=rows, columns=columns)
    env.reset()

    def run(actions: np.ndarray) -> None:
        for a in actions:
            env.step(a)

    return run


def sync_vector_env_runner(num_envs: int, rows: int, columns: int) -> Runner:
    env = gymnasium.vector.SyncVectorEnv(
        [lambda: Catch(rows, columns)] * num_envs,
        autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP,
    )
    env.reset(seed=0)

    def run(actions: np.ndarray) -> None:
        for a in actions:
            env.step(a)

    return run


def python_loop_runner(num_envs: int, rows: int, columns: int) -> Runner:
    envs = [Catch(rows, columns) for _ in range(num_envs)]
    for i, env in enumerate(envs):
        env.reset(seed=i)

    def run(actions: np.ndarray) -> None:
        for a in actions:
            batch = []
            for env, action in zip(envs, a.tolist(), strict=True):
                obs, _, terminated, _, _ = env.step(action)
                if terminated:
                    obs, _ = env.reset()
                batch.append(obs)
            np.stack(batch)

    return run


RUNNERS: dict[str, Callable[[int, int, int], Runner]] = {
    "batched_catch": batched_catch_runner,
    "sync_vector_env": sync_vector_env_runner,
    "python_loop": python_loop_runner,
    "gymnasium_batched": gymnasium_batched_runner,
}


def steps_per_second(runner: Runner, actions: np.ndarray, repeats: int) -> float:
    """Median env steps/s (``T * B`` per run) over ``repeats`` timed runs."""
    runner(actions[: min(10, len(actions))])  # warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner(actions)
        rates.append(actions.size / (time.perf_counter() - start))
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--env-steps", type=int, default=20_000, help="env steps per run")
    parser.add_argument("--min-steps", type=int, default=100, help="batched steps per run")
    parser.add_argument("--rows", type=int, default=10)
    parser.add_argument("--columns", type=int, default=5)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    results: dict[str, dict[str, float]] = {}
    for num_envs in BATCH_SIZES:
        num_steps = max(args.min_steps, args.env_steps // num_envs)
        actions = rng.integers(3, size=(num_steps, num_envs))
        row = {}
        for name, make_runner in RUNNERS.items():
            runner = make_runner(num_envs, args.rows, args.columns)
            row[name] = round(steps_per_second(runner, actions, args.repeats))
        row["speedup_vs_sync_vector_env"] = round(row["batched_catch"] / row["sync_vector_env"], 1)
        results[str(num_envs)] = row

    report = {
        "benchmark": "env steps/s, Catch, random actions, median of repeats",
        "rows": args.rows,
        "columns": args.columns,
        "repeats": args.repeats,
        "results_by_num_envs": results,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "gymnasium": gymnasium.__version__,
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
