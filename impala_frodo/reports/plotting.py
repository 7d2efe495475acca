"""Figures from run directories: mean and standard error over seeds against env steps.

Reads each run's ``config.json`` and ``metrics.jsonl`` (see
:mod:`impala_frodo.records.runlog`). Runs are grouped into one panel per env (id and
kwargs) and, in a panel, into one curve per preset (the name of the sweep a run
belongs to) or, outside sweeps, per algorithm. A curve is the mean over its
distinct seeds (runs that share a seed are averaged first, so they count once)
with a band of +- 1 standard error over seeds, on a grid of env steps common to
the panel; a seed contributes only up to its last record, never extrapolated.
For the random walk the metric is the value RMSE and the reward switches are
marked.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from impala_frodo.config.checks import ConfigError
from impala_frodo.config.schema import Config
from impala_frodo.records.runlog import METRICS_FILE, read_config, read_metrics

CONTROL_METRIC = "episode/return"
PREDICTION_METRIC = "eval/value_rmse"
#: Written by a sweep into its directory: ``{"name": preset or "config", "seeds": [...]}``.
SWEEP_FILE = "sweep.json"
FORMATS = ("png", "svg", "pdf")
_LABELS = {
    ("impala", "control"): "IMPALA (V-trace target)",
    ("impala", "prediction"): "fixed n-step target",
    ("frodo", "control"): "FRODO",
    ("frodo", "prediction"): "FRODO",
    ("frodo-ext", "control"): "FRODO + extension",
    ("frodo-ext", "prediction"): "FRODO + extension",
    ("mgrl", "control"): "MGRL",
}


def sweep_name(run_dir: Path) -> str | None:
    """The preset of the sweep that ``run_dir`` belongs to (None outside a sweep)."""
    try:
        name = json.loads((run_dir.parent / SWEEP_FILE).read_text()).get("name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and name and name != "config" else None


@dataclass
class Run:
    path: Path
    config: Config
    records: list[dict[str, Any]]
    preset: str | None = None  # the sweep's preset name, if the run is part of a sweep

    @property
    def label(self) -> str:
        algo = _LABELS[(self.config.algo, self.config.task)]
        return f"{algo} ({self.preset})" if self.preset else algo

    @property
    def seed(self) -> int:
        return self.config.run.seed

    @property
    def env_key(self) -> tuple[str, str, str]:
        """What must be equal for runs to share a panel: env id, its kwargs, the task."""
        kwargs = json.dumps(self.config.env.kwargs, sort_keys=True)
        return self.config.env.id, kwargs, self.config.task

    @property
    def env_title(self) -> str:
        env = self.config.env
        details = ", ".join(f"{k}={v}" for k, v in env.kwargs.items())
        return f"{env.id.split('/')[-1]} {details}".strip()

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
    steps: np.ndarray  # [G] grid of env steps, common to the curves of one panel
    mean: np.ndarray  # [G] mean over the seeds that reach each step (NaN where none)
    stderr: np.ndarray  # [G] standard error over those seeds (0 where only one)
    num_seeds: int  # distinct seeds
    num_runs: int  # runs (more than seeds when runs share a seed)
    seeds_at_end: int  # seeds that reach the curve's last step

    @property
    def legend(self) -> str:
        text = f"{self.label}: {self.num_seeds} seed{'s' if self.num_seeds != 1 else ''}"
        notes = []
        if self.num_runs > self.num_seeds:
            notes.append(f"{self.num_runs} runs")
        if self.seeds_at_end < self.num_seeds:
            notes.append(f"{self.num_seeds - self.seeds_at_end} stop early")
        return f"{text} ({', '.join(notes)})" if notes else text


def expand_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories as given, with any other directory replaced by the runs below it.

    A run directory holds ``metrics.jsonl``; ``runs/`` or a sweep directory holds run
    directories, at any depth (``runs/sweep-x-<time>/<run>/``). Anything else is a
    :class:`ConfigError`.
    """
    out: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if (path / METRICS_FILE).is_file():
            found = [path]
        elif path.is_dir():
            found = sorted(p.parent for p in path.rglob(METRICS_FILE))
        else:
            found = []
        if not found:
            raise ConfigError(
                f"{str(path)!r} is not a run directory (no {METRICS_FILE}) "
                "nor a directory holding runs"
            )
        out.extend(p for p in found if p not in out)
    return out


def load_runs(run_dirs: Sequence[str | Path]) -> list[Run]:
    """Read run directories; a clear :class:`ConfigError` for one that is not a run."""
    runs = []
    for run_dir in run_dirs:
        path = Path(run_dir)
        metrics = path / METRICS_FILE
        if not metrics.is_file():
            raise ConfigError(f"{str(path)!r} is not a run directory: no {METRICS_FILE}")
        runs.append(Run(path, read_config(path), read_metrics(metrics), sweep_name(path)))
    return runs


def default_metric(runs: Sequence[Run]) -> str:
    tasks = {r.config.task for r in runs}
    if len(tasks) != 1:
        raise ConfigError("cannot plot control and prediction runs on one panel")
    return PREDICTION_METRIC if tasks == {"prediction"} else CONTROL_METRIC


def panels(runs: Sequence[Run]) -> list[list[Run]]:
    """The runs split by env (id, kwargs) and task, in order of first appearance."""
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault(run.env_key, []).append(run)
    return list(groups.values())


