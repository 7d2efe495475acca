"""Our IMPALA against RLlib's IMPALA on the same Catch: env steps/s and time to return 0.8.

Prints JSON. Needs RLlib: ``pip install -e '.[bench]'`` (the ``bench`` extra, ``ray[rllib]``).

Each run is a fresh subprocess, so both whole-process times include the Python
imports, Ray's start-up and shutdown. The systems alternate per seed (ours seed
0, RLlib seed 0, ours seed 1, ...), so that machine noise hits both alike.

- Ours: ``python -m learner train --algo impala --stop-at-return 0.8`` on the
  default config (Catch 10 x 5, 2 actors x 32 envs, unroll 20, local Ray).
- RLlib: ``IMPALAConfig`` on the new API stack, on our ``Catch`` class (same
  rows and columns; flattened observation, as our MLP flattens it), with the
  same actor count (env runners), envs per actor, unroll length (rollout
  fragment length), batch (one actor's unroll per update), network, optimizer
  (RMSProp, same lr, alpha, eps; through a small learner subclass), gamma,
  entropy and value costs, V-trace clipping, no gradient clipping, CPUs per
  actor, Ray CPUs and learner torch threads (1, in the driver process).

"Solved" is the same criterion for both: the mean return of the last
``run.returns_window`` (500) episodes reaches 0.8, the window full. Ours checks
it after every update. RLlib's ``env_runners/episode_return_mean`` is not such
a window in 2.60 (each env runner clears its window at every metrics pull, so
it averages the episodes of the last ``train()`` call only): the RLlib child
rebuilds the 500-episode window from its per-``train()`` means and episode
counts (:func:`window_return`), checked after each ``train()`` call of at least
``--rllib-iteration-s``, and stops on it. The time and env steps at which
RLlib's own metric first reached 0.8 are reported too (``metric_*``). A run
not solved within ``--deadline-s`` of its spawn counts as unsolved.

Per run: ``wall_s`` (spawn to exit: imports, Ray start, learning, shutdown),
``solve_s`` (spawn to the record that met the target), ``env_steps`` there, and
``env_steps_per_s``: between the first record with env steps and the last
(ours: metrics.jsonl; RLlib: ``env_runners/num_env_steps_sampled_lifetime``
after each ``train()``), so actor start-up is left out for both. Medians:
throughput over all runs, times over the solved ones; ratios are ours / RLlib
(a throughput ratio above 1 and a time ratio below 1 favour ours).

    python benchmarks/bench_vs_rllib.py [--seeds 0 1 2] [--deadline-s 120]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from impala_frodo.config.schema import Config
from impala_frodo.records.runlog import METRICS_FILE, read_metrics

#: The return target and the prefix of the RLlib child's record lines on stdout.
TARGET = 0.8
RECORD_PREFIX = "BENCH_VS_RLLIB "
#: RLlib's result keys (ray.rllib.utils.metrics, 2.60): env_runners/<key>.
ENV_RUNNER_RESULTS = "env_runners"
EPISODE_RETURN_MEAN = "episode_return_mean"
NUM_ENV_STEPS_SAMPLED_LIFETIME = "num_env_steps_sampled_lifetime"
NUM_EPISODES_LIFETIME = "num_episodes_lifetime"
#: Gymnasium/Tune name of the flattened Catch in the RLlib runs.
RLLIB_ENV_NAME = "impala_frodo_catch_flat"


# ------------------------------------------------------------------ pure helpers
def ours_command(seed: int, logdir: Path, target: float = TARGET) -> list[str]:
    """Our trainer's command line: IMPALA on the default config until ``target``."""
    return [
        sys.executable,
        "-m",
        "learner",
        "train",
        "--algo",
        "impala",
        "--seed",
        str(seed),
        "--stop-at-return",
        str(target),
        "--no-progress",
        "--logdir",
        str(logdir),
    ]


def rllib_command(
    seed: int, deadline_s: float, spawn_time: float, iteration_s: float, target: float = TARGET
) -> list[str]:
    """The RLlib child's command line (this script with ``--rllib-child``)."""
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--rllib-child",
        "--seed",
        str(seed),
        "--deadline-s",
        str(deadline_s),
        "--spawn-time",
        repr(spawn_time),
        "--rllib-iteration-s",
        str(iteration_s),
        "--target",
        str(target),
    ]


