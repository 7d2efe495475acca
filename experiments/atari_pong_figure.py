"""The Pong learning curves of docs/results-atari.md, with the reference scores beside them.

Plots each run's ``episode/return`` (the unclipped score, mean over the episodes that ended
in each log interval) and ``episode/return_window`` against env steps, one colour per
algorithm, with horizontal lines at the random agent's and the human tester's scores
(:mod:`impala_frodo.atari_scores`) and at IMPALA's published score after 200M frames
(:data:`IMPALA_PUBLISHED_PONG`).

    python experiments/atari_pong_figure.py runs/pong --out docs/figures/atari-pong.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from impala_frodo.atari_scores import REFERENCE_SCORES
from impala_frodo.plotting import expand_run_dirs, load_runs

#: IMPALA's Pong score at 200M frames: 21, the game's maximum (every point won), as the deep
#: IMPALA agent reaches in Espeholt et al. 2018's per-game tables (to within a few hundredths).
IMPALA_PUBLISHED_PONG = 21.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    runs = load_runs(expand_run_dirs(args.run_dirs))
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    colours = {"IMPALA (V-trace target)": "tab:blue", "FRODO": "tab:orange"}
    for run in runs:
        colour = colours.get(run.label)
        steps, values = run.series("episode/return")
        if steps.size:
            ax.plot(steps, values, ".", color=colour, alpha=0.35, ms=4)
        steps, window = run.series("episode/return_window")
        if steps.size:
            ax.plot(steps, window, "-", color=colour, label=f"{run.label}, mean of last 100")
    random, human = REFERENCE_SCORES["pong"]
    ax.axhline(
        IMPALA_PUBLISHED_PONG, color="k", ls="--", lw=1, label="IMPALA published, 200M frames"
    )
    ax.axhline(human, color="tab:green", ls=":", lw=1, label=f"human {human:g}")
    ax.axhline(random, color="tab:red", ls=":", lw=1, label=f"random {random:g}")
    ax.set_xlabel("env steps (agent steps; frames = 4 x)")
    ax.set_ylabel("Pong score (unclipped)")
    ax.set_ylim(-22, 22)
    ax.legend(fontsize=7, loc="center right")
    ax.set_title("Pong through the Ray actor-learner, 2 actors x 8 envs, 2 shared CPU cores")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
