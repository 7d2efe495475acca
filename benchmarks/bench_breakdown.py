"""Where the time goes: the cost of each stage of the pipeline per 1,000 env steps.

Prints JSON. Each stage is timed on its own, in this process with one torch
thread (as an actor runs), on Catch 10 x 5 unrolls of ``--envs`` envs x T
steps; medians over ``--repeats`` unrolls:

- ``env_step``: the numpy-batched env stepping alone;
- ``actor_inference``: mu's forward pass and Gumbel sampling alone;
- ``actor_unroll``: a whole :class:`Unroller` unroll (both of the above plus bookkeeping);
- ``transfer``: a trajectory returned by a Ray actor call to the driver
  (serialisation, the object store or inlined reply, deserialisation), minus
  the same call returning nothing;
- ``call_overhead``: a Ray actor call that returns nothing (scheduling, RPC);
- ``batch_to_device``: ``Batch.from_trajectories`` on the learner side;
- ``learner_<algo>``: one learner update (FRODO: inner updates with the outer
  step amortised over its M inner ones);
- ``publish``: packing the weights into one buffer (what each publication costs).

With A actors on A cores the actor stages run in parallel with the learner;
``learner_<algo>`` plus ``batch_to_device`` plus ``transfer`` is the serial
cost per 1,000 steps on the learner's core, and bounds end-to-end throughput.

    python benchmarks/bench_breakdown.py [--envs 32] [--repeats 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import ray
import torch

from impala_frodo.acting.trajectory import Trajectory
from impala_frodo.acting.unroll import Unroller
from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.envs import make_batched_env
from impala_frodo.networks.agent import AgentNet
from impala_frodo.networks.numpy_policy import NumpyPolicy
from impala_frodo.networks.weights import pack_params
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.updater import Updater
from learner.cluster.session import local_ray_init_kwargs


def median_s(fn: Callable[[], object], repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@ray.remote(num_cpus=0.5)
class Echo:
    """Hands back a fixed trajectory, or nothing: transfer cost without acting."""

    def __init__(self, trajectory: Trajectory) -> None:
        self.trajectory = trajectory

    def get(self) -> Trajectory:
        return self.trajectory

    def nothing(self) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)

    cfg = set_dotted(Config(), {"run.num_envs": args.envs})
    steps_per_unroll = cfg.run.unroll_length * args.envs
    per_k = 1000 / steps_per_unroll  # unrolls per 1,000 env steps

    env = make_batched_env(cfg.env.id, args.envs, seed=0, **cfg.env.kwargs)
    agent = AgentNet.from_config(env.observation_shape, env.num_actions, cfg.agent)
    policy = NumpyPolicy.from_params(dict(agent.named_parameters()))
    unroller = Unroller(env, cfg.run.unroll_length, seed=0)
    obs = env.reset(seed=0)
    actions = torch.zeros(args.envs, dtype=torch.int64).numpy()

    def env_unroll() -> None:
        for _ in range(cfg.run.unroll_length):
            env.step(actions)

    def inference_unroll() -> None:
        for _ in range(cfg.run.unroll_length):
            policy(obs)

    ms: dict[str, float] = {}
    ms["env_step"] = median_s(env_unroll, args.repeats) * 1e3 * per_k
    ms["actor_inference"] = median_s(inference_unroll, args.repeats) * 1e3 * per_k
    ms["actor_unroll"] = median_s(lambda: unroller.unroll(policy), args.repeats) * 1e3 * per_k

    trajectory = unroller.unroll(policy)
    ray.init(**local_ray_init_kwargs(num_cpus=os.cpu_count()))
    echo = Echo.remote(trajectory)
    call = median_s(lambda: ray.get(echo.nothing.remote()), args.repeats)
    full = median_s(lambda: ray.get(echo.get.remote()), args.repeats)
    ms["call_overhead"] = call * 1e3 * per_k
    ms["transfer"] = max(full - call, 0.0) * 1e3 * per_k
    ray.shutdown()

    device = torch.device("cpu")
    batches = [Batch.from_trajectories([unroller.unroll(policy)], device) for _ in range(60)]
    ms["batch_to_device"] = (
        median_s(lambda: Batch.from_trajectories([trajectory], device), args.repeats) * 1e3 * per_k
    )
    for algo in ("impala", "frodo"):
        updater = Updater(
            set_dotted(cfg, {"algo": algo}), env.observation_shape, env.num_actions, device=device
        )
        for batch in batches[:10]:  # warm-up
            updater.update(batch)
        start = time.perf_counter()
        for batch in batches[10:]:
            updater.update(batch)
        mean_update = (time.perf_counter() - start) / len(batches[10:])
        ms[f"learner_{algo}"] = mean_update * 1e3 * per_k
        params = updater.acting_params("cpu")
    publish_ms = median_s(lambda: pack_params(params), args.repeats) * 1e3

    serial = {
        algo: ms[f"learner_{algo}"] + ms["batch_to_device"] + ms["transfer"]
        for algo in ("impala", "frodo")
    }
    print(
        json.dumps(
            {
                "benchmark": "breakdown",
                "env": "impala_frodo/Catch-v0 10x5",
                "envs": args.envs,
                "unroll_length": cfg.run.unroll_length,
                "ms_per_1000_env_steps": {k: round(v, 3) for k, v in ms.items()},
                "publish_ms_per_publication": round(publish_ms, 3),
                "learner_core_bound_env_steps_per_s": {
                    algo: round(1000 / (cost / 1e3)) for algo, cost in serial.items()
                },
                "actor_core_bound_env_steps_per_s": round(1000 / (ms["actor_unroll"] / 1e3)),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
