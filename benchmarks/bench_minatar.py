"""Throughput on MinAtar: env steps/s of IMPALA and FRODO, and the learner's share of the time.

Prints JSON. Per game (the ``minatar-<game>-<algo>`` presets: conv agent, 20 x 32 unrolls):

- ``env_steps_per_s``: the batched env alone (``--envs-per-actor`` envs, random actions);
- per algorithm,
  - ``learner_s_per_update``: median wall time of one ``Updater.update`` on a real
    ``[20, B, 10, 10, C]`` batch (FRODO: averaged over whole meta cycles, M inner steps and
    one outer step), and the env steps/s that the learner alone could take in;
  - ``sync_env_steps_per_s``: the synchronous trainer (act, then learn, in one process);
  - ``steady_env_steps_per_s``: the Ray actor-learner (``--actors`` x ``--envs-per-actor``)
    between its first and last log records, and ``learner_busy_frac``, the share of that
    time the learner spent updating rather than waiting for trajectories (1 - the mean of
    ``perf/learner_wait_frac`` over the log records).

Needs the ``minatar`` extra. On a shared machine the figures move with the load: the load
average before and after is printed with them.

    python benchmarks/bench_minatar.py                            # Breakout, 100k steps a run
    python benchmarks/bench_minatar.py --games breakout spaceinvaders --steps 200000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np
import ray
import torch
from bench_e2e import machine_info, steady_rate

from impala_frodo.acting.unroll import Unroller
from impala_frodo.config.presets import load_preset
from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.envs import make_batched_env
from impala_frodo.networks.agent import AgentNet
from impala_frodo.networks.numpy_policy import NumpyPolicy
from impala_frodo.records.runlog import METRICS_FILE, read_metrics
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.updater import Updater
from learner.app.driver import TrainOptions, train
from learner.cluster.session import local_ray_init_kwargs
from learner.training.sync import train_sync


def preset(game: str, algo: str, actors: int, envs: int, steps: int, logdir: str) -> Config:
    return set_dotted(
        load_preset(f"minatar-{game}-{algo}"),
        {
            "run.num_actors": actors,
            "run.envs_per_actor": envs,
            "run.num_envs": envs,  # the sync trainer's batch: one actor's unroll
            "run.total_env_steps": steps,
            "run.log_every_s": 1.0,
            "run.checkpoint_every_s": 1e9,  # one checkpoint at exit, as in any run
            "run.logdir": logdir,
        },
    )


def env_rate(cfg: Config, num_steps: int = 2000) -> float:
    env = make_batched_env(cfg.env.id, cfg.run.num_envs, seed=0, **cfg.env.kwargs)
    env.reset()
    rng = np.random.default_rng(0)
    actions = rng.integers(env.num_actions, size=(num_steps, env.num_envs))
    start = time.perf_counter()
    for a in actions:
        env.step(a)
    rate = num_steps * env.num_envs / (time.perf_counter() - start)
    env.close()
    return rate


def learner_seconds_per_update(cfg: Config, cycles: int = 8) -> float:
    """Median seconds per update over whole meta cycles (M + 1 updates each; IMPALA: 6)."""
    env = make_batched_env(cfg.env.id, cfg.run.num_envs, seed=0, **cfg.env.kwargs)
    agent = AgentNet.from_config(env.observation_shape, env.num_actions, cfg.agent)
    unroller = Unroller(env, cfg.run.unroll_length, seed=0)
    params = dict(agent.named_parameters())
    policy = NumpyPolicy.from_params(params, obs_scale=env.observation_scale)
    batches = [Batch.from_trajectories([unroller.unroll(policy)]) for _ in range(3)]
    env.close()
    updater = Updater(cfg, env.observation_shape, env.num_actions)
    per_cycle = cfg.meta.num_inner_steps + 1 if cfg.is_meta else 6
    updater.update(batches[0])  # warm-up
    times = []
    for i in range(cycles):
        start = time.perf_counter()
        for j in range(per_cycle):
            updater.update(batches[(i + j) % len(batches)])
        times.append((time.perf_counter() - start) / per_cycle)
    return statistics.median(times)


def run_distributed(cfg: Config, learner_threads: int) -> dict[str, float | None]:
    options = TrainOptions(progress=False, handle_signals=False, learner_threads=learner_threads)
    result = train(cfg, options)
    if result.exit_code != 0:
        raise RuntimeError(f"run failed: {result.reason} {result.message}")
    waits = [
        r["perf/learner_wait_frac"]
        for r in read_metrics(result.run_dir / METRICS_FILE)
        if r.get("perf/learner_wait_frac") is not None
    ]
    return {
        "steady_env_steps_per_s": steady_rate(result.run_dir),
        "session_env_steps_per_s": result.env_steps_per_s,
        "learner_busy_frac": 1.0 - statistics.mean(waits) if waits else None,
        "policy_lag": result.last_log.get("perf/policy_lag"),
    }


def rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", nargs="+", default=["breakout"])
    parser.add_argument("--algos", nargs="+", default=["impala", "frodo"])
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--envs-per-actor", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100_000, help="env steps per run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # before any torch op

    load_before = os.getloadavg()[0]
    ray.init(**local_ray_init_kwargs())
    rows = []
    with tempfile.TemporaryDirectory() as logdir:
        for game in args.games:
            base = preset(game, "impala", args.actors, args.envs_per_actor, args.steps, logdir)
            row: dict = {"game": game, "env": base.env.id, "env_steps_per_s": env_rate(base)}
            for algo in args.algos:
                cfg = preset(game, algo, args.actors, args.envs_per_actor, args.steps, logdir)
                update_s = learner_seconds_per_update(cfg)
                batch_steps = cfg.run.unroll_length * cfg.run.envs_per_actor
                sync = train_sync(cfg).env_steps_per_s
                dist = run_distributed(cfg, args.threads)
                row[algo] = {
                    "learner_s_per_update": round(update_s, 4),
                    "learner_only_env_steps_per_s": rounded(batch_steps / update_s),
                    "sync_env_steps_per_s": rounded(sync),
                    **{k: rounded(v, 3 if k.endswith("frac") else 1) for k, v in dist.items()},
                }
            row["env_steps_per_s"] = rounded(row["env_steps_per_s"])
            rows.append(row)
    ray.shutdown()
    print(
        json.dumps(
            {
                "benchmark": "minatar_throughput",
                "actors": args.actors,
                "envs_per_actor": args.envs_per_actor,
                "unroll_length": load_preset(f"minatar-{args.games[0]}-impala").run.unroll_length,
                "env_steps_per_run": args.steps,
                "load_avg_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                **machine_info(args.threads),
                "results": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
