"""Multi-seed sweeps: one Ray task per seed, each its own run directory.

Each seed runs the synchronous trainer (``impala_frodo.sync.run_sync``) in
a Ray task of ``cpus_per_seed`` CPUs, so a sweep fills a workstation's cores
or a cluster's. Seeds run in parallel as far as the CPUs allow; one view
shows the progress of the whole sweep; a seed that fails is reported and the
others go on.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from impala_frodo.config import Config, set_dotted
from impala_frodo.plotting import SWEEP_FILE
from impala_frodo.runlog import METRICS_FILE, create_run_dir, write_json_atomic


@dataclass
class SweepResult:
    sweep_dir: Path
    run_dirs: dict[int, Path]  # seed -> run directory
    failures: dict[int, str] = field(default_factory=dict)  # seed -> error message
    summaries: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed -> summary
    wall_time_s: float = 0.0


def train_seed(config: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """One seed, in a Ray worker: train synchronously into ``run_dir``."""
    import torch

    from impala_frodo.sync import run_sync

    torch.set_num_threads(1)  # one seed per CPU: threads would only contend
    result = run_sync(Config.from_dict(config), run_dir)
    return {
        "env_steps": result.env_steps,
        "wall_time_s": result.wall_time_s,
        "episodes": len(result.episode_returns),
    }


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


def run_sweep(
    cfg: Config,
    seeds: Sequence[int],
    logdir: str | Path,
    *,
    name: str,
    cpus_per_seed: float = 1.0,
    progress: bool = True,
    trainer: Callable[[dict[str, Any], str], dict[str, Any]] = train_seed,
) -> SweepResult:
    """Run ``cfg`` once per seed as parallel Ray tasks (Ray must be initialised).

    ``trainer(config_dict, run_dir) -> summary`` is what each task runs:
    :func:`train_seed` unless a caller (a test) substitutes another.
    """
    from tqdm import tqdm

    sweep_dir = Path(logdir) / f"sweep-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    sweep_dir.mkdir(parents=True, exist_ok=True)
    # What the runs inside have in common, for plots (their label is the preset's name).
    write_json_atomic(sweep_dir / SWEEP_FILE, {"name": name, "seeds": [int(s) for s in seeds]})
    task = ray.remote(trainer).options(num_cpus=cpus_per_seed, max_retries=0)
    run_dirs: dict[int, Path] = {}
    pending: dict[ray.ObjectRef, int] = {}
    for seed in seeds:
        seed_cfg = set_dotted(cfg, {"run.seed": int(seed)})
        run_dirs[seed] = create_run_dir(seed_cfg, sweep_dir)
        pending[task.remote(seed_cfg.to_dict(), str(run_dirs[seed]))] = seed

    result = SweepResult(sweep_dir, run_dirs)
    total = cfg.run.total_env_steps * len(run_dirs)
    start = time.perf_counter()
    with tqdm(
        total=total, unit="step", unit_scale=True, disable=not progress, desc=f"sweep {name}"
    ) as bar:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                seed = pending.pop(ref)
                try:
                    result.summaries[seed] = ray.get(ref)
                except Exception as e:  # a failed seed is reported; the others go on
                    message = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
                    result.failures[seed] = message
                    bar.write(f"seed {seed} failed: {message}")
            done = sum(
                cfg.run.total_env_steps if s in result.summaries else _last_env_steps(d)
                for s, d in run_dirs.items()
            )
            bar.n = min(done, total)
            bar.set_postfix(done=len(result.summaries), failed=len(result.failures), refresh=False)
            bar.refresh()
    result.wall_time_s = time.perf_counter() - start
    return result
