"""Catch env steps to mean return 0.8: IMPALA, FRODO inline and FRODO with the async meta-learner.

Prints JSON. Presets ``catch-impala`` and ``catch-frodo`` (Catch 11 x 6), one run per
variant and seed, stopped once the last 500 episodes average 0.8 (or at ``--budget``):

- ``impala``, ``frodo-inline``: the synchronous trainer.
- ``frodo-async-delay-D``: the synchronous trainer with the meta-learner in process, each
  eta delivered D windows late (``meta.delay_windows``; D = 0 is lock-step, the same run
  as inline to the bit, so it is not run).
- ``frodo-async-ray``: the distributed trainer (2 actors x 32 envs, the meta-learner a Ray
  actor, free-running; ``--ray``).

    python experiments/async_meta_learning.py --seeds 0 1 2 --delays 1 4 --ray
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from impala_frodo.config.presets import load_preset  # noqa: E402
from impala_frodo.config.schema import Config, set_dotted  # noqa: E402
from impala_frodo.reports.analysis import SOLVED_RETURN, steps_to_threshold  # noqa: E402
from learner.app.driver import TrainOptions, train  # noqa: E402
from learner.training.sync import train_sync  # noqa: E402


def variant_config(
    name: str, seed: int, budget: int, logdir: str, target: str = "residual"
) -> Config:
    preset = "catch-impala" if name == "impala" else "catch-frodo"
    overrides: dict[str, object] = {"run.seed": seed, "run.total_env_steps": budget}
    if name != "impala":
        overrides["meta.target"] = target
    if name.startswith("frodo-async-delay-"):
        overrides |= {"meta.mode": "async", "meta.delay_windows": int(name.rsplit("-", 1)[1])}
    if name == "frodo-async-ray":
        overrides |= {"meta.mode": "async", "run.logdir": logdir}
    return set_dotted(load_preset(preset), overrides)


def run(name: str, seed: int, budget: int, logdir: str, target: str) -> dict[str, object]:
    cfg = variant_config(name, seed, budget, logdir, target)
    start = time.perf_counter()
    if name == "frodo-async-ray":
        options = TrainOptions(progress=False, handle_signals=False, stop_at_return=SOLVED_RETURN)
        result = train(cfg, options)
    else:
        result = train_sync(cfg, stop_at_return=SOLVED_RETURN)
    history = result.history
    steps = steps_to_threshold(
        history.episode_returns, history.episode_end_steps, SOLVED_RETURN, cfg.run.returns_window
    )
    return {
        "variant": name,
        "seed": seed,
        "steps_to_0.8": steps,
        "env_steps": result.env_steps,
        "final_return": result.mean_return,
        "meta_lag": result.last_log.get("meta/lag"),
        "wall_s": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--delays", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--budget", type=int, default=150_000)
    parser.add_argument("--ray", action="store_true", help="also the distributed async run")
    parser.add_argument(
        "--target", default="residual", help="FRODO's meta.target (plain: eta must learn it)"
    )
    parser.add_argument("--no-impala", action="store_true", help="FRODO's variants only")
    args = parser.parse_args()
    variants = [] if args.no_impala else ["impala"]
    variants += ["frodo-inline", *(f"frodo-async-delay-{d}" for d in args.delays)]
    if args.ray:
        variants.append("frodo-async-ray")
    runs = []
    with tempfile.TemporaryDirectory() as logdir:
        for seed in args.seeds:  # variants alternated within each seed
            runs.extend(run(name, seed, args.budget, logdir, args.target) for name in variants)
    summary = {}
    for name in variants:
        steps = [r["steps_to_0.8"] for r in runs if r["variant"] == name]
        solved = [s for s in steps if s is not None]
        summary[name] = {
            "solved": f"{len(solved)}/{len(steps)}",
            "median_steps_to_0.8": statistics.median(solved) if solved else None,
            "mean_final_return": statistics.fmean(
                r["final_return"] for r in runs if r["variant"] == name
            ),
            "steps": steps,
        }
    report = {"budget": args.budget, "target": args.target, "summary": summary, "runs": runs}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
