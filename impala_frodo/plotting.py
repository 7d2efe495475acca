"""Figures from run directories: mean and standard error over seeds against env steps.

Reads each run's ``config.json`` and ``metrics.jsonl`` (see
:mod:`impala_frodo.runlog`), groups runs by algorithm, interpolates every
seed's curve onto one grid of env steps, and draws one line per algorithm
with a shaded +- 1 standard error band. For the random walk the metric is
the value RMSE and the reward switches are marked.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from impala_frodo.config import Config, ConfigError
from impala_frodo.runlog import METRICS_FILE, read_config, read_metrics

CONTROL_METRIC = "episode/return"
PREDICTION_METRIC = "eval/value_rmse"
_LABELS = {
    ("impala", "control"): "IMPALA (V-trace target)",
    ("impala", "prediction"): "fixed n-step target",
    ("frodo", "control"): "FRODO",
    ("frodo", "prediction"): "FRODO",
    ("frodo-ext", "control"): "FRODO + extension",
    ("frodo-ext", "prediction"): "FRODO + extension",
    ("mgrl", "control"): "MGRL",
}


@dataclass
class Run:
    path: Path
    config: Config
    records: list[dict[str, Any]]

    @property
    def label(self) -> str:
        return _LABELS[(self.config.algo, self.config.task)]

    def series(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(env steps, values) of the records that have ``metric``."""
        points = [(r["env_steps"], r[metric]) for r in self.records if r.get(metric) is not None]
        if not points:
            return np.zeros(0), np.zeros(0)
        steps, values = zip(*points, strict=True)
        return np.asarray(steps, float), np.asarray(values, float)


@dataclass
class Curve:
    label: str
    steps: np.ndarray  # [G] grid of env steps
    mean: np.ndarray  # [G]
    stderr: np.ndarray  # [G] standard error over seeds (0 for one seed)
    num_seeds: int


def expand_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories as given, with each sweep directory replaced by the runs inside it.

    A run directory holds ``metrics.jsonl``; a sweep directory holds run directories.
    Anything else is a :class:`ConfigError`.
    """
    out: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if (path / METRICS_FILE).is_file():
            out.append(path)
            continue
        runs = sorted(p.parent for p in path.glob(f"*/{METRICS_FILE}")) if path.is_dir() else []
        if not runs:
            raise ConfigError(
                f"{str(path)!r} is not a run directory (no {METRICS_FILE}) "
                "nor a sweep directory holding runs"
            )
        out.extend(runs)
    return out


def load_runs(run_dirs: Sequence[str | Path]) -> list[Run]:
    """Read run directories; a clear :class:`ConfigError` for one that is not a run."""
    runs = []
    for run_dir in run_dirs:
        path = Path(run_dir)
        metrics = path / METRICS_FILE
        if not metrics.is_file():
            raise ConfigError(f"{str(path)!r} is not a run directory: no {METRICS_FILE}")
        runs.append(Run(path, read_config(path), read_metrics(metrics)))
    return runs


def default_metric(runs: Sequence[Run]) -> str:
    tasks = {r.config.task for r in runs}
    if len(tasks) != 1:
        raise ConfigError("cannot plot control and prediction runs on one figure")
    return PREDICTION_METRIC if tasks == {"prediction"} else CONTROL_METRIC


def seed_curves(runs: Sequence[Run], metric: str, points: int = 200) -> list[Curve]:
    """One curve per algorithm: mean and s.e. over its runs on a common env-step grid."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.label].append(run)
    curves = []
    for label, members in groups.items():
        series = [r.series(metric) for r in members]
        series = [(s, v) for s, v in series if s.size]
        if not series:
            continue
        end = min(s[-1] for s, _ in series)  # the span every seed covers
        start = max(s[0] for s, _ in series)
        grid = np.linspace(start, end, points) if end > start else np.array([end])
        stacked = np.stack([np.interp(grid, s, v) for s, v in series])
        n = stacked.shape[0]
        stderr = stacked.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(len(grid))
        curves.append(Curve(label, grid, stacked.mean(axis=0), stderr, n))
    return sorted(curves, key=lambda c: c.label)


def final_values(runs: Sequence[Run], metric: str, fraction: float = 0.1) -> dict[str, tuple]:
    """Per algorithm: (mean, s.e., seeds) of the seeds' means over their last records.

    Each seed contributes the mean of its last ``fraction`` of records.
    """
    groups: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        _, values = run.series(metric)
        if values.size:
            tail = values[-max(1, round(fraction * values.size)) :]
            groups[run.label].append(float(tail.mean()))
    out = {}
    for label, finals in sorted(groups.items()):
        arr = np.asarray(finals)
        se = float(arr.std(ddof=1) / np.sqrt(arr.size)) if arr.size > 1 else 0.0
        out[label] = (float(arr.mean()), se, int(arr.size))
    return out


def reward_switch_steps(runs: Sequence[Run], max_steps: float) -> np.ndarray:
    """Env steps (summed over envs) at which the random walk's left reward switches."""
    cfg = runs[0].config
    if "RandomWalk" not in cfg.env.id:
        return np.zeros(0)
    every = int(cfg.env.kwargs.get("switch_every", 960)) * cfg.run.num_envs
    return np.arange(every, max_steps, every, dtype=float)


def plot_runs(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    metric: str | None = None,
    title: str | None = None,
) -> Path:
    """Write a PNG of mean +- s.e. over seeds, one line per algorithm; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load_runs(run_dirs)
    if not runs:
        raise ConfigError("plot needs at least one run directory")
    metric = metric or default_metric(runs)
    curves = seed_curves(runs, metric)
    if not curves:
        raise ConfigError(f"no run has the metric {metric!r}")

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    max_steps = max(c.steps[-1] for c in curves)
    for k, step in enumerate(reward_switch_steps(runs, max_steps)):
        ax.axvline(step, color="0.85", lw=0.6, zorder=0, label="reward switch" if k == 0 else None)
    for curve in curves:
        (line,) = ax.plot(
            curve.steps, curve.mean, lw=1.6, label=f"{curve.label} ({curve.num_seeds} seeds)"
        )
        ax.fill_between(
            curve.steps,
            curve.mean - curve.stderr,
            curve.mean + curve.stderr,
            color=line.get_color(),
            alpha=0.2,
        )
    ax.set_xlabel("env steps")
    ylabel = {CONTROL_METRIC: "mean episode return", PREDICTION_METRIC: "RMS value error"}
    ax.set_ylabel(ylabel.get(metric, metric))
    env = runs[0].config.env
    details = ", ".join(f"{k}={v}" for k, v in env.kwargs.items())
    ax.set_title(title or f"{env.id.split('/')[-1]} {details}".strip())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
