"""Atari runs summarised as Atari users expect: raw scores and human-normalised scores.

``episode/return`` of an Atari run is the unclipped game score (the learner sees clipped
rewards; :class:`~impala_frodo.envs.atari.BatchedAtari`). Per game and algorithm this module
takes the seed-mean score curve (:func:`~impala_frodo.reports.plotting.seed_curves`), turns it into
human-normalised scores (:mod:`impala_frodo.envs.atari_scores`), and reports the median and the
mean over games, against env steps (frames = 4 x agent steps):

- :func:`atari_summary`: per algorithm, each game's final score (the mean score of the last
  ``run.returns_window`` episodes at the end of each run, averaged over seeds) and its
  human-normalised score, and their median and mean over games;
- :func:`plot_hns`: two panels, the median and the mean human-normalised score over games
  against env steps, one curve per algorithm (over the step range every game reached).

``impala-frodo plot`` calls :func:`report_atari` after its own figure: for Atari runs it
prints the summary and writes ``<out>-hns.<ext>`` beside the figure; other runs are left
alone.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from impala_frodo.config.describe import describe, distinct_settings
from impala_frodo.envs.atari import atari_game, is_atari_id
from impala_frodo.envs.atari_scores import human_normalised
from impala_frodo.reports.plotting import CONTROL_METRIC, Run, final_values, load_runs, seed_curves
from impala_frodo.reports.runs import ALGO_NAMES

#: The mean return of the last ``run.returns_window`` episodes, in each log record.
WINDOW_METRIC = "episode/return_window"
#: Points on the common env-step grid of the median/mean curves.
GRID_POINTS = 100


def atari_runs(runs: Sequence[Run]) -> dict[str, dict[str, list[Run]]]:
    """``{algorithm label: {game: runs}}`` for the runs on Atari games (others dropped)."""
    out: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if is_atari_id(run.config.env.id):
            out[algorithm_label(run)][atari_game(run.config.env.id)].append(run)
    return {label: dict(games) for label, games in out.items()}


def algorithm_label(run: Run) -> str:
    """The algorithm across games: its name, and the settings that differ from its
    preset's (a game's preset names the game, so it is not part of the label)."""
    name = ALGO_NAMES[(run.config.algo, run.config.task)]
    settings = describe(distinct_settings(run.config))
    return f"{name}, {settings}" if settings else name


def atari_summary(runs: Sequence[Run]) -> dict[str, Any]:
    """Per algorithm: each game's final raw score and human-normalised score (HNS), and the
    median and mean HNS over its games."""
    summary: dict[str, Any] = {}
    for label, games in sorted(atari_runs(runs).items()):
        per_game = {}
        for game, members in sorted(games.items()):
            # The score: the mean of the last run.returns_window episodes at the run's end
            # (the usual "last 100 episodes"); runs without it, the last 10 % of records.
            finals = final_values(members, WINDOW_METRIC, fraction=0.0)
            if not finals:
                finals = final_values(members, CONTROL_METRIC)
            if not finals:
                continue  # no episode ended yet
            score, se, seeds = next(iter(finals.values()))  # the game's runs: one setting
            per_game[game] = {
                "score": round(score, 2),
                "score_se": round(se, 2),
                "seeds": seeds,
                "hns": round(human_normalised(game, score), 4),
                "env_steps": max(int(r.records[-1]["env_steps"]) for r in members if r.records),
            }
        values = [g["hns"] for g in per_game.values()]
        summary[label] = {
            "games": per_game,
            "median_hns": round(statistics.median(values), 4) if values else None,
            "mean_hns": round(statistics.fmean(values), 4) if values else None,
        }
    return summary


def hns_curves(runs: Sequence[Run]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """Per algorithm: ``(env steps [G], median HNS [G], mean HNS [G], games)`` over the
    steps every game's curve covers."""
    out = {}
    for label, games in sorted(atari_runs(runs).items()):
        curves = {}
        for game, members in games.items():
            found = seed_curves(members, CONTROL_METRIC)
            if found:
                curves[game] = found[0]
        if not curves:
            continue
        start = max(float(np.nanmin(c.steps[np.isfinite(c.mean)])) for c in curves.values())
        stop = min(float(np.nanmax(c.steps[np.isfinite(c.mean)])) for c in curves.values())
        grid = np.linspace(start, stop, GRID_POINTS) if stop > start else np.array([stop])
        rows = []
        for game, c in sorted(curves.items()):
            ok = np.isfinite(c.mean)
            scores = np.interp(grid, c.steps[ok], c.mean[ok])
            rows.append([human_normalised(game, float(s)) for s in scores])
        normalised = np.asarray(rows)  # [games, G]
        out[label] = (grid, np.median(normalised, axis=0), normalised.mean(axis=0), len(curves))
    return out


def plot_hns(runs: Sequence[Run], out: str | Path, dpi: float = 110.0) -> Path | None:
    """Median and mean HNS over games against env steps, one curve per algorithm; None
    (nothing written) without Atari runs that have scores."""
    curves = hns_curves(runs)
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, (steps, median, mean, games) in curves.items():
        name = f"{label} ({games} game{'s' if games != 1 else ''})"
        axes[0].plot(steps, median, label=name)
        axes[1].plot(steps, mean, label=name)
    for ax, what in zip(axes, ("median", "mean"), strict=True):
        ax.set_title(f"{what} human-normalised score over games")
        ax.set_xlabel("env steps (agent steps; frames = 4 x)")
        ax.axhline(0.0, color="0.6", lw=0.8, ls=":")
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def hns_figure_path(out: str | Path) -> Path:
    """``fig.png`` -> ``fig-hns.png``."""
    out = Path(out)
    return out.with_name(f"{out.stem}-hns{out.suffix or '.png'}")


def report_atari(run_dirs: Sequence[str | Path], out: str | Path) -> list[str]:
    """For Atari runs among ``run_dirs``: the summary lines (printed by the caller) and the
    HNS figure beside ``out``; nothing for other runs."""
    runs = load_runs(run_dirs)
    summary = atari_summary(runs)
    lines = []
    for label, row in summary.items():
        if row["median_hns"] is None:
            continue
        games = ", ".join(
            f"{g} {v['score']:g} (HNS {v['hns']:.3f})" for g, v in row["games"].items()
        )
        lines.append(
            f"{label}: median human-normalised score {row['median_hns']:.3f}, mean "
            f"{row['mean_hns']:.3f} over {len(row['games'])} game(s): {games}"
        )
    if lines:
        written = plot_hns(runs, hns_figure_path(out))
        if written is not None:
            lines.append(f"wrote {written}")
    return lines
