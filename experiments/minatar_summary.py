"""Summarise MinAtar runs (IMPALA against FRODO's arms) from their run directories, as markdown.

Reads every run directory under LOGDIR (``config.json`` and ``metrics.jsonl``, as
``impala-frodo train`` writes them), groups them by game, arm and budget, and prints per
group:

- the arm (:func:`arm_label`): the algorithm, with FRODO's consistency term when it has one
  (``frodo+self w=0.1``, ``frodo+canonical w=1``) and any other meta setting that differs
  from the defaults (``frodo, meta.target=residual-centred``), so the arms of one game are
  never averaged together;
- a curve: the mean episode return in each fifth of the budget (each log record's mean over
  the episodes that ended since the last one, averaged over the records in the bin), mean
  over seeds;
- early, middle and late: that mean over the first, second and last third of the budget;
  and the mean return of the last ``run.returns_window`` episodes at the end of the run
  (100 in the presets: MinAtar's own measure); all mean +- s.e. over seeds;
- for FRODO, how far its learned target g is from the canonical V-trace return v_s: the RMS
  of g - v_s and the mean of g (``meta/target_mean``) in the last log record;
- each FRODO arm / IMPALA: the ratio of the seed means in each third and over the last
  episodes, per game and its median over games (the FRODO paper's Atari claim, in
  miniature);
- at a budget of 1M or 5M env steps, the last episodes' returns beside MinAtar's published
  DQN and actor-critic scores at the same step count (:data:`PUBLISHED`).

    python experiments/minatar_summary.py runs/minatar-1m
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from impala_frodo.config.describe import describe
from impala_frodo.config.schema import Config
from impala_frodo.records.runlog import read_config, read_metrics
from impala_frodo.reports.analysis import curve, mean_se

BINS = 5
#: The summary's phases: the thirds of the budget, then the last episodes.
PHASES = ("early", "middle", "late", "last")
BASELINE = "impala"

#: MinAtar's published learning curves (Young & Tian 2019; the figure ``img/learning_curves.gif``
#: in github.com/kenjyoung/MinAtar, v1.0.x: 30 seeds, sticky actions 0.1, all 6 actions, the
#: return averaged over the last 100 episodes against frames = env steps). There is no table of
#: numbers: these are read off the figure by eye at 1M and 5M frames, good to about 5 % of each
#: panel's y-range. Their Seaquest curves predate the oxygen-bar fix of v1.0.11 (we run 1.0.15).
#: Each entry: ``{steps: (DQN, AC(lambda=0.8), AC(lambda=0))}``.
PUBLISHED: dict[str, dict[int, tuple[float, float, float]]] = {
    "Asterix": {1_000_000: (5.0, 0.7, 0.6), 5_000_000: (17.0, 19.0, 20.5)},
    "Breakout": {1_000_000: (9.3, 9.7, 7.3), 5_000_000: (10.0, 17.5, 15.2)},
    "Freeway": {1_000_000: (48.0, 0.2, 0.2), 5_000_000: (50.0, 47.5, 47.0)},
    "Seaquest": {1_000_000: (0.9, 0.8, 0.7), 5_000_000: (20.0, 16.0, 7.3)},
    "SpaceInvaders": {1_000_000: (30.0, 45.0, 45.0), 5_000_000: (43.0, 185.0, 145.0)},
}


def arm_label(cfg: Config) -> str:
    """The arm a run belongs to: ``impala``; ``frodo``; ``frodo+self w=0.1`` (a consistency
    term, its form and weight); other meta settings off their defaults after a comma
    (``frodo, meta.lr=1e-12``). The MinAtar presets keep meta's defaults, so an arm made
    with ``--set meta.*`` (or a preset that sets it, ``minatar-<game>-frodo-self``) is told
    apart from the plain one whatever preset it started from."""
    if not cfg.algo.startswith("frodo"):
        return cfg.algo
    meta, default = cfg.to_dict()["meta"], Config().to_dict()["meta"]
    label = cfg.algo
    if cfg.meta.consistency_cost > 0:
        label += f"+{cfg.meta.consistency_form} w={cfg.meta.consistency_cost:g}"
    others = {
        f"meta.{k}": v
        for k, v in meta.items()
        if v != default[k] and k not in ("consistency_cost", "consistency_form")
    }
    return f"{label}, {describe(others)}" if others else label


def summarise(run_dir: Path) -> dict | None:
    """One run's figures; ``None`` for a run that has not reached its budget."""
    cfg = read_config(run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")
    if not records or records[-1]["env_steps"] < cfg.run.total_env_steps:
        return None
    budget = cfg.run.total_env_steps
    points = [
        (r["env_steps"], r["episode/return"])
        for r in records
        if r.get("episode/return") is not None
    ]
    thirds = [math.nan if v is None else v for v in curve(points, budget, 3)]
    last = records[-1].get("episode/return_window")
    return {
        "game": cfg.env.id.removeprefix("MinAtar/").split("-")[0],
        "algo": cfg.algo,
        "arm": arm_label(cfg),
        "seed": cfg.run.seed,
        "budget": budget,
        "window": cfg.run.returns_window,
        "env_steps": records[-1]["env_steps"],
        "curve": curve(points, budget, BINS),
        **dict(zip(PHASES, [*thirds, math.nan if last is None else last], strict=True)),
        "target_rms": records[-1].get("meta/target_minus_return_rms", math.nan),
        "target_mean": records[-1].get("meta/target_mean", math.nan),
    }


Groups = dict[tuple[str, str, int], list[dict]]


def group_runs(runs: Sequence[dict]) -> Groups:
    """``{(game, arm, budget): [run, ...]}``: the seeds of one arm on one game and budget."""
    groups: Groups = defaultdict(list)
    for run in runs:
        groups[(run["game"], run["arm"], run["budget"])].append(run)
    return dict(sorted(groups.items()))


def ratios(groups: Groups) -> dict[tuple[str, int], dict[str, dict[str, float]]]:
    """``{(arm, budget): {game: {phase: arm's seed mean / IMPALA's}}}`` for every arm but
    IMPALA's, on the games and budgets that have IMPALA runs too."""
    out: dict[tuple[str, int], dict[str, dict[str, float]]] = defaultdict(dict)
    for (game, arm, budget), group in groups.items():
        baseline = groups.get((game, BASELINE, budget))
        if arm == BASELINE or not baseline:
            continue
        row = {}
        for phase in PHASES:
            ours, theirs = (np.mean([r[phase] for r in g]) for g in (group, baseline))
            row[phase] = float(ours / theirs) if theirs != 0 else math.nan
        out[(arm, budget)][game] = row
    return dict(sorted(out.items()))


def _cell(value: float) -> str:
    return f"{value:.2f}"


def report(runs: Sequence[dict]) -> list[str]:
    """The markdown tables: returns per arm, ratios to IMPALA, the published scores."""
    groups = group_runs(runs)
    windows = {r["window"] for r in runs}
    last = f"last {windows.pop()} episodes" if len(windows) == 1 else "last window of episodes"
    lines = [
        "| game | arm | seeds | env steps | return by fifth of the budget | early (first third) "
        f"| middle (second third) | late (last third) | {last} "
        "| RMS(g - v_s) / mean g, last update |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (game, arm, _), group in groups.items():
        curves = np.array([[np.nan if v is None else v for v in g["curve"]] for g in group])
        fifths = " / ".join(f"{v:.2f}" for v in np.nanmean(curves, axis=0))
        steps = min(g["env_steps"] for g in group)
        phases = " | ".join(mean_se([g[p] for g in group]) for p in PHASES)
        target = (
            f"{np.mean([g['target_rms'] for g in group]):.3f} / "
            f"{np.mean([g['target_mean'] for g in group]):.2f}"
            if group[0]["algo"] != BASELINE
            else "-"
        )
        lines.append(
            f"| {game} | {arm} | {len(group)} | {steps:,} | {fifths} | {phases} | {target} |"
        )
    return lines + ratio_tables(groups, last) + published_rows(groups)


def ratio_tables(groups: Groups, last: str) -> list[str]:
    """A table per FRODO arm (and budget): its ratio to IMPALA by game in each phase, and the
    median over games (over those where IMPALA's mean is not 0)."""
    lines: list[str] = []
    for (arm, budget), by_game in ratios(groups).items():
        lines += [
            "",
            f"{arm} / IMPALA at {budget:,} env steps, the ratio of the seed means:",
            "",
            f"| game | early (first third) | middle (second third) | late (last third) | {last} |",
            "|---|---|---|---|---|",
        ]
        for game, row in by_game.items():
            lines.append(f"| {game} | " + " | ".join(_cell(row[p]) for p in PHASES) + " |")
        medians = []
        for phase in PHASES:
            finite = [row[phase] for row in by_game.values() if math.isfinite(row[phase])]
            medians.append(statistics.median(finite) if finite else math.nan)
        lines.append("| median over games | " + " | ".join(map(_cell, medians)) + " |")
    return lines


def published_rows(groups: Groups) -> list[str]:
    """The last episodes' returns beside MinAtar's published scores, where the budget has a
    reading."""
    rows = []
    for (game, arm, budget), group in groups.items():
        if budget in PUBLISHED.get(game, {}):
            published = " | ".join(f"{v:g}" for v in PUBLISHED[game][budget])
            ours = mean_se([r["last"] for r in group])
            rows.append(f"| {game} | {budget:,} | {arm} | {ours} | {published} |")
    if not rows:
        return []
    return [
        "",
        "| game | env steps | arm | ours | published DQN | published AC(0.8) | published AC(0) |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir", type=Path)
    args = parser.parse_args()
    runs = [summarise(m.parent) for m in sorted(args.logdir.rglob("metrics.jsonl"))]
    print("\n".join(report([r for r in runs if r is not None])))


if __name__ == "__main__":
    main()