def _by_label_and_seed(runs: Sequence[Run]) -> dict[str, dict[int, list[Run]]]:
    groups: dict[str, dict[int, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        groups[run.label][run.seed].append(run)
    return groups


def seed_curves(runs: Sequence[Run], metric: str, points: int = 200) -> list[Curve]:
    """One curve per label: mean and s.e. over distinct seeds on one env-step grid.

    The grid spans every run that has ``metric``. A run contributes from its first
    to its last record (linear interpolation in between, nothing outside), runs of
    one seed are averaged into one value per step, and each grid step averages the
    seeds that reach it: a run stopped early shortens no other curve.
    """
    if len({run.env_key for run in runs}) > 1:
        raise ConfigError("seed_curves: runs of different envs; split them with panels()")
    series_of = {id(run): run.series(metric) for run in runs}
    spans = [(s[0], s[-1]) for s, _ in series_of.values() if s.size]
    if not spans:
        return []
    first, last = min(a for a, _ in spans), max(b for _, b in spans)
    grid = np.linspace(first, last, points) if last > first else np.array([last])
    curves = []
    for label, seeds in _by_label_and_seed(runs).items():
        per_seed, num_runs = [], 0
        for members in seeds.values():
            rows = []
            for run in members:
                steps, values = series_of[id(run)]
                if steps.size:
                    inside = (grid >= steps[0]) & (grid <= steps[-1])
                    rows.append(np.where(inside, np.interp(grid, steps, values), np.nan))
            if rows:
                num_runs += len(rows)
                per_seed.append(_nanmean(np.stack(rows)))
        if not per_seed:
            continue
        stacked = np.stack(per_seed)  # [seeds, G]
        count = np.isfinite(stacked).sum(axis=0)
        mean = _nanmean(stacked)
        stderr = np.zeros(len(grid))
        several = count > 1
        if several.any():
            std = np.nanstd(stacked[:, several], axis=0, ddof=1)
            stderr[several] = std / np.sqrt(count[several])
        reached = np.flatnonzero(count)
        seeds_at_end = int(count[reached[-1]]) if reached.size else 0
        curves.append(Curve(label, grid, mean, stderr, len(per_seed), num_runs, seeds_at_end))
    return sorted(curves, key=lambda c: c.label)


def _nanmean(stacked: np.ndarray) -> np.ndarray:
    """Column means ignoring NaN; NaN where a column has no value (no warning)."""
    count = np.isfinite(stacked).sum(axis=0)
    total = np.where(np.isfinite(stacked), stacked, 0.0).sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def final_values(runs: Sequence[Run], metric: str, fraction: float = 0.1) -> dict[str, tuple]:
    """Per label: (mean, s.e., seeds) over distinct seeds of their means over the last records.

    Each run contributes the mean of its last ``fraction`` of records; runs of one
    seed are averaged first, so a seed counts once.
    """
    out = {}
    for label, seeds in sorted(_by_label_and_seed(runs).items()):
        finals = []
        for members in seeds.values():
            tails = []
            for run in members:
                _, values = run.series(metric)
                if values.size:
                    tails.append(float(values[-max(1, round(fraction * values.size)) :].mean()))
            if tails:
                finals.append(float(np.mean(tails)))
        if finals:
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
    fmt: str | None = None,
    dpi: float = 110,
) -> Path:
    """Write a figure of mean +- s.e. over seeds, one panel per env; returns its path.

    ``fmt``: png, svg or pdf (default: the suffix of ``out``, else png).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    fmt = _figure_format(out, fmt)
    if not out.suffix:
        out = out.with_suffix(f".{fmt}")
    runs = load_runs(run_dirs)
    if not runs:
        raise ConfigError("plot needs at least one run directory")
    groups = panels(runs)
    columns = min(len(groups), 3)
    rows = -(-len(groups) // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(6.4 * columns, 4.2 * rows + 0.4), squeeze=False, dpi=dpi
    )
    for ax, group in zip(axes.flat, groups, strict=False):
        _draw_panel(ax, group, metric or default_metric(group))
    for ax in axes.flat[len(groups) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.text(
        0.5,
        0.005,
        "line: mean over seeds; band: ± 1 standard error over seeds (N in the legend)",
        ha="center",
        va="bottom",
        fontsize=8,
        color="0.3",
    )
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format=fmt, dpi=dpi)
    plt.close(fig)
    return out


def _figure_format(out: Path, fmt: str | None) -> str:
    suffix = out.suffix.lstrip(".").lower()
    if fmt is None:
        fmt = suffix if suffix in FORMATS else "png"
    if fmt not in FORMATS:
        raise ConfigError(f"figure format {fmt!r}: use one of {', '.join(FORMATS)}")
    if suffix and suffix != fmt:
        raise ConfigError(f"{str(out)!r} does not end in .{fmt} (the figure format)")
    return fmt


def _draw_panel(ax: Any, runs: Sequence[Run], metric: str) -> None:
    curves = seed_curves(runs, metric)
    if not curves:
        raise ConfigError(f"no run of {runs[0].env_title} has the metric {metric!r}")
    max_steps = max(c.steps[-1] for c in curves)
    for k, step in enumerate(reward_switch_steps(runs, max_steps)):
        ax.axvline(step, color="0.85", lw=0.6, zorder=0, label="reward switch" if k == 0 else None)
    for curve in curves:
        (line,) = ax.plot(curve.steps, curve.mean, lw=1.6, label=curve.legend)
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
    ax.set_title(runs[0].env_title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
