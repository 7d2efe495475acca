"""FRODO's meta step off the critical path: what the async meta-learner buys, measured.

Prints JSON. Two parts, on the default config (Catch 10 x 5, T = 20, M = 5):

- ``per_update``: per-update times in this process (no Ray), medians over a sequence
  of updates on recorded batches of ``--envs`` envs: IMPALA's update, FRODO inline
  (the chain schedule: the time of ``--updates`` updates / their number, so the outer
  step and the graph-keeping inner steps are both in), FRODO async's learner update
  (first-order, plus handing out a window as CPU tensors, the meta-learner not
  answering) and the meta-learner's step on one window. From these, a model of the
  ratio to IMPALA a learner-bound run reaches when the meta-learner has a core (or an
  accelerator) of its own: see ``model`` in the output for the assumptions.
- ``e2e``: distributed runs (local Ray) of IMPALA, FRODO inline and FRODO async,
  alternated within each repeat so that machine noise hits them alike, for each
  ``--actors`` x ``--envs-per-actor``: steady env steps/s (between the first and last
  log records), the ratio to IMPALA's median, and for async the meta lag, meta steps
  per 1,000 env steps and the share of windows skipped.

    python benchmarks/bench_async_meta.py --actors 2 1 --repeats 2 --steps 30000
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import ray
import torch
from bench_e2e import machine_info, steady_rate
from bench_learner import make_batches

from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.records.checkpoint import load_checkpoint
from impala_frodo.records.runlog import METRICS_FILE, read_metrics
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.meta_learner import EtaUpdate, MetaLearner, MetaWindow
from impala_frodo.rule.updater import Updater
from learner.app.driver import TrainOptions, train
from learner.cluster.session import local_ray_init_kwargs

NUM_ACTIONS = 3  # Catch


class _Sink:
    """A meta link that keeps the last window (as CPU tensors) and never answers."""

    skipped = 0
    dropped = 0

    def __init__(self) -> None:
        self.window: MetaWindow | None = None

    def send(self, window: MetaWindow) -> None:
        self.window = window.to("cpu")

    def poll(self) -> EtaUpdate | None:
        return None

    def load_state_dict(self, state: dict) -> None:
        pass

    def restart_stats(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        pass


def _ms_per_update(updater: Updater, batches: list[Batch], warmup: int) -> list[float]:
    times = []
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        updater.update(batch)
        if i >= warmup:
            times.append(1e3 * (time.perf_counter() - start))
    return times


def per_update_times(envs: int, updates: int, repeats: int) -> dict[str, float]:
    """Median ms per update of each learner, and the meta-learner's ms per window: the
    learners timed in turn, ``repeats`` times, medians over the repeats."""
    base = set_dotted(Config(), {"run.num_envs": envs, "run.device": "cpu"})
    batches = make_batches(base, updates, torch.device("cpu"))
    obs_shape = batches[0].obs.shape[2:]
    m = base.meta.num_inner_steps
    warmup = 2 * (m + 1)
    # The chain's updates differ (an outer step every M updates, in one window of
    # meta_every): means over whole cycles.
    period = m * base.meta_every
    cycle = batches[: warmup + (len(batches) - warmup) // period * period]
    async_cfg = set_dotted(base, {"meta.mode": "async"})
    samples: dict[str, list[float]] = {}
    for _ in range(repeats):
        impala = Updater(set_dotted(base, {"algo": "impala"}), obs_shape, NUM_ACTIONS)
        times = {"impala_update_ms": statistics.median(_ms_per_update(impala, batches, warmup))}
        inline = Updater(base, obs_shape, NUM_ACTIONS)
        times["frodo_inline_update_ms"] = statistics.fmean(_ms_per_update(inline, cycle, warmup))
        sink = _Sink()
        learner = Updater(async_cfg, obs_shape, NUM_ACTIONS, meta_link=sink)
        times["frodo_async_learner_update_ms"] = statistics.fmean(
            _ms_per_update(learner, cycle, warmup)
        )
        meta = MetaLearner.build(async_cfg, obs_shape, NUM_ACTIONS)
        meta.load_state_dict(learner.schedule.meta_state())
        step_ms = []
        for _ in range(6):
            start = time.perf_counter()
            meta.step(sink.window)
            step_ms.append(1e3 * (time.perf_counter() - start))
        times["meta_learner_step_ms"] = statistics.median(step_ms[1:])
        for key, value in times.items():
            samples.setdefault(key, []).append(value)
    return {k: round(statistics.median(v), 2) for k, v in samples.items()}


def model(times: dict[str, float], m: int) -> dict[str, object]:
    """What a learner-bound run's rate relative to IMPALA is, inline and async."""
    t_impala, t_inline = times["impala_update_ms"], times["frodo_inline_update_ms"]
    t_learner, t_meta = times["frodo_async_learner_update_ms"], times["meta_learner_step_ms"]
    window_ms = m * t_learner  # learner time between two windows
    return {
        "assumptions": (
            "the learner is the bottleneck (actors keep the queue full); the meta-learner "
            "has a core of its own, so the learner's update time is unchanged (the first "
            "ratio: the learner never waits, eta moves on the share of windows given); a meta "
            "step per window needs meta_learner_step_ms <= M x the async learner's update "
            "time; "
            "an accelerator is not measured here: it would divide both sides by a like "
            "factor, and the ratio would hold while the CPU-side work stays small"
        ),
        "inline_ratio_to_impala": round(t_impala / t_inline, 2),
        "async_ratio_to_impala_one_more_core": round(t_impala / t_learner, 2),
        # Every window stepped, the learner one window ahead (a lag of 1): per window the
        # slower of the learner's M updates and the meta step.
        "async_every_window_ratio_to_impala_one_more_core": round(
            t_impala / max(t_learner, t_meta / m), 2
        ),
        # The same with both in one process, one after the other (the synchronous
        # trainer's lock-step): the window's work is done twice, first-order and with graph.
        "async_lock_step_one_process_ratio_to_impala": round(
            t_impala / (t_learner + t_meta / m), 2
        ),
        "meta_learner_keeps_up": t_meta <= window_ms,
        "windows_with_a_meta_step_share": round(min(1.0, window_ms / t_meta), 2),
    }


