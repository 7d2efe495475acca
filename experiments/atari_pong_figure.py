"""The Pong learning curves of docs/results-atari.md, with the reference scores beside them.

Plots each run's ``episode/return`` (the unclipped score, mean over the episodes that ended
in each log interval) and ``episode/return_window`` against env steps, one colour per
algorithm, with horizontal lines at the random agent's and the human tester's scores
(:mod:`impala_frodo.envs.atari_scores`) and at IMPALA's published score after 200M frames
(:data:`IMPALA_PUBLISHED_PONG`).

    python experiments/atari_pong_figure.py runs/pong --out docs/figures/atari-pong.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from impala_frodo.envs.atari_scores import REFERENCE_SCORES
from impala_frodo.reports.atari_summary import algorithm_label
from impala_frodo.reports.plotting import expand_run_dirs, load_runs

#: IMPALA's Pong score at 200M frames: 21, the game's maximum (every point won), as the deep
#: IMPALA agent reaches in Espeholt et al. 2018's per-game tables (to within a few hundredths).
IMPALA_PUBLISHED_PONG = 21.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    runs = load_runs(expand_run_dirs(args.run_dirs))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {"IMPALA (V-trace target)": "tab:blue", "FRODO": "tab:orange"}
    random, human = REFERENCE_SCORES["pong"]
    for ax, zoom in zip(axes, (False, True), strict=True):
        for run in runs:
            label = algorithm_label(run)
            colour = colours.get(label)
            steps, values = run.series("episode/return")
            if steps.size:
                ax.plot(steps, values, ".", color=colour, alpha=0.35, ms=4)
            steps, window = run.series("episode/return_window")
            if steps.size:
                ax.plot(steps, window, "-", color=colour, label=f"{label}, last 100 episodes")
        ax.axhline(random, color="tab:red", ls=":", lw=1, label=f"random {random:g}")
        if not zoom:
            ax.axhline(IMPALA_PUBLISHED_PONG, color="k", ls="--", lw=1, label="IMPALA, 200M frames")
            ax.axhline(human, color="tab:green", ls=":", lw=1, label=f"human {human:g}")
            ax.set_ylim(-22, 22)
        else:
            ax.set_ylim(-21.3, -16.5)
            ax.set_title("the same, zoomed (dots: each log interval's episodes)", fontsize=9)
        ax.set_xlabel("env steps (agent steps; frames = 4 x)")
        ax.set_ylabel("Pong score (unclipped)")
        ax.legend(fontsize=7, loc="center right" if not zoom else "upper left")
    axes[0].set_title("Pong, Ray actor-learner, 2 actors x 8 envs, 2 shared cores", fontsize=9)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