def rllib_record(result: Mapping[str, Any], t: float) -> dict[str, Any]:
    """The fields of an RLlib ``train()`` result this benchmark uses, at time ``t``.

    ``return_mean`` is None before the first finished episode (RLlib leaves the key out
    or reports NaN).
    """
    runners = result.get(ENV_RUNNER_RESULTS, {})
    ret = runners.get(EPISODE_RETURN_MEAN)
    if ret is not None and ret != ret:  # NaN
        ret = None
    return {
        "t": round(t, 3),
        "env_steps": int(runners.get(NUM_ENV_STEPS_SAMPLED_LIFETIME, 0)),
        "episodes": int(runners.get(NUM_EPISODES_LIFETIME, 0)),
        "return_mean": None if ret is None else float(ret),
    }


def metric_solved(record: Mapping[str, Any], target: float, window: int) -> bool:
    """RLlib's own ``episode_return_mean`` reached ``target``, after ``window`` episodes."""
    ret = record.get("return_mean")
    return ret is not None and record["episodes"] >= window and ret >= target


def window_return(records: Sequence[Mapping[str, Any]], window: int) -> float | None:
    """Mean return of the last ``window`` episodes, rebuilt from RLlib's per-``train()`` records.

    RLlib 2.60's ``env_runners/episode_return_mean`` is not a sliding window: each env runner
    clears its window whenever its metrics are pulled (every sample call), so the value is a
    mean over the episodes of the last ``train()`` call only. Each record's mean is weighted
    here by its new episodes (the growth of ``num_episodes_lifetime``), the oldest record cut
    to fill exactly ``window`` episodes. None until ``window`` episodes have finished.
    """
    if not records or records[-1]["episodes"] < window:
        return None
    total, need = 0.0, window
    for i in range(len(records) - 1, -1, -1):
        new = records[i]["episodes"] - (records[i - 1]["episodes"] if i > 0 else 0)
        ret = records[i]["return_mean"]
        if new <= 0 or ret is None:
            continue
        take = min(new, need)
        total += take * ret
        need -= take
        if need == 0:
            break
    return total / (window - need) if need < window else None


def parse_records(stdout: str) -> list[dict[str, Any]]:
    """The child's records: the JSON after :data:`RECORD_PREFIX` on each such line."""
    return [
        json.loads(line[len(RECORD_PREFIX) :])
        for line in stdout.splitlines()
        if line.startswith(RECORD_PREFIX)
    ]


def steady_rate(records: Sequence[Mapping[str, Any]]) -> float | None:
    """Env steps/s between the first record with env steps and the last (``t``, ``env_steps``).

    Records before the first env step (RLlib's env runners still starting) are left out.
    """
    records = [r for r in records if r["env_steps"] > 0]
    if len(records) < 2:
        return None
    first, last = records[0], records[-1]
    span = last["t"] - first["t"]
    return (last["env_steps"] - first["env_steps"]) / span if span > 0 else None


def median(values: Sequence[float | None], digits: int = 2) -> float | None:
    kept = [v for v in values if v is not None]
    return round(statistics.median(kept), digits) if kept else None


