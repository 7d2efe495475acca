"""FRODO's price against its learning: one point per meta-gradient setting (issue 29's figure).

x: the setting's steady env steps/s as a ratio to IMPALA's, end to end, from
``bench_frodo_price.py --e2e`` (alternated runs in one process); y, one panel each, what
the setting learns (``experiments/frodo_targets.py`` and the MinAtar runs):

- Catch 11 x 6, the residual target: median env steps to a mean return of 0.8 (the seeds
  that reached it, their count beside the point);
- Catch 11 x 6, the plain target (the paper's): seeds reaching 0.8;
- the random walk (residual): RMS value error after reward switches, mean +- s.e.;
- MinAtar: FRODO's late-third return over IMPALA's, per game (the seed means' ratio).

A setting missing from an input is left out of that panel. ``docs/results-price.md`` has
the figure and its conditions.

    python experiments/price_figure.py --e2e runs/e2e-price.json --catch runs/price-catch.json \
        --randomwalk runs/price-rw.json --minatar runs/minatar-price --out docs/figures/price.png
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments.frodo_targets import PRICE_SETTINGS  # noqa: E402
from experiments.minatar_summary import arm_label, group_runs, ratios, summarise  # noqa: E402
from impala_frodo.config.presets import load_preset  # noqa: E402
from impala_frodo.config.schema import set_dotted  # noqa: E402

#: One panel: (title, y label, {setting: (y, (below, above) error bar or None, note)}).
Point = tuple[float, tuple[float, float] | None, str]
Panel = tuple[str, str, dict[str, Point]]


def e2e_ratios(path: Path) -> dict[str, float]:
    """``{setting: steady env steps/s over IMPALA's}`` from a ``bench_frodo_price`` JSON."""
    rates = json.loads(path.read_text())["e2e_catch_11x6"]["rates"]
    return {name: row["ratio_to_impala"] for name, row in rates.items() if name != "impala"}


def catch_panels(path: Path) -> list[Panel]:
    """The residual target's median steps to 0.8 and the plain target's seeds reaching it."""
    results = json.loads(path.read_text())
    residual, plain = {}, {}
    for name in PRICE_SETTINGS:
        seeds = results.get(f"residual-{name}")
        if seeds:
            steps = [s["steps_to_0.8"] for s in seeds if s["steps_to_0.8"] is not None]
            note = f"{len(steps)}/{len(seeds)}"
            if steps:
                low, mid, high = np.percentile(steps, [25, 50, 75])
                residual[name] = (float(mid), (float(mid - low), float(high - mid)), note)
        seeds = results.get(f"plain-{name}")
        if seeds:
            reached = sum(s["steps_to_0.8"] is not None for s in seeds)
            plain[name] = (float(reached), None, f"of {len(seeds)}")
    return [
        ("Catch 11 x 6, residual target", "env steps to return 0.8 (median, IQR)", residual),
        ("Catch 11 x 6, plain target (the paper's)", "seeds reaching return 0.8", plain),
    ]


def randomwalk_panel(paths: Sequence[Path]) -> Panel:
    """RMS value error after the reward switches, mean +- s.e. over seeds."""
    results: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        results |= json.loads(path.read_text())
    points = {}
    for name in PRICE_SETTINGS:
        seeds = results.get(f"residual-{name}")
        if seeds:
            errors = np.array([s["rmse_after_switch"] for s in seeds])
            se = float(errors.std(ddof=1) / np.sqrt(len(errors))) if len(errors) > 1 else 0.0
            points[name] = (float(errors.mean()), (se, se), f"{len(errors)} seeds")
    return ("random walk, residual target", "RMS error after switches", points)


def minatar_panel(logdir: Path, phase: str = "late") -> Panel:
    """FRODO's ``phase`` return over IMPALA's on each game, the settings told apart by
    their arm label (:func:`~experiments.minatar_summary.arm_label`)."""
    runs = [r for d in sorted(logdir.rglob("config.json")) if (r := summarise(d.parent))]
    table = ratios(group_runs(runs))
    preset = load_preset("minatar-breakout-frodo")
    points = {}
    for name, overrides in PRICE_SETTINGS.items():
        label = arm_label(set_dotted(preset, overrides))
        games = next((row for (arm, _), row in table.items() if arm == label), None)
        if games:
            values = [games[game][phase] for game in sorted(games)]
            mean = float(np.mean(values))
            points[name] = (mean, (mean - min(values), max(values) - mean), f"{len(values)} games")
    return (
        f"MinAtar, FRODO / IMPALA ({phase} third)",
        "return ratio (mean of games, bar: their range)",
        points,
    )


def draw(x: Mapping[str, float], panels: Sequence[Panel], out: Path, title: str) -> None:
    """One panel per learning measure, each setting a labelled point at its x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 4.2), squeeze=False)
    colours = {setting: f"C{i % 10}" for i, setting in enumerate(PRICE_SETTINGS)}
    handles = {}
    for ax, (name, ylabel, points) in zip(axes[0], panels, strict=True):
        for setting, (y, err, note) in points.items():
            if setting not in x or np.isnan(y):
                continue
            yerr = None if err is None else [[err[0]], [err[1]]]
            handles[setting] = ax.errorbar(
                x[setting], y, yerr=yerr, fmt="o", color=colours[setting], capsize=3
            )
            ax.annotate(
                note,
                (x[setting], y),
                fontsize=6,
                xytext=(4, 3),
                textcoords="offset points",
                color=colours[setting],
            )
        ax.axvline(0.8, color="grey", linestyle="--", linewidth=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("end-to-end env steps/s, ratio to IMPALA")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    order = [s for s in PRICE_SETTINGS if s in handles]
    fig.legend(
        [handles[s] for s in order],
        order,
        loc="lower center",
        ncol=len(order),
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(title + " (dashed: the 0.8x goal)", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--e2e", type=Path, required=True, help="bench_frodo_price --e2e JSON")
    parser.add_argument("--catch", type=Path, help="frodo_targets.py price-catch JSON")
    parser.add_argument(
        "--randomwalk",
        type=Path,
        nargs="*",
        default=[],
        help="frodo_targets.py price-randomwalk JSON(s)",
    )
    parser.add_argument("--minatar", type=Path, help="a directory of MinAtar run directories")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--title", default="FRODO's meta-gradient settings: price and learning")
    args = parser.parse_args(argv)
    panels = catch_panels(args.catch) if args.catch else []
    if args.randomwalk:
        panels.append(randomwalk_panel(args.randomwalk))
    if args.minatar:
        panels.append(minatar_panel(args.minatar))
    if not panels:
        parser.error("nothing to draw: give --catch, --randomwalk or --minatar")
    draw(e2e_ratios(args.e2e), panels, args.out, args.title)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
