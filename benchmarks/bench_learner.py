"""Learner cost: ms per inner update and per outer meta step, on CPU (or CUDA if present).

Prints JSON. The outer step's cost is reported as a multiple of the M inner
steps it differentiates through (target: at most 2x). Batches are real Catch
unrolls (32 envs x 20 steps) from a fixed random policy; timings are medians
over many updates, with the IMPALA update as the same-process baseline.
``--repeats`` runs every algorithm that many times, alternated, and reports the
median of the runs' medians. ``update_ms`` is the mean cost of one update over
a chain (M inner updates and one with a meta step: what one batch costs the
learner), and ``update_over_impala`` its ratio to IMPALA's in the same process.

    python benchmarks/bench_learner.py [--device cpu] [--updates 130] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from impala_frodo.acting.unroll import Unroller
from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.envs import make_batched_env
from impala_frodo.networks.agent import AgentNet
from impala_frodo.networks.numpy_policy import NumpyPolicy
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.updater import Updater
from impala_frodo.utils import resolve_device


def make_batches(cfg: Config, count: int, device: torch.device) -> list[Batch]:
    env = make_batched_env(cfg.env.id, cfg.run.num_envs, seed=0, **cfg.env.kwargs)
    agent = AgentNet.from_config(env.observation_shape, env.num_actions, cfg.agent)
    policy = NumpyPolicy.from_params(dict(agent.named_parameters()))
    unroller = Unroller(env, cfg.run.unroll_length, seed=0)
    return [Batch.from_trajectories([unroller.unroll(policy)], device) for _ in range(count)]


def time_updates(cfg: Config, batches: list[Batch], device: torch.device) -> dict[str, float]:
    updater = Updater(cfg, batches[0].obs.shape[2:], 3, device=device)
    inner_ms, meta_ms = [], []
    for i, batch in enumerate(batches):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        metrics = updater.update(batch)  # .tolist() inside synchronises
        elapsed = 1e3 * (time.perf_counter() - start)
        if i < 10:  # warm-up
            continue
        (meta_ms if "loss/outer" in metrics else inner_ms).append(elapsed)
    out = {"inner_update_ms": statistics.median(inner_ms)}
    if meta_ms:
        # An update with a meta step = outer step + the next chain's first inner step.
        out["update_with_meta_step_ms"] = statistics.median(meta_ms)
        out["outer_step_ms"] = out["update_with_meta_step_ms"] - out["inner_update_ms"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--updates", type=int, default=130)
    parser.add_argument("--repeats", type=int, default=3, help="alternated runs per algorithm")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    base = set_dotted(Config(), {"run.device": str(device.type)})
    batches = make_batches(base, args.updates, device)
    results: dict[str, object] = {
        "device": str(device),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "batch": f"{base.run.unroll_length} x {base.run.num_envs} Catch 10x5",
        "num_inner_steps": base.meta.num_inner_steps,
    }
    algos = ("impala", "frodo", "frodo-ext", "mgrl")
    runs: dict[str, list[dict[str, float]]] = {algo: [] for algo in algos}
    for _ in range(args.repeats):
        for algo in algos:
            cfg = set_dotted(base, {"algo": algo})
            runs[algo].append(time_updates(cfg, batches, device))
    results["repeats"] = args.repeats
    m = base.meta.num_inner_steps
    for algo in algos:
        r = {k: statistics.median(run[k] for run in runs[algo]) for k in runs[algo][0]}
        if "update_with_meta_step_ms" in r:
            r["update_ms"] = (m * r["inner_update_ms"] + r["update_with_meta_step_ms"]) / (m + 1)
        else:
            r["update_ms"] = r["inner_update_ms"]
        results[algo] = r
    for algo in ("frodo", "frodo-ext", "mgrl"):
        r = results[algo]
        r["outer_over_m_inner"] = r["outer_step_ms"] / (m * r["inner_update_ms"])
        r["inner_over_impala"] = r["inner_update_ms"] / results["impala"]["inner_update_ms"]
        r["update_over_impala"] = r["update_ms"] / results["impala"]["update_ms"]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
