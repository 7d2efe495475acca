"""Summarise MinAtar runs (IMPALA against FRODO) from their run directories, as markdown.

Reads every run directory under LOGDIR (``config.json`` and ``metrics.jsonl``, as
``impala-frodo train`` writes them), groups them by game and algorithm, and prints per
game and algorithm:

- a curve: the mean episode return in each fifth of the budget (each log record's mean over
  the episodes that ended since the last one, averaged over the records in the bin), mean
  over seeds;
- early: that mean over the first third of the budget; late: the mean return of the last
  ``run.returns_window`` episodes at the end of the run; both mean +- s.e. over seeds;
- for FRODO, how far its learned target g is from the canonical V-trace return v_s: the RMS
  of g - v_s and the mean of g (``meta/target_mean``) in the last log record;
- FRODO / IMPALA: the ratio of the seed means, early and late, and its median over games
  (the FRODO paper's Atari claim, in miniature);
- at a budget of 1M or 5M env steps, the late returns beside MinAtar's published DQN and
  actor-critic scores at the same step count (:data:`PUBLISHED`).

    python experiments/minatar_summary.py runs/minatar-short
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np

from impala_frodo.records.runlog import read_config, read_metrics
from impala_frodo.reports.analysis import curve, mean_se

BINS = 5

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


def summarise(run_dir: Path) -> dict | None:
    """One run's figures; ``None`` for a run that has not reached its budget."""
    cfg = read_config(run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")
    if not records or records[-1]["env_steps"] < cfg.run.total_env_steps:
        return None
    budget = cfg.run.total_env_steps
    points = [(r["env_steps"], r["episode/return"]) for r in records if "episode/return" in r]
    early = [v for s, v in points if s <= budget / 3]
    return {
        "game": cfg.env.id.removeprefix("MinAtar/").split("-")[0],
        "algo": cfg.algo,
        "seed": cfg.run.seed,
        "budget": budget,
        "env_steps": records[-1]["env_steps"],
        "curve": curve(points, budget, BINS),
        "early": float(np.mean(early)) if early else float("nan"),
        "late": records[-1]["episode/return_window"],
        "target_rms": records[-1].get("meta/target_minus_return_rms", float("nan")),
        "target_mean": records[-1].get("meta/target_mean", float("nan")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir", type=Path)
    args = parser.parse_args()
    runs = [summarise(m.parent) for m in sorted(args.logdir.rglob("metrics.jsonl"))]
    runs = [r for r in runs if r is not None]
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for run in runs:
        groups[(run["game"], run["algo"])].append(run)

    print(
        "| game | algo | seeds | env steps | return by fifth of the budget | early | late "
        "| RMS(g - v_s) / mean g, last update |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (game, algo), group in sorted(groups.items()):
        curves = np.array([[np.nan if v is None else v for v in g["curve"]] for g in group])
        fifths = " / ".join(f"{v:.2f}" for v in np.nanmean(curves, axis=0))
        steps = min(g["env_steps"] for g in group)
        print(
            f"| {game} | {algo} | {len(group)} | {steps:,} | {fifths} | "
            f"{mean_se([g['early'] for g in group])} | {mean_se([g['late'] for g in group])} | "
            + (
                f"{np.mean([g['target_rms'] for g in group]):.3f} / "
                f"{np.mean([g['target_mean'] for g in group]):.2f} |"
                if algo != "impala"
                else "- |"
            )
        )

    print("\n| game | FRODO / IMPALA early | FRODO / IMPALA late |")
    print("|---|---|---|")
    ratios: dict[str, list[float]] = {"early": [], "late": []}
    for game in sorted({g for g, _ in groups}):
        if (game, "frodo") not in groups or (game, "impala") not in groups:
            continue
        cells = []
        for phase in ("early", "late"):
            frodo = np.mean([g[phase] for g in groups[(game, "frodo")]])
            impala = np.mean([g[phase] for g in groups[(game, "impala")]])
            ratios[phase].append(frodo / impala)
            cells.append(f"{frodo / impala:.2f}")
        print(f"| {game} | {' | '.join(cells)} |")
    if ratios["early"]:
        medians = [statistics.median(ratios[p]) for p in ("early", "late")]
        print(f"| median over games | {medians[0]:.2f} | {medians[1]:.2f} |")
    print_published(groups)


def print_published(groups: dict[tuple[str, str], list[dict]]) -> None:
    """Late returns beside MinAtar's published scores, where the budget has a reading."""
    rows = []
    for game in sorted({g for g, _ in groups}):
        budgets = {
            run["budget"] for algo in ("impala", "frodo") for run in groups.get((game, algo), [])
        }
        for budget in sorted(budgets & set(PUBLISHED.get(game, {}))):
            ours = []
            for algo in ("impala", "frodo"):
                lates = [r["late"] for r in groups.get((game, algo), []) if r["budget"] == budget]
                ours.append(mean_se(lates) if lates else "-")
            published = " | ".join(f"{v:g}" for v in PUBLISHED[game][budget])
            rows.append(f"| {game} | {budget:,} | {ours[0]} | {ours[1]} | {published} |")
    if rows:
        print(
            "\n| game | env steps | IMPALA | FRODO | published DQN | published AC(0.8) "
            "| published AC(0) |"
        )
        print("|---|---|---|---|---|---|---|")
        print("\n".join(rows))


if __name__ == "__main__":
    main()