def rounded(value: float | None) -> float | None:
    return None if value is None else float(round(value))


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def summarize(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Medians of one system's runs: throughput over all runs, times over the solved.

    RLlib's runs also get the medians by its own metric (``metric_solve_s``,
    ``metric_env_steps``) over the runs where that reached the target.
    """
    solved = [r for r in runs if r["solved"]]
    summary = {
        "solved": f"{len(solved)}/{len(runs)}",
        "median_env_steps_per_s": median([r["env_steps_per_s"] for r in runs], 0),
        "median_wall_s": median([r["wall_s"] for r in solved]),
        "median_solve_s": median([r["solve_s"] for r in solved]),
        "median_env_steps": median([r["env_steps"] for r in solved], 0),
    }
    if any("metric_solve_s" in r for r in runs):
        summary["median_metric_solve_s"] = median([r.get("metric_solve_s") for r in runs])
        summary["median_metric_env_steps"] = median([r.get("metric_env_steps") for r in runs], 0)
    return {**summary, "runs": list(runs)}


def ratios(ours: Mapping[str, Any], rllib: Mapping[str, Any]) -> dict[str, float | None]:
    """ours / RLlib for each median; ``*_vs_metric``: against RLlib's own metric's times."""
    keys = ("median_env_steps_per_s", "median_wall_s", "median_solve_s", "median_env_steps")
    out = {k.removeprefix("median_"): ratio(ours[k], rllib[k]) for k in keys}
    out["solve_s_vs_metric"] = ratio(ours["median_solve_s"], rllib.get("median_metric_solve_s"))
    out["env_steps_vs_metric"] = ratio(
        ours["median_env_steps"], rllib.get("median_metric_env_steps")
    )
    return out


# ------------------------------------------------------------------ subprocesses
def run_process(command: list[str], deadline_s: float) -> tuple[float, int | None, str, str]:
    """Run ``command`` in its own process group; kill the group at the deadline.

    Returns (wall seconds, exit code or None when killed, stdout, stderr).
    """
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=deadline_s)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        code = None
    return time.perf_counter() - start, code, out, err


def run_ours(seed: int, logdir: Path, deadline_s: float) -> dict[str, Any]:
    spawn = time.time()
    wall, code, _, err = run_process(ours_command(seed, logdir), deadline_s)
    solved = code == 0 and "reached the return target" in err  # describe_result's reason
    runs = list(logdir.iterdir()) if logdir.exists() else []
    records = read_metrics(runs[0] / METRICS_FILE) if len(runs) == 1 else []
    records = [{"t": r["time"], "env_steps": r["env_steps"]} for r in records]
    run = {
        "seed": seed,
        "solved": solved,
        "wall_s": round(wall, 2),
        "solve_s": round(records[-1]["t"] - spawn, 2) if solved and records else None,
        "env_steps": records[-1]["env_steps"] if records else None,
        "env_steps_per_s": rounded(steady_rate(records)),
    }
    if code not in (0, None):
        run["error"] = err[-1500:]
    return run


def run_rllib(seed: int, deadline_s: float, iteration_s: float) -> dict[str, Any]:
    spawn = time.time()
    command = rllib_command(seed, deadline_s, spawn, iteration_s)
    # The child stops itself at the deadline; the margin covers its shutdown.
    wall, code, out, err = run_process(command, deadline_s + 60)
    records = parse_records(out)
    window = Config().run.returns_window
    hit = next((r for r in records if (r["window_return"] or -1e9) >= TARGET), None)
    metric_hit = next((r for r in records if metric_solved(r, TARGET, window)), None)
    solved = code == 0 and hit is not None
    run = {
        "seed": seed,
        "solved": solved,
        "wall_s": round(wall, 2),
        "solve_s": round(hit["t"], 2) if solved and hit else None,
        "metric_solve_s": round(metric_hit["t"], 2) if metric_hit else None,
        "metric_env_steps": metric_hit["env_steps"] if metric_hit else None,
        "env_steps": records[-1]["env_steps"] if records else None,
        "env_steps_per_s": rounded(steady_rate(records)),
        "iterations": len(records),
    }
    if code != 0:
        run["error"] = err[-1500:]
    return run


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


# ------------------------------------------------------------------ the RLlib child
def rllib_config(cfg: Config, seed: int, iteration_s: float) -> Any:
    """RLlib's ``IMPALAConfig`` matching ``cfg`` (our defaults) as closely as it allows."""
    import torch
    from ray.rllib.algorithms.impala import IMPALAConfig
    from ray.rllib.algorithms.impala.torch.impala_torch_learner import IMPALATorchLearner
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    optim = cfg.optim

    class RMSPropIMPALALearner(IMPALATorchLearner):
        """RLlib's IMPALA learner with our optimizer (RMSProp) instead of Adam."""

        def configure_optimizers_for_module(self, module_id, config=None):
            module = self._module[module_id]
            params = self.get_parameters(module)
            optimizer = torch.optim.RMSprop(
                params, lr=optim.lr, alpha=optim.rmsprop_alpha, eps=optim.rmsprop_eps
            )
            self.register_optimizer(
                module_id=module_id, optimizer=optimizer, params=params, lr_or_lr_schedule=optim.lr
            )

    run, loss = cfg.run, cfg.loss
    return (
        IMPALAConfig()
        .environment(RLLIB_ENV_NAME, env_config=dict(cfg.env.kwargs))
        .framework("torch")
        .env_runners(
            num_env_runners=run.num_actors,
            num_envs_per_env_runner=run.envs_per_actor,
            rollout_fragment_length=run.unroll_length,
            num_cpus_per_env_runner=run.actor_num_cpus,
        )
        .learners(num_learners=0, learner_class=RMSPropIMPALALearner)  # in the driver, as ours
        .training(
            lr=optim.lr,
            gamma=loss.gamma,
            entropy_coeff=loss.entropy_cost,
            vf_loss_coeff=loss.value_cost,
            vtrace_clip_rho_threshold=loss.clip_rho_threshold,
            vtrace_clip_pg_rho_threshold=loss.clip_pg_rho_threshold,
            grad_clip=optim.max_grad_norm or None,
            train_batch_size_per_learner=run.unroll_length
            * run.envs_per_actor
            * run.batches_per_update,
        )
        .rl_module(
            model_config=DefaultModelConfig(
                fcnet_hiddens=list(cfg.agent.hidden_sizes),
                fcnet_activation="relu",
                vf_share_layers=True,
            )
        )
        .reporting(
            metrics_num_episodes_for_smoothing=run.returns_window,
            min_time_s_per_iteration=iteration_s,
        )
        .debugging(seed=seed)
    )


