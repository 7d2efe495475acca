"""Issue 10: a table of Catch sweeps made by ``impala-frodo sweep --distributed``.

Reads only the run directories (``config.json``, ``metrics.jsonl``), so it
works on any sweep, distributed or not; the numbers are at the records'
resolution (``run.log_every_updates`` updates, or ``run.log_every_s``):

- steps to 0.8: the first record at which ``episode/return_window`` (the mean
  return of the last ``run.returns_window`` = 500 episodes) is >= 0.8, once
  500 episodes have ended; the median is over the seeds that reach it;
- final return: the mean return of the episodes that ended in the records
  wholly inside the last 10 % of the budget (weighted by their episode counts);
- policy lag: each seed's mean ``perf/policy_lag`` over its records, then the
  mean over seeds (with the seeds' range);
- wall time: the learner's wall time per seed (``wall_time_s`` of its last record).

    python experiments/distributed_summary.py NAME=SWEEP_DIR [NAME=SWEEP_DIR ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from impala_frodo.records.runlog import METRICS_FILE, read_metrics
from impala_frodo.reports.analysis import SOLVED_RETURN, mean_se, solved_cell


def run_summary(run_dir: Path) -> dict[str, Any]:
    config = json.loads((run_dir / "config.json").read_text())
    total, window = config["run"]["total_env_steps"], config["run"]["returns_window"]
    records = read_metrics(run_dir / METRICS_FILE)
    solved = next(
        (
            r["env_steps"]
            for r in records
            if r.get("progress/episodes", 0) >= window
            and r.get("episode/return_window", -np.inf) >= SOLVED_RETURN
        ),
        None,
    )
    returns, counts = [], []
    previous = 0
    for r in records:
        if previous >= 0.9 * total and r.get("episode/count"):
            returns.append(r["episode/return"])
            counts.append(r["episode/count"])
        previous = r["env_steps"]
    lags = [r["perf/policy_lag"] for r in records if r.get("perf/policy_lag") is not None]
    return {
        "seed": config["run"]["seed"],
        "steps_to_0.8": solved,
        "final_return": float(np.average(returns, weights=counts)) if counts else float("nan"),
        "policy_lag": float(np.mean(lags)) if lags else float("nan"),
        "wall_time_s": records[-1]["wall_time_s"],
        "env_steps": records[-1]["env_steps"],
    }


def row(name: str, sweep_dir: Path) -> str:
    runs = [run_summary(d) for d in sorted(sweep_dir.iterdir()) if (d / METRICS_FILE).is_file()]
    lags = [r["policy_lag"] for r in runs]
    walls = [r["wall_time_s"] for r in runs]
    return (
        f"| {name} | {solved_cell([r['steps_to_0.8'] for r in runs])} | "
        f"{mean_se([r['final_return'] for r in runs])} | "
        f"{np.mean(lags):.2f} ({min(lags):.2f}-{max(lags):.2f}) | "
        f"{np.mean(walls):.0f} s |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+", metavar="NAME=SWEEP_DIR")
    args = parser.parse_args(argv)
    columns = (
        "variant",
        "seeds reaching 0.8 (median step)",
        "final return",
        "policy lag, mean (seed range)",
        "learner wall time per seed",
    )
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|")
    for item in args.sweeps:
        name, _, path = item.rpartition("=")  # names may hold "="
        print(row(name, Path(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
