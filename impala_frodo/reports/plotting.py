"""Figures from run directories: mean and standard error over seeds against env steps.

Reads each run's ``config.json`` and ``metrics.jsonl`` (:mod:`impala_frodo.reports.runs`).
Runs are grouped into one panel per env (id and kwargs) and, in a panel, into one curve
per setting: runs whose configs differ only in bookkeeping (seed, budget, logging) are
seeds of one curve, named by what sets it apart (the preset, and the settings that differ
between the curves: :func:`~impala_frodo.reports.runs.label_runs`). A curve is the mean
over its distinct seeds (runs that share a seed are averaged first, so they count once)
with a band of +- 1 standard error over seeds, on a grid of env steps common to the
panel; a seed contributes only up to its last record, never extrapolated. A run without
the metric is set aside (:attr:`Panel.skipped`), not an error. For the random walk the
metric is the value RMSE and the reward switches are marked.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from impala_frodo.config.checks import ConfigError
from impala_frodo.reports.runs import (
    SWEEP_FILE,
    Run,
    expand_run_dirs,
    label_runs,
    load_runs,
    sweep_name,
)

CONTROL_METRIC = "episode/return"
PREDICTION_METRIC = "eval/value_rmse"
FORMATS = ("png", "svg", "pdf")
__all__ = [
    "SWEEP_FILE",
    "Run",
    "expand_run_dirs",
    "label_runs",
    "load_runs",
    "sweep_name",
]


@dataclass
class Curve:
    label: str
    steps: np.ndarray  # [G] grid of env steps, common to the curves of one panel
    mean: np.ndarray  # [G] mean over the seeds that reach each step (NaN where none)
    stderr: np.ndarray  # [G] standard error over those seeds (0 where only one)
    num_seeds: int  # distinct seeds
    num_runs: int  # runs (more than seeds when runs share a seed)
    seeds_at_end: int  # seeds that reach the curve's last step
    counts: np.ndarray | None = None  # [G] seeds that reach each step

    @property
    def legend(self) -> str:
        text = f"{self.label}: {self.num_seeds} seed{'s' if self.num_seeds != 1 else ''}"
        notes = []
        if self.num_runs > self.num_seeds:
            notes.append(f"{self.num_runs} runs")
        if self.seeds_at_end < self.num_seeds:
            notes.append(f"{self.num_seeds - self.seeds_at_end} stop early")
        return f"{text} ({', '.join(notes)})" if notes else text


def default_metric(runs: Sequence[Run]) -> str:
    tasks = {r.config.task for r in runs}
    if len(tasks) != 1:
        raise ConfigError("cannot plot control and prediction runs on one panel")
    return PREDICTION_METRIC if tasks == {"prediction"} else CONTROL_METRIC


def panels_by_env(runs: Sequence[Run]) -> list[list[Run]]:
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
        curves.append(
            Curve(label, grid, mean, stderr, len(per_seed), num_runs, seeds_at_end, count)
        )
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


@dataclass
class Panel:
    """One env's curves of a metric, and the runs of that env skipped for lacking it."""

    title: str
    metric: str
    runs: list[Run]
    curves: list[Curve]
    finals: dict[str, tuple[float, float, int]]
    skipped: list[Run] = field(default_factory=list)


@dataclass
class Comparison:
    """What :func:`compare_runs` wrote and found: the figure, the CSV, the panels."""

    figure: Path
    panels: list[Panel]
    csv: Path | None = None

    @property
    def skipped(self) -> list[Run]:
        return [run for panel in self.panels for run in panel.skipped]

    def lines(self) -> list[str]:
        """One line per curve: panel, label, seeds, final value (mean +- s.e. over seeds)."""
        out = []
        for panel in self.panels:
            for curve in panel.curves:
                mean, se, _ = panel.finals.get(curve.label, (np.nan, np.nan, 0))
                seeds = f"{curve.num_seeds} seed{'s' if curve.num_seeds != 1 else ''}"
                out.append(
                    f"{panel.title}: {curve.label}: {seeds}, final {panel.metric} "
                    f"{mean:.3f} +- {se:.3f}"
                )
        return out


def make_panels(runs: Sequence[Run], metric: str | None = None) -> list[Panel]:
    """One :class:`Panel` per env; runs without the metric are set aside, and an env none
    of whose runs has it gets no panel (:class:`ConfigError` if no env has one)."""
    panels = []
    for group in panels_by_env(runs):
        name = metric or default_metric(group)
        having = [run for run in group if run.series(name)[0].size]
        skipped = [run for run in group if run not in having]
        curves = seed_curves(having, name) if having else []
        finals = final_values(having, name) if having else {}
        panels.append(Panel(group[0].env_title, name, having, curves, finals, skipped))
    if not any(panel.curves for panel in panels):
        names = sorted({panel.metric for panel in panels})
        raise ConfigError(f"no run has the metric {' or '.join(map(repr, names))}")
    return panels


def compare_runs(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    metric: str | None = None,
    title: str | None = None,
    fmt: str | None = None,
    dpi: float = 110,
    write_csv: bool = False,
) -> Comparison:
    """Curves of the runs (mean +- s.e. over seeds, one panel per env, one curve per
    setting) into a figure, and with ``write_csv`` their data beside it (``<out>.csv``)."""
    out = Path(out)
    fmt = _figure_format(out, fmt)
    if not out.suffix:
        out = out.with_suffix(f".{fmt}")
    runs = load_runs(run_dirs)
    if not runs:
        raise ConfigError("plot needs at least one run directory")
    panels = make_panels(runs, metric)
    comparison = Comparison(_draw(panels, out, fmt, dpi, title), panels)
    if write_csv:
        comparison.csv = write_curves_csv(panels, out.with_suffix(".csv"))
    return comparison


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path, **options: Any) -> Path:
    """:func:`compare_runs`' figure alone; returns its path."""
    return compare_runs(run_dirs, out, **options).figure


def write_curves_csv(panels: Sequence[Panel], path: Path) -> Path:
    """The plotted data, a row per curve and grid step: panel, metric, curve, env_steps,
    mean, stderr, seeds (that reach the step)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["panel", "metric", "curve", "env_steps", "mean", "stderr", "seeds"])
        for panel in panels:
            for c in panel.curves:
                for step, mean, se, n in zip(c.steps, c.mean, c.stderr, c.counts, strict=True):
                    if n:
                        writer.writerow(
                            [
                                panel.title,
                                panel.metric,
                                c.label,
                                f"{step:.0f}",
                                f"{mean:.6g}",
                                f"{se:.6g}",
                                int(n),
                            ]
                        )
    return path


def _draw(panels: Sequence[Panel], out: Path, fmt: str, dpi: float, title: str | None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [panel for panel in panels if panel.curves]
    columns = min(len(shown), 3)
    rows = -(-len(shown) // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(6.4 * columns, 4.2 * rows + 0.4), squeeze=False, dpi=dpi
    )
    for ax, panel in zip(axes.flat, shown, strict=False):
        _draw_panel(ax, panel)
    for ax in axes.flat[len(shown) :]:
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


def _draw_panel(ax: Any, panel: Panel) -> None:
    curves, metric = panel.curves, panel.metric
    max_steps = max(c.steps[-1] for c in curves)
    for k, step in enumerate(reward_switch_steps(panel.runs, max_steps)):
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
    ax.set_title(panel.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


#: The old name of :func:`panels_by_env`.
panels = panels_by_env
