"""Data-parallel learners: per-update time, the collectives' share, and end-to-end steps/s.

Prints JSON. Two parts:

- ``learner`` (no Ray): for each network (the Catch MLP, MinAtar's conv net, the Atari
  ResNet, the largest the project has) and algorithm, N = 1 and 2 learner processes
  joined by gloo, each with one torch thread and its own real unrolls of the preset's
  shape (one actor batch per learner: the global batch is N times one learner's).
  Reported: the median and mean ms of one update (the mean over a FRODO chain includes
  its meta steps), ``collective_ms`` (the forward collectives a learner issued per
  update: inner and meta gradients, batch statistics; the all-reduces inside FRODO's
  backward pass are not in it), the learners' env steps/s (N T B / mean update time),
  parameter counts, and ``allreduce_ms``: one all-reduce of a float32 vector of the
  agent's and eta's size, the cost a scaling model needs.
- ``e2e`` (``--e2e``): the Ray system on Catch, alternated runs of 1 learner, 1 learner
  with ``batches_per_update = 2`` (the same global batch as 2 learners) and 2 learners,
  steady env steps/s (between the first and last log records), median over repeats.

On a 2-core machine two learners share the cores with each other (and, end to end, with
the actors and the driver): the figures show the overhead of the collectives, not a
speed-up. The scaling model in docs/design.md (section "Data-parallel learners") reads them.

    python benchmarks/bench_data_parallel.py [--models catch minatar atari] [--updates 30]
    python benchmarks/bench_data_parallel.py --models catch --e2e --repeats 3
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import statistics
import tempfile
import time
from typing import Any

import torch
import torch.distributed as dist

from impala_frodo.acting.unroll import Unroller
from impala_frodo.config.presets import load_preset
from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.envs import make_batched_env
from impala_frodo.networks.agent import AgentNet
from impala_frodo.networks.numpy_policy import NumpyPolicy
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.data_parallel import AllReduceGradients
from impala_frodo.rule.metagrad import LOCAL
from impala_frodo.rule.updater import Updater

#: model -> (preset stem, envs per learner batch: the Atari ResNet's kept small, as
#: FRODO's second-order pass through it takes ~6 GB at B = 8 on CPU)
MODELS: dict[str, tuple[str, int | None]] = {
    "catch": ("catch", None),
    "minatar": ("minatar-breakout", None),
    "atari": ("atari-pong", 4),
}
WARMUP = 3


def learner_config(model: str, algo: str) -> Config:
    stem, envs = MODELS[model]
    cfg = load_preset(f"{stem}-{algo}")
    overrides: dict[str, Any] = {"run.device": "cpu"}
    if envs is not None:
        overrides["run.envs_per_actor"] = envs
    return set_dotted(cfg, overrides)


def real_batches(cfg: Config, count: int, seed: int) -> list[Batch]:
    """``count`` unrolls of one actor batch by a random agent's policy."""
    env = make_batched_env(cfg.env.id, cfg.run.envs_per_actor, seed=seed, **cfg.env.kwargs)
    agent = AgentNet.from_config(env.observation_shape, env.num_actions, cfg.agent)
    policy = NumpyPolicy.from_params(dict(agent.named_parameters()))
    unroller = Unroller(env, cfg.run.unroll_length, seed=seed)
    batches = [Batch.from_trajectories([unroller.unroll(policy)]) for _ in range(count)]
    env.close()
    return batches


def _num_actions(cfg: Config) -> int:
    env = make_batched_env(cfg.env.id, 1, seed=0, **cfg.env.kwargs)
    try:
        return env.num_actions
    finally:
        env.close()