def rllib_child(args: argparse.Namespace) -> int:
    """Train RLlib's IMPALA until the target or the deadline; print a record per ``train()``."""
    import gymnasium
    import ray
    import torch
    from ray.tune.registry import register_env

    from impala_frodo.envs import Catch

    torch.set_num_threads(1)  # ours: the CPUs the 0.5-CPU actors leave free on 2 cores
    cfg = Config()
    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, logging_level="WARNING")
    try:
        register_env(
            RLLIB_ENV_NAME,
            lambda env_config: gymnasium.wrappers.FlattenObservation(Catch(**env_config)),
        )
        algo = rllib_config(cfg, args.seed, args.rllib_iteration_s).build_algo()
        records: list[dict[str, Any]] = []
        try:
            while True:
                result = algo.train()
                record = rllib_record(result, time.time() - args.spawn_time)
                records.append(record)
                record["window_return"] = window_return(records, cfg.run.returns_window)
                print(RECORD_PREFIX + json.dumps(record), flush=True)
                if record["window_return"] is not None and record["window_return"] >= args.target:
                    return 0
                if record["t"] > args.deadline_s:
                    return 0  # unsolved: no record met the target
        finally:
            algo.stop()
    finally:
        ray.shutdown()


# ------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--deadline-s",
        type=float,
        default=120.0,
        help="a run not solved this long after its spawn counts as unsolved",
    )
    parser.add_argument(
        "--rllib-iteration-s",
        type=float,
        default=0.5,
        help="RLlib's min_time_s_per_iteration: how often its return is checked "
        "(IMPALA's default is 10 s)",
    )
    parser.add_argument("--rllib-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--spawn-time", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--target", type=float, default=TARGET, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rllib_child:
        sys.exit(rllib_child(args))
    import gymnasium
    from bench_e2e import machine_info  # torch and Ray imports: not in the child

    load_before = load_average()
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "rllib": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            runs["ours"].append(run_ours(seed, Path(tmp) / f"ours-{seed}", args.deadline_s))
            runs["rllib"].append(run_rllib(seed, args.deadline_s, args.rllib_iteration_s))
    ours, rllib = summarize(runs["ours"]), summarize(runs["rllib"])
    cfg = Config()
    print(
        json.dumps(
            {
                "benchmark": "impala_vs_rllib_catch",
                "env": "impala_frodo/Catch-v0 10x5",
                "target_return": TARGET,
                "returns_window": cfg.run.returns_window,
                "actors": cfg.run.num_actors,
                "envs_per_actor": cfg.run.envs_per_actor,
                "unroll_length": cfg.run.unroll_length,
                "seeds": args.seeds,
                "deadline_s": args.deadline_s,
                "rllib_iteration_s": args.rllib_iteration_s,
                **machine_info(1),
                "gymnasium": gymnasium.__version__,
                "load_1min_before": load_before,
                "load_1min_after": load_average(),
                "ours": ours,
                "rllib": rllib,
                "ratio_ours_over_rllib": ratios(ours, rllib),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
