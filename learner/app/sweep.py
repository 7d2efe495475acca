"""Multi-seed sweeps: one Ray task per seed, each its own run directory.

Each seed runs in a Ray task of ``cpus_per_seed`` CPUs, so a sweep fills a
workstation's cores or a cluster's; one view shows the progress of the whole
sweep; a seed that fails, or runs past ``seed_timeout_s``, is reported and the
others go on. A seed trains in one of two ways:

- **synchronous** (default, :func:`train_seed`): ``learner.training.sync.train_sync``,
  on-policy, in the task itself.
- **distributed** (:func:`train_seed_distributed`): the Ray actor-learner of
  ``impala-frodo train`` (:func:`learner.app.driver.train`): the task is the learner
  (``cpus_per_seed`` CPUs) and starts ``run.num_actors`` rollout actors of
  ``run.actor_num_cpus`` each, which act with a stale policy mu; the run logs
  the measured ``perf/policy_lag``. Each seed gets one placement group that
  holds the learner and its actors together (one bundle of ``cpus_per_seed +
  num_actors * actor_num_cpus`` CPUs, child tasks captured), so a seed starts
  only when all of it fits: seeds never hold a learner's CPU while waiting for
  actors another seed holds. On 2 cores (learner 1 + 2 actors x 0.5) the seeds
  therefore run one after another, each with the whole machine, which is also
  what keeps the measured lag that of the configured system rather than of
  seeds competing for cores. On more CPUs they run side by side.

Both write the same run directory (``config.json``, ``metrics.jsonl``,
TensorBoard events), so ``impala-frodo plot`` and the sweep summary read either.
At most as many seeds as the cluster's CPUs hold are submitted at a time, so a
seed's deadline counts from when it can start, not from the start of the sweep.
A seed past its deadline is cancelled (its process killed, its placement group
and actors removed) and reported as failed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from impala_frodo.config.checks import ConfigError
from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.records.runlog import METRICS_FILE, create_run_dir, write_json_atomic
from impala_frodo.reports.plotting import SWEEP_FILE

#: The metrics.jsonl key of the measured policy lag (updates between acting and learning).
POLICY_LAG_KEY = "perf/policy_lag"
#: Seconds between checks of the running seeds (progress, deadlines).
POLL_S = 1.0


@dataclass
class SweepResult:
    sweep_dir: Path
    run_dirs: dict[int, Path]  # seed -> run directory
    failures: dict[int, str] = field(default_factory=dict)  # seed -> error message
    summaries: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed -> summary
    wall_time_s: float = 0.0

    def mean_policy_lag(self) -> float | None:
        """The mean over finished seeds of their mean measured policy lag (None: not logged)."""
        lags = [
            s[POLICY_LAG_KEY] for s in self.summaries.values() if s.get(POLICY_LAG_KEY) is not None
        ]
        return sum(lags) / len(lags) if lags else None


def train_seed(config: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """One seed, in a Ray worker: train synchronously into ``run_dir``."""
    import torch

    from learner.training.sync import train_sync

    torch.set_num_threads(1)  # one seed per CPU: threads would only contend
    result = train_sync(Config.from_dict(config), run_dir=run_dir)
    return {
        "env_steps": result.env_steps,
        "wall_time_s": result.session_wall_s,
        "episodes": result.episodes,
    }


def train_seed_distributed(config: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """One seed, in a Ray worker: the actor-learner (this task is the learner) into ``run_dir``.

    Raises ``RuntimeError`` if the run does not reach its budget (non-finite loss,
    actors that keep failing), so that the sweep reports the seed as failed.
    """
    from learner.app.driver import TrainOptions, train
    from learner.control.exit_codes import ExitCode

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    options = TrainOptions(
        run_dir=Path(run_dir),
        progress=False,
        handle_signals=False,  # the sweep's driver handles Ctrl-C and cancels the seeds
        learner_threads=max(1, math.floor(cpus)),
    )
    result = train(Config.from_dict(config), options)
    if result.exit_code != ExitCode.OK:
        raise RuntimeError(
            f"{result.reason}: {result.message or f'exit code {result.exit_code:d}'}"
        )
    return {
        "env_steps": result.env_steps,
        "wall_time_s": result.session_wall_s,
        "episodes": result.episodes,
        "updates": result.updates,
        "actor_failures": result.actor_failures,
        POLICY_LAG_KEY: mean_logged(Path(run_dir), POLICY_LAG_KEY),
    }


def mean_logged(run_dir: Path, key: str) -> float | None:
    """The mean of ``key`` over a run's metrics.jsonl records that have it (None if none).

    Records of the distributed learner are every ``run.log_every_updates`` updates
    (or ``run.log_every_s``), so this is close to the mean over updates.
    """
    values = []
    with contextlib.suppress(OSError), open(run_dir / METRICS_FILE) as f:
        for line in f:
            with contextlib.suppress(ValueError):
                value = json.loads(line).get(key)
                if isinstance(value, int | float):
                    values.append(float(value))
    return sum(values) / len(values) if values else None


def _last_env_steps(run_dir: Path) -> int:
    """The env steps of the last complete record of a run's metrics file (0 if none yet)."""
    path = run_dir / METRICS_FILE
    with contextlib.suppress(OSError), open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 4096))
        lines = f.read().splitlines()
        for line in reversed(lines):
            key = b'"env_steps": '
            start = line.find(key)
            if start >= 0:
                digits = line[start + len(key) :].split(b",", 1)[0]
                with contextlib.suppress(ValueError):
                    return int(digits)
    return 0


