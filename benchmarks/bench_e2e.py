"""End-to-end throughput: env steps/s of the Ray actor-learner against the synchronous trainer.

Prints JSON. Catch 10 x 5 (the default config), IMPALA and FRODO, for each
number of actors and envs-per-actor setting, ``--repeats`` runs each; the
synchronous single-process trainer (``learner.training.sync``) with the same
batch shape is the baseline, timed in the same process, interleaved with
the distributed runs so that machine noise hits both alike.

Two rates per run:

- ``steady``: env steps/s between the first and the last log record
  (actors started, learner busy): what a long run sees;
- ``session``: env steps / wall time of ``train()`` after Ray is up, actor
  start-up included: what a short run sees.

One local Ray instance serves every run (its start-up is measured once and
reported apart). Medians over repeats; ``ratio_vs_sync`` = median steady rate /
median sync rate of the same algorithm.

    python benchmarks/bench_e2e.py                      # 1, 2, 4 actors x 16, 32, 64 envs
    python benchmarks/bench_e2e.py --actors 2 --envs-per-actor 32 --repeats 5
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import ray
import torch

from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.records.runlog import METRICS_FILE, read_metrics
from learner.app.driver import TrainOptions, train
from learner.cluster.session import local_ray_init_kwargs
from learner.training.sync import train_sync


def steady_rate(run_dir: Path) -> float | None:
    """Env steps/s between the first and last log records of a run."""
    records = read_metrics(run_dir / METRICS_FILE)
    if len(records) < 2:
        return None
    first, last = records[0], records[-1]
    span = last["wall_time_s"] - first["wall_time_s"]
    return (last["env_steps"] - first["env_steps"]) / span if span > 0 else None


def config(algo: str, actors: int, envs: int, steps: int, logdir: str) -> Config:
    return set_dotted(
        Config(),
        {
            "algo": algo,
            "run.num_actors": actors,
            "run.envs_per_actor": envs,
            "run.num_envs": envs,  # the sync baseline's batch: one actor's unroll
            "run.total_env_steps": steps,
            "run.log_every_s": 0.5,
            "run.checkpoint_every_s": 1e9,  # one checkpoint at exit, as in any run
            "run.logdir": logdir,
        },
    )


def run_distributed(cfg: Config, learner_threads: int) -> dict[str, float | None]:
    options = TrainOptions(progress=False, handle_signals=False, learner_threads=learner_threads)
    result = train(cfg, options)
    if result.exit_code != 0:
        raise RuntimeError(f"run failed: {result.reason} {result.message}")
    return {
        "steady": steady_rate(result.run_dir),
        "session": result.env_steps_per_s,
        "policy_lag": result.last_log.get("perf/policy_lag"),
        "learner_wait_frac": result.last_log.get("perf/learner_wait_frac"),
    }


def run_sync(cfg: Config) -> float:
    return train_sync(cfg).env_steps_per_s


def median(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 1) if values else None


def machine_info(torch_threads: int) -> dict[str, object]:
    """CPUs, torch threads and library versions, for a benchmark's JSON report."""
    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch_threads,
        "torch": torch.__version__,
        "ray": ray.__version__,
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=["impala", "frodo"])
    parser.add_argument("--actors", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--envs-per-actor", nargs="+", type=int, default=[16, 32, 64])
    parser.add_argument("--steps", type=int, default=200_000, help="env steps per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of this process: the sync trainer's and the learner's "
        "(1 is what `impala-frodo train` picks on 2 cores with 0.5-CPU actors)",
    )
    args = parser.parse_args()
    # Before any torch op: OpenMP sizes its pool once, and spare pool threads spin.
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    ray.init(**local_ray_init_kwargs())
    ray_start_s = time.perf_counter() - start
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as logdir:
        for algo in args.algos:
            sync_rates: dict[int, list[float]] = {e: [] for e in args.envs_per_actor}
            runs: dict[tuple[int, int], list[dict]] = {}
            for _ in range(args.repeats):
                for envs in args.envs_per_actor:
                    sync_rates[envs].append(run_sync(config(algo, 1, envs, args.steps, logdir)))
                for actors, envs in itertools.product(args.actors, args.envs_per_actor):
                    cfg = config(algo, actors, envs, args.steps, logdir)
                    runs.setdefault((actors, envs), []).append(run_distributed(cfg, args.threads))
            for (actors, envs), samples in runs.items():
                steady = median([s["steady"] for s in samples])
                sync = median(sync_rates[envs])
                rows.append(
                    {
                        "algo": algo,
                        "actors": actors,
                        "envs_per_actor": envs,
                        "steady_env_steps_per_s": steady,
                        "session_env_steps_per_s": median([s["session"] for s in samples]),
                        "sync_env_steps_per_s": sync,
                        "ratio_vs_sync": round(steady / sync, 2) if steady and sync else None,
                        "policy_lag": median([s["policy_lag"] for s in samples]),
                        "learner_wait_frac": median([s["learner_wait_frac"] for s in samples]),
                    }
                )
    ray.shutdown()
    print(
        json.dumps(
            {
                "benchmark": "e2e_throughput",
                "env": "impala_frodo/Catch-v0 10x5",
                "unroll_length": Config().run.unroll_length,
                "env_steps_per_run": args.steps,
                "repeats": args.repeats,
                "ray_start_s": round(ray_start_s, 2),
                **machine_info(args.threads),
                "results": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
