"""Wall time from the command to Catch mean return 0.8, Ray start-up included.

Prints JSON. Runs ``impala-frodo train --algo ALGO --stop-at-return 0.8`` on
the default config (Catch 10 x 5, local Ray) as a fresh subprocess per seed,
timing from the process start to its exit: Python and torch imports, Ray
start-up, actor start-up, learning, the final checkpoint and Ray shutdown.
The 1-minute load average before and after is printed with the figures.
"Solved" is the run's own criterion: the mean return of the last
``run.returns_window`` (500) episodes reaches 0.8. Medians over seeds.

    python benchmarks/bench_time_to_solve.py [--algo impala] [--seeds 0 1 2 3 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from impala_frodo.records.runlog import METRICS_FILE, read_metrics


def solve_once(algo: str, seed: int, logdir: Path, extra: list[str]) -> dict:
    command = [
        sys.executable,
        "-m",
        "learner",
        "train",
        "--algo",
        algo,
        "--seed",
        str(seed),
        "--stop-at-return",
        "0.8",
        "--no-progress",
        "--logdir",
        str(logdir / f"{algo}-{seed}"),
        *extra,
    ]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"seed {seed} exited {proc.returncode}: {proc.stderr[-2000:]}")
    (run_dir,) = (logdir / f"{algo}-{seed}").iterdir()
    last = read_metrics(run_dir / METRICS_FILE)[-1]
    solved = "reached the return target" in proc.stderr  # describe_result's stop reason
    return {
        "seed": seed,
        "wall_s": round(wall, 2),
        "env_steps": last["env_steps"],
        "train_wall_s": round(last["wall_time_s"], 2),
        "solved": solved,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", default="impala")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("extra", nargs="*", help="more train flags, after --")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        runs = [solve_once(args.algo, seed, Path(tmp), args.extra) for seed in args.seeds]
    solved = [r for r in runs if r["solved"]]
    print(
        json.dumps(
            {
                "benchmark": "time_to_catch_0.8",
                "algo": args.algo,
                "cpus": os.cpu_count(),
                "median_wall_s": statistics.median(r["wall_s"] for r in solved) if solved else None,
                "median_env_steps": statistics.median(r["env_steps"] for r in solved)
                if solved
                else None,
                "solved": f"{len(solved)}/{len(runs)}",
                # The 1-minute load average: on a shared machine, how noisy the figures are.
                "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                "runs": runs,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