def seed_cpus(cfg: Config, cpus_per_seed: float, distributed: bool) -> float:
    """The CPUs one seed holds: its task, plus its actors when distributed."""
    actors = cfg.run.num_actors * cfg.run.actor_num_cpus if distributed else 0.0
    return cpus_per_seed + actors


@dataclass
class _Running:
    seed: int
    ref: ray.ObjectRef
    started: float
    placement_group: Any = None


def run_sweep(
    cfg: Config,
    seeds: Sequence[int],
    logdir: str | Path,
    *,
    name: str,
    cpus_per_seed: float = 1.0,
    progress: bool = True,
    distributed: bool = False,
    seed_timeout_s: float | None = None,
    trainer: Callable[[dict[str, Any], str], dict[str, Any]] | None = None,
) -> SweepResult:
    """Run ``cfg`` once per seed as Ray tasks (Ray must be initialised); see the module doc.

    ``trainer(config_dict, run_dir) -> summary`` is what each task runs:
    :func:`train_seed` (or :func:`train_seed_distributed` with ``distributed``)
    unless a caller (a test) substitutes another. ``seed_timeout_s``: a seed
    still running that long after it was submitted is cancelled and fails.
    """
    from tqdm import tqdm

    if trainer is None:
        trainer = train_seed_distributed if distributed else train_seed
    sweep_dir = _make_sweep_dir(Path(logdir), name, seeds, distributed)
    parallel = _seeds_at_a_time(cfg, cpus_per_seed, distributed)
    configs = {seed: set_dotted(cfg, {"run.seed": int(seed)}) for seed in seeds}
    run_dirs = {seed: create_run_dir(configs[seed], sweep_dir) for seed in seeds}
    group_cpus = seed_cpus(cfg, cpus_per_seed, distributed) if distributed else None
    tasks = _SeedTasks(trainer, configs, run_dirs, cpus_per_seed, group_cpus)
    result = SweepResult(sweep_dir, run_dirs)
    total = cfg.run.total_env_steps * len(run_dirs)
    start = time.perf_counter()
    with tqdm(
        total=total, unit="step", unit_scale=True, disable=not progress, desc=f"sweep {name}"
    ) as bar:
        watch = _Watch(bar, cfg.run.total_env_steps, seed_timeout_s)
        _run_seeds(tasks, list(seeds), parallel, result, watch)
    result.wall_time_s = time.perf_counter() - start
    return result


def _seeds_at_a_time(cfg: Config, cpus_per_seed: float, distributed: bool) -> int:
    """Seeds submitted at a time: as many as the CPUs hold (at least one, which Ray
    queues if it does not fit yet); the deadline of each counts from its submission.

    :class:`ConfigError` if a distributed seed (learner and actors together) could
    never fit the cluster.
    """
    per_seed = seed_cpus(cfg, cpus_per_seed, distributed)
    cluster_cpus = ray.cluster_resources().get("CPU", 0.0)
    if distributed and per_seed > cluster_cpus + 1e-9:
        raise ConfigError(
            f"a distributed seed needs {per_seed:g} CPUs (learner {cpus_per_seed:g} + "
            f"{cfg.run.num_actors} actors x {cfg.run.actor_num_cpus:g}) but the Ray cluster "
            f"has {cluster_cpus:g}: lower --cpus-per-seed, run.num_actors or run.actor_num_cpus"
        )
    return max(1, math.floor(cluster_cpus / per_seed + 1e-9))


def _make_sweep_dir(logdir: Path, name: str, seeds: Sequence[int], distributed: bool) -> Path:
    """``<logdir>/sweep-<name>-<time>/`` with its ``sweep.json``: what its runs have in
    common, for plots (their label is the preset's name)."""
    sweep_dir = logdir / f"sweep-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    sweep_dir.mkdir(parents=True, exist_ok=True)
    info = {
        "name": name,
        "seeds": [int(s) for s in seeds],
        "trainer": "distributed" if distributed else "sync",
    }
    write_json_atomic(sweep_dir / SWEEP_FILE, info)
    return sweep_dir