def _learner(rank: int, size: int, port: int, model: str, algo: str, updates: int, out) -> None:
    torch.set_num_threads(1)
    if size > 1:
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size
        )
    try:
        cfg = learner_config(model, algo)
        batches = real_batches(cfg, updates + WARMUP, seed=rank)
        reducer = AllReduceGradients() if size > 1 else LOCAL
        updater = Updater(cfg, batches[0].obs.shape[2:], _num_actions(cfg), reducer=reducer)
        times, collectives = [], []
        for i, batch in enumerate(batches):
            if size > 1:
                dist.barrier()  # every learner starts the update together
            start = time.perf_counter()
            updater.update(batch)
            elapsed = time.perf_counter() - start
            collective = reducer.take_collective_s() if size > 1 else 0.0
            if i >= WARMUP:
                times.append(elapsed)
                collectives.append(collective)
        eta = sum(p.numel() for p in updater.eta.values())
        theta = sum(p.numel() for p in updater.params.values())
        allreduce = []
        if size > 1:
            vector = torch.zeros(theta + eta)
            for _ in range(20):
                dist.barrier()
                start = time.perf_counter()
                dist.all_reduce(vector)
                allreduce.append(time.perf_counter() - start)
        steps = cfg.run.unroll_length * cfg.run.envs_per_actor
        out.put(
            (
                rank,
                {
                    "update_ms_median": 1e3 * statistics.median(times),
                    "update_ms_mean": 1e3 * statistics.fmean(times),
                    "collective_ms": 1e3 * statistics.fmean(collectives),
                    "allreduce_ms": 1e3 * statistics.median(allreduce) if allreduce else None,
                    "theta_params": theta,
                    "eta_params": eta,
                    "steps_per_learner_update": steps,
                },
            )
        )
    finally:
        if size > 1:
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_learners(model: str, algo: str, size: int, updates: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    port = _free_port()
    procs = [
        context.Process(target=_learner, args=(r, size, port, model, algo, updates, out))
        for r in range(size)
    ]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=3600) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    worst = max(results.values(), key=lambda r: r["update_ms_mean"])
    row = dict(results[0])
    row["update_ms_mean"] = worst["update_ms_mean"]  # the group waits for its slowest
    row["collective_share"] = row["collective_ms"] / row["update_ms_mean"]
    row["env_steps_per_s"] = size * row["steps_per_learner_update"] / (row["update_ms_mean"] / 1e3)
    return row


def e2e(repeats: int, steps: int) -> list[dict[str, Any]]:
    import ray
    from bench_e2e import steady_rate  # this folder is on the path of a script run here

    from learner.app.driver import TrainOptions, train
    from learner.cluster.session import local_ray_init_kwargs

    variants = {
        "1 learner": {"run.num_learners": 1, "run.batches_per_update": 1},
        "1 learner, batches_per_update 2": {"run.num_learners": 1, "run.batches_per_update": 2},
        "2 learners": {"run.num_learners": 2, "run.learner_num_cpus": 0.5},
    }
    rates: dict[tuple[str, str], list[float]] = {}
    ray.init(**local_ray_init_kwargs())
    try:
        with tempfile.TemporaryDirectory() as logdir:
            for _ in range(repeats):
                for algo in ("impala", "frodo"):
                    for name, overrides in variants.items():
                        cfg = set_dotted(
                            load_preset(f"catch-{algo}"),
                            overrides
                            | {
                                "run.total_env_steps": steps,
                                "run.log_every_s": 0.5,
                                "run.checkpoint_every_s": 1e9,
                                "run.logdir": logdir,
                            },
                        )
                        # One torch thread for the driver's learner, as each of two has.
                        options = TrainOptions(
                            progress=False, handle_signals=False, learner_threads=1
                        )
                        result = train(cfg, options)
                        if result.exit_code != 0:
                            raise RuntimeError(f"{algo} {name}: {result.message}")
                        rates.setdefault((algo, name), []).append(steady_rate(result.run_dir))
    finally:
        ray.shutdown()
    rows = []
    for (algo, name), values in rates.items():
        base = statistics.median(rates[(algo, "1 learner")])
        rows.append(
            {
                "algo": algo,
                "variant": name,
                "steady_env_steps_per_s": round(statistics.median(values), 1),
                "ratio_vs_1_learner": round(statistics.median(values) / base, 3),
                "runs": [round(v, 1) for v in values],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--algos", nargs="+", default=["impala", "frodo"])
    parser.add_argument("--learners", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--updates", type=int, default=30, help="timed updates per learner")
    parser.add_argument("--e2e", action="store_true", help="also the Ray system on Catch")
    parser.add_argument("--repeats", type=int, default=3, help="end-to-end runs per variant")
    parser.add_argument("--e2e-steps", type=int, default=300_000)
    args = parser.parse_args()
    report: dict[str, Any] = {"cpus": os.cpu_count(), "torch": torch.__version__}
    rows = []
    for model in args.models:
        for algo in args.algos:
            base = None
            for size in args.learners:
                row = {"model": model, "algo": algo, "learners": size}
                row |= time_learners(model, algo, size, args.updates)
                base = base or row["update_ms_mean"]
                row["update_time_vs_1"] = row["update_ms_mean"] / base
                rows.append({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
                print(json.dumps(rows[-1]), flush=True)
    report["learner"] = rows
    if args.e2e:
        report["e2e"] = e2e(args.repeats, args.e2e_steps)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
