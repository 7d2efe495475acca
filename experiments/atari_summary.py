"""Summarise Atari runs: each game's final score, its human-normalised score, and the median
and mean over games, per algorithm; as JSON, and optionally the median/mean figure.

Reads every run directory under the paths given (``config.json`` and ``metrics.jsonl``, as
``impala-frodo train`` writes them); non-Atari runs are ignored. Scores are the unclipped
episode scores (``episode/return``); human-normalised scores use the standard random and
human reference scores (:mod:`impala_frodo.envs.atari_scores`).

    python experiments/atari_summary.py runs/atari-pong --plot docs/figures/atari-hns.png
"""

from __future__ import annotations

import argparse
import json

from impala_frodo.reports.atari_summary import atari_summary, plot_hns
from impala_frodo.reports.plotting import expand_run_dirs, load_runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", help="run directories, or directories of runs")
    parser.add_argument("--plot", metavar="OUT.png", help="median and mean HNS over env steps")
    args = parser.parse_args()
    runs = load_runs(expand_run_dirs(args.run_dirs))
    print(json.dumps({"atari_summary": atari_summary(runs)}, indent=2))
    if args.plot:
        written = plot_hns(runs, args.plot)
        print(f"wrote {written}" if written else "no Atari runs with scores: nothing plotted")


if __name__ == "__main__":
    main()