def e2e_config(algo: str, mode: str, actors: int, envs: int, steps: int, logdir: str) -> Config:
    return set_dotted(
        Config(),
        {
            "algo": algo,
            "meta.mode": mode,
            "run.num_actors": actors,
            "run.envs_per_actor": envs,
            "run.total_env_steps": steps,
            "run.log_every_s": 0.5,
            "run.checkpoint_every_s": 1e9,
            "run.logdir": logdir,
        },
    )


def run_e2e(cfg: Config, threads: int) -> dict[str, float | None]:
    options = TrainOptions(progress=False, handle_signals=False, learner_threads=threads)
    result = train(cfg, options)
    if result.exit_code != 0:
        raise RuntimeError(f"run failed: {result.reason} {result.message}")
    out: dict[str, float | None] = {"steady": steady_rate(result.run_dir)}
    if cfg.meta.mode == "async":
        records = read_metrics(result.run_dir / METRICS_FILE)
        lags = [r["meta/lag"] for r in records if "meta/lag" in r]
        state = load_checkpoint(result.run_dir / "checkpoints" / "latest.pt")["updater"]
        windows = max(state["meta_windows"], 1)
        out["meta_lag_median"] = statistics.median(lags) if lags else None
        out["meta_steps_per_1k_env_steps"] = 1000 * state["num_meta_updates"] / result.env_steps
        out["skipped_window_share"] = state["meta_skipped"] / windows
        out["meta_step_share"] = state["num_meta_updates"] / windows
    return out


def median(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 2) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", nargs="+", type=int, default=[2, 1])
    parser.add_argument("--envs-per-actor", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30_000, help="env steps per e2e run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--updates", type=int, default=62, help="updates timed per learner")
    parser.add_argument("--timing-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    parser.add_argument("--skip-e2e", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    times = per_update_times(args.envs_per_actor, args.updates, args.timing_repeats)
    report: dict[str, object] = {
        "benchmark": "async_meta",
        "env": "impala_frodo/Catch-v0 10x5",
        "num_inner_steps": Config().meta.num_inner_steps,
        **machine_info(args.threads),
        "per_update": times,
        "per_update_ratio_to_impala": {
            k: round(times["impala_update_ms"] / v, 2) for k, v in times.items() if "update" in k
        },
        "model": model(times, Config().meta.num_inner_steps),
    }
    if not args.skip_e2e:
        variants = [("impala", "inline"), ("frodo", "inline"), ("frodo", "async")]
        ray.init(**local_ray_init_kwargs())
        rows = []
        with tempfile.TemporaryDirectory() as logdir:
            for actors in args.actors:
                samples: dict[str, list[dict]] = {f"{a}-{m}": [] for a, m in variants}
                for _ in range(args.repeats):
                    for algo, mode in variants:
                        cfg = e2e_config(
                            algo, mode, actors, args.envs_per_actor, args.steps, logdir
                        )
                        samples[f"{algo}-{mode}"].append(run_e2e(cfg, args.threads))
                impala = median([s["steady"] for s in samples["impala-inline"]])
                for name, runs in samples.items():
                    row: dict[str, object] = {"variant": name, "actors": actors}
                    for key in runs[0]:
                        row[key] = median([r[key] for r in runs])
                    row["steady_samples"] = [r["steady"] and round(r["steady"]) for r in runs]
                    steady = row["steady"]
                    row["ratio_to_impala"] = (
                        round(steady / impala, 2) if steady and impala else None
                    )
                    rows.append(row)
        ray.shutdown()
        report |= {
            "e2e": rows,
            "envs_per_actor": args.envs_per_actor,
            "env_steps_per_run": args.steps,
            "repeats": args.repeats,
            "note": "a shared 2-core machine (other jobs running): short runs, few repeats",
        }
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
