"""Issue 9's experiments: FRODO's target forms against fixed-target baselines, over seeds.

Each variant is a preset plus ``--set``-style overrides; every seed runs the
synchronous trainer (``learner.training.sync.train_sync``) in its own process, two
at a time by default. Prints a markdown table and writes per-seed summaries
(and binned curves, for plots) to a JSON file.

    python experiments/frodo_targets.py catch --seeds 10 --out runs/issue9-catch.json
    python experiments/frodo_targets.py randomwalk --seeds 10 --out runs/issue9-rw.json
    python experiments/frodo_targets.py catch --only frodo-residual --set meta.lr=3e-3
    python experiments/frodo_targets.py plot runs/issue9-catch.json impala frodo-residual \
        --out docs/figures/catch.png
    python experiments/frodo_targets.py lag --seeds 5 --out runs/issue10-lag.json
    python experiments/frodo_targets.py plot-lag runs/issue10-lag.json docs/figures/lag.png
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from impala_frodo.config.presets import load_preset
from impala_frodo.config.schema import parse_value, set_dotted
from impala_frodo.reports.analysis import (
    SUMMARY_KEYS,
    catch_summary,
    curve,
    random_walk_summary,
    table_rows,
)
from impala_frodo.utils import write_text_atomic

# name -> (preset, overrides). The presets set the desynchronised Catch and T = 16.
SUITES: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "catch": {
        "impala": ("catch-impala", {}),
        "impala-td0": ("catch-td0", {}),
        "mgrl": ("catch-mgrl", {}),
        "frodo-plain": ("catch-frodo", {"meta.target": "plain"}),
        "frodo-plain-zero": ("catch-frodo", {"meta.target": "plain-zero-head"}),
        "frodo-residual": ("catch-frodo", {"meta.target": "residual"}),
        "frodo-residual-centred": ("catch-frodo", {"meta.target": "residual-centred"}),
        "frodo-plain-m1": (
            "catch-frodo",
            {"meta.target": "plain", "meta.num_inner_steps": 1},
        ),
        "frodo-plain-sliding": (
            "catch-frodo",
            {"meta.target": "plain", "meta.schedule": "sliding"},
        ),
        "frodo-plain-consistency": (
            "catch-frodo",
            {"meta.target": "plain", "meta.consistency_cost": 0.1},
        ),
        "frodo-ext": ("catch-frodo-ext", {}),
    },
    "randomwalk": {
        "nstep": ("randomwalk-td", {}),
        "td0": ("randomwalk-td", {"loss.lambda_": 0.0}),
        "frodo-plain": (
            "randomwalk-frodo",
            {"meta.target": "plain"},
        ),
        "frodo-residual": (
            "randomwalk-frodo",
            {"meta.target": "residual"},
        ),
        "frodo-residual-centred": (
            "randomwalk-frodo",
            {"meta.target": "residual-centred"},
        ),
        "frodo-ext": ("randomwalk-frodo-ext", {}),
    },
}


# FRODO's price (docs/results-price.md): the meta-gradient's cadence (meta.every), size
# (meta.batch_fraction) and the meta-network's width, on both target forms. Each names
# its cadence: "base" is a meta step in every window, whatever "auto" resolves to.
PRICE_SETTINGS: dict[str, dict[str, Any]] = {
    "base": {"meta.every": 1},
    "k2": {"meta.every": 2},
    "k4": {"meta.every": 4},
    "f0.25": {"meta.every": 1, "meta.batch_fraction": 0.25},
    "w16": {"meta.every": 1, "meta.hidden_size": 16},
    "k2-w16": {"meta.every": 2, "meta.hidden_size": 16},
    "k4-w16": {"meta.every": 4, "meta.hidden_size": 16},
    "k4-f0.25-w16": {"meta.every": 4, "meta.batch_fraction": 0.25, "meta.hidden_size": 16},
}
SUITES["price-catch"] = {
    f"{target}-{name}": ("catch-frodo", {"meta.target": target} | overrides)
    for target in ("residual", "plain")
    for name, overrides in PRICE_SETTINGS.items()
}
SUITES["price-catch"]["impala"] = ("catch-impala", {})
SUITES["price-randomwalk"] = {  # one env per batch: no column sample to take
    f"residual-{name}": ("randomwalk-frodo", {"meta.target": "residual"} | overrides)
    for name, overrides in PRICE_SETTINGS.items()
    if "meta.batch_fraction" not in overrides
}

# The consistency term's two forms (meta.consistency_form), at the same weight.
SUITES["consistency-catch"] = {
    f"{target}-{form}": (
        "catch-frodo",
        {"meta.target": target, "meta.consistency_cost": 0.1, "meta.consistency_form": form},
    )
    for target in ("residual", "plain")
    for form in ("canonical", "self")
}
SUITES["consistency-randomwalk"] = {
    f"residual-{form}": (
        "randomwalk-frodo",
        {"meta.target": "residual", "meta.consistency_cost": 0.1, "meta.consistency_form": form},
    )
    for form in ("canonical", "self")
}

# The policy-lag study (issue 10): acting weights k updates old, set on purpose.
SUITES["lag"] = {
    f"{name}-lag{lag}": (preset, overrides | {"run.policy_lag": lag})
    for lag in (0, 4, 16)
    for name, (preset, overrides) in {
        "impala": ("catch-impala", {}),
        "frodo-residual": ("catch-frodo", {"meta.target": "residual"}),
        "frodo-residual-ratio": (
            "catch-frodo",
            {"meta.target": "residual", "meta.ratio_input": True},
        ),
    }.items()
}


def run_one(args: tuple[str, dict[str, Any], int]) -> dict[str, Any]:
    """One seed of one variant, in a worker process (one torch thread)."""
    import torch

    from learner.training.sync import train_sync

    torch.set_num_threads(1)
    preset, overrides, seed = args
    cfg = set_dotted(load_preset(preset), {**overrides, "run.seed": seed})
    result = train_sync(cfg)
    history = result.history
    total = cfg.run.total_env_steps
    if cfg.task == "prediction":
        switch_every = cfg.env.kwargs.get("switch_every", 960)
        summary = random_walk_summary(history.value_rmse, switch_every, total)
        summary["curve"] = curve(history.value_rmse, total, bins=100)
    else:
        summary = catch_summary(history.episode_returns, history.episode_end_steps, total)
        points = list(zip(history.episode_end_steps, history.episode_returns, strict=True))
        summary["curve"] = curve(points, total, bins=100)
    diagnostics = {k: v for k, v in result.last_log.items() if k.startswith(("meta/", "eval/"))}
    summary |= {
        "seed": seed,
        "wall_time_s": result.session_wall_s,
        "last_diagnostics": diagnostics,  # the learned target's, means of the last record
        "config": cfg.to_dict(),
    }
    return summary


def plot(path: Path, names: list[str], figure_path: Path, title: str = "") -> None:
    """Mean +- 1 s.e. over seeds of each variant's binned curve, from a results JSON file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = json.loads(path.read_text())
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name in names:
        seeds = results[name]
        curves = np.array([[np.nan if v is None else v for v in s["curve"]] for s in seeds])
        if seeds[0]["config"]["task"] == "prediction":
            # A bin is one reward period; alternate periods have different error levels,
            # so average pairs of bins: one whole cycle of the left reward each.
            curves = curves.reshape(len(seeds), -1, 2).mean(-1)
        total = seeds[0]["config"]["run"]["total_env_steps"]
        x = (np.arange(curves.shape[1]) + 0.5) * total / curves.shape[1]
        mean = np.nanmean(curves, axis=0)
        se = np.nanstd(curves, axis=0, ddof=1) / np.sqrt(np.sum(~np.isnan(curves), axis=0))
        ax.plot(x, mean, label=f"{name} ({len(seeds)} seeds)")
        ax.fill_between(x, mean - se, mean + se, alpha=0.25)
    is_walk = seeds[0]["config"]["task"] == "prediction"
    ax.set_xlabel("env steps")
    ax.set_ylabel("RMS value error" if is_walk else "mean episode return")
    ax.set_title((title + "\n" if title else "") + "mean, band = +- 1 s.e. over seeds", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    figure_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure_path, dpi=120)