class _SeedTasks:
    """Starts a seed's Ray task, and ends it.

    With ``group_cpus`` (distributed seeds) each task gets a placement group of that
    many CPUs, which holds the learner task and its actors together.
    """

    def __init__(
        self,
        trainer: Callable[[dict[str, Any], str], dict[str, Any]],
        configs: dict[int, Config],
        run_dirs: dict[int, Path],
        cpus_per_seed: float,
        group_cpus: float | None,
    ) -> None:
        self.remote_trainer = ray.remote(trainer)
        self.configs = configs
        self.run_dirs = run_dirs
        self.cpus_per_seed = cpus_per_seed
        self.group_cpus = group_cpus

    def submit(self, seed: int) -> _Running:
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        options: dict[str, Any] = {"num_cpus": self.cpus_per_seed, "max_retries": 0}
        group = None
        if self.group_cpus is not None:
            group = placement_group([{"CPU": self.group_cpus}])
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                group, placement_group_capture_child_tasks=True
            )
        config, run_dir = self.configs[seed].to_dict(), str(self.run_dirs[seed])
        ref = self.remote_trainer.options(**options).remote(config, run_dir)
        return _Running(seed, ref, time.monotonic(), group)

    @staticmethod
    def finish(run: _Running) -> None:
        """Free what the seed held (its placement group also ends any actor still alive)."""
        from ray.util.placement_group import remove_placement_group

        if run.placement_group is not None:
            with contextlib.suppress(Exception):
                remove_placement_group(run.placement_group)

    def cancel(self, run: _Running) -> None:
        """Kill the seed's task and free what it held."""
        with contextlib.suppress(Exception):
            ray.cancel(run.ref, force=True)
        self.finish(run)


class _Watch:
    """The sweep's view: failures reported, deadlines, and a bar of env steps so far."""

    def __init__(self, bar: Any, steps_per_seed: int, seed_timeout_s: float | None) -> None:
        self.bar = bar
        self.steps_per_seed = steps_per_seed
        self.seed_timeout_s = seed_timeout_s

    def fail(self, result: SweepResult, seed: int, message: str) -> None:
        result.failures[seed] = message
        self.bar.write(f"seed {seed} failed: {message}")

    def overdue(self, run: _Running, now: float) -> bool:
        return self.seed_timeout_s is not None and now - run.started > self.seed_timeout_s

    def show(self, result: SweepResult) -> None:
        """Finished seeds count their budget, running ones their last logged env steps."""
        done = sum(
            self.steps_per_seed if seed in result.summaries else _last_env_steps(run_dir)
            for seed, run_dir in result.run_dirs.items()
        )
        self.bar.n = min(done, self.bar.total)
        self.bar.set_postfix(done=len(result.summaries), failed=len(result.failures), refresh=False)
        self.bar.refresh()


def _run_seeds(
    tasks: _SeedTasks, waiting: list[int], parallel: int, result: SweepResult, watch: _Watch
) -> None:
    """Keep ``parallel`` seeds running until every seed is done, failed or timed out."""
    running: dict[ray.ObjectRef, _Running] = {}
    try:
        while waiting or running:
            while waiting and len(running) < parallel:
                run = tasks.submit(waiting.pop(0))
                running[run.ref] = run
            ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
            for ref in ready:
                _collect(tasks, running.pop(ref), result, watch)
            _cancel_overdue(tasks, running, result, watch)
            watch.show(result)
    finally:  # Ctrl-C or an error here: no seed outlives the sweep
        for run in running.values():
            tasks.cancel(run)


def _collect(tasks: _SeedTasks, run: _Running, result: SweepResult, watch: _Watch) -> None:
    """A finished seed's summary, or its failure (reported; the others go on)."""
    try:
        result.summaries[run.seed] = ray.get(run.ref)
    except Exception as e:
        text = str(e).strip()
        watch.fail(result, run.seed, text.splitlines()[-1] if text else repr(e))
    finally:
        tasks.finish(run)


def _cancel_overdue(
    tasks: _SeedTasks, running: dict[ray.ObjectRef, _Running], result: SweepResult, watch: _Watch
) -> None:
    """Cancel the seeds past their deadline, and fail them."""
    now = time.monotonic()
    for ref, run in list(running.items()):
        if watch.overdue(run, now):
            ray.cancel(ref, force=True)
            tasks.finish(run)
            del running[ref]
            watch.fail(result, run.seed, f"timed out after {watch.seed_timeout_s:g} s")