def plot_lag(path: Path, figure_path: Path) -> None:
    """Steps to 0.8 against the policy lag: per algorithm, the median over the seeds that
    reached it (points: each seed; a seed that never did is drawn at the budget)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = json.loads(path.read_text())
    algos: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for name, seeds in results.items():
        algo, _, lag = name.rpartition("-lag")
        algos.setdefault(algo, {})[int(lag)] = seeds
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, (algo, by_lag) in enumerate(sorted(algos.items())):
        lags = sorted(by_lag)
        budget = by_lag[lags[0]][0]["config"]["run"]["total_env_steps"]
        medians = []
        for lag in lags:
            steps = [s["steps_to_0.8"] for s in by_lag[lag]]
            shown = [budget if s is None else s for s in steps]
            x = np.full(len(shown), lag) * 1.0 + (i - 1) * 0.25
            ax.scatter(x, shown, s=10, alpha=0.5, color=f"C{i}")
            medians.append(np.median(shown))
        n = len(by_lag[lags[0]])
        ax.plot(lags, medians, "-o", color=f"C{i}", label=f"{algo} (median of {n} seeds)")
    ax.set_xlabel("policy lag set on purpose (updates)")
    ax.set_ylabel("env steps to mean return 0.8")
    ax.set_title(
        "Catch 11 x 6, desynchronised; dots: seeds (never: drawn at the budget)", fontsize=9
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    figure_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure_path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["plot-lag"]:
        plot_lag(Path(argv[1]), Path(argv[2]))
        return 0
    if argv[:1] == ["plot"]:
        parser = argparse.ArgumentParser(description="plot variants from a results JSON file")
        parser.add_argument("results", type=Path)
        parser.add_argument("variants", nargs="+")
        parser.add_argument("--out", type=Path, required=True)
        parser.add_argument("--title", default="")
        args = parser.parse_args(argv[1:])
        plot(args.results, args.variants, args.out, args.title)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--only", action="append", help="variant name (repeatable)")
    parser.add_argument("--set", action="append", default=[], help="extra override k=v")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, help="JSON file for per-seed summaries")
    args = parser.parse_args(argv)

    variants = SUITES[args.suite]
    names = args.only or list(variants)
    unknown = sorted(set(names) - set(variants))
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {sorted(variants)}")
    extra = {}
    for item in args.set:
        key, _, value = item.partition("=")
        extra[key] = parse_value(value)  # as the CLI's --set reads a value
    jobs = [
        (variants[n][0], variants[n][1] | extra, seed) for n in names for seed in range(args.seeds)
    ]
    start = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    with mp.get_context("spawn").Pool(args.workers) as pool:
        for i, summary in enumerate(pool.imap(run_one, jobs)):
            name = names[i // args.seeds]
            results[name].append(summary)
            print(
                f"[{time.perf_counter() - start:6.0f} s] {name} seed {summary['seed']}: "
                + ", ".join(f"{k}={v}" for k, v in summary.items() if k in SUMMARY_KEYS),
                file=sys.stderr,
                flush=True,
            )
            if args.out and len(results[name]) == args.seeds:  # a variant is complete
                save(args.out, {name: results[name]})
    print(table_rows(args.suite, results))
    return 0


def save(path: Path, results: dict[str, list[dict[str, Any]]]) -> None:
    """Merge ``results`` into the JSON file at ``path`` (atomically replaced)."""
    existing = json.loads(path.read_text()) if path.exists() else {}
    write_text_atomic(path, json.dumps(existing | results))


if __name__ == "__main__":
    raise SystemExit(main())
