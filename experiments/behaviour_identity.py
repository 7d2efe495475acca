"""Record what the learning rule and the sync trainer compute; compare two records.

    python experiments/behaviour_identity.py record before.json
    ... refactor ...
    python experiments/behaviour_identity.py record after.json
    python experiments/behaviour_identity.py compare before.json after.json

``record`` runs two families of fixed-seed cases on CPU, with one torch thread:

- **sync**: short synchronous runs (IMPALA, FRODO residual, plain and centred, chain and
  sliding, the extension, MGRL, the async meta-learner in lock-step and delayed; Catch and
  the random walk): every update's metrics, the episode returns and the final theta and
  eta.
- **float64**: an updater in float64 fed fixed random batches (terminals and time-limit
  truncations inside) for several updates spanning at least two meta steps: theta, the
  inner optimizer's state and eta after each update, and the analytic meta-gradient of the
  finite-difference tests' set-up (inline schedules and the async meta-learner).

Wall-clock metrics (:data:`WALL_CLOCK_METRICS`) are recorded but never compared.

``compare`` reports, per case, whether the numbers both records hold are equal to the bit
and otherwise the largest absolute difference, and which metrics one record has that the
other lacks; it exits 1 if a difference exceeds ``--atol`` (default 0: bitwise) or a
metric of the first record is missing from the second.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from impala_frodo.acting.trajectory import Trajectory  # noqa: E402
from impala_frodo.config.presets import load_preset  # noqa: E402
from impala_frodo.config.schema import Config, set_dotted  # noqa: E402
from impala_frodo.rule.batch import Batch  # noqa: E402
from impala_frodo.rule.metagrad import meta_gradient  # noqa: E402
from impala_frodo.rule.updater import Updater  # noqa: E402

#: (name, preset, dotted overrides) of the synchronous runs.
SYNC_CASES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("catch-impala", "catch-impala", {}),
    ("catch-frodo-residual", "catch-frodo", {}),
    ("catch-frodo-plain", "catch-frodo", {"meta.target": "plain"}),
    ("catch-frodo-centred", "catch-frodo", {"meta.target": "residual-centred"}),
    ("catch-frodo-sliding", "catch-frodo", {"meta.schedule": "sliding", "meta.num_inner_steps": 2}),
    ("catch-frodo-ratio-consistency", "catch-frodo", {
        "meta.ratio_input": True, "meta.consistency_cost": 0.5, "run.policy_lag": 2,
    }),
    ("catch-frodo-ext", "catch-frodo-ext", {}),
    ("catch-mgrl", "catch-mgrl", {}),
    ("rw-td", "randomwalk-td", {}),
    ("rw-frodo-residual", "randomwalk-frodo", {"meta.target": "residual"}),
    ("rw-frodo-plain", "randomwalk-frodo", {"meta.target": "plain"}),
    ("rw-frodo-ext", "randomwalk-frodo-ext", {}),
    ("catch-frodo-async", "catch-frodo", {"meta.mode": "async"}),
    ("catch-frodo-async-delayed", "catch-frodo", {"meta.mode": "async", "meta.delay_windows": 2}),
    ("rw-frodo-async", "randomwalk-frodo", {"meta.mode": "async"}),
)  # fmt: skip

#: Every sync run: this many updates of T x B env steps.
SYNC_UPDATES = 24
SYNC_RUN = {"run.unroll_length": 10, "run.num_envs": 8, "run.seed": 3, "run.device": "cpu"}

OBS_SHAPE, NUM_ACTIONS, STEPS, WIDTH = (3,), 2, 4, 2

#: (name, algo, task, optim, meta overrides) of the float64 cases.
FLOAT64_CASES: tuple[tuple[str, str, str, str, dict[str, Any]], ...] = (
    ("impala", "impala", "control", "rmsprop", {}),
    ("frodo-residual-chain", "frodo", "control", "rmsprop", {}),
    ("frodo-plain-chain", "frodo", "control", "sgd", {"target": "plain"}),
    ("frodo-residual-sliding", "frodo", "control", "rmsprop", {"schedule": "sliding"}),
    ("frodo-plain-sliding", "frodo", "control", "sgd", {"target": "plain", "schedule": "sliding"}),
    ("frodo-centred-ratio", "frodo", "control", "rmsprop", {
        "target": "residual-centred", "ratio_input": True, "consistency_cost": 0.3,
    }),
    ("frodo-prediction", "frodo", "prediction", "sgd", {}),
    ("frodo-ext-annealed", "frodo-ext", "control", "rmsprop", {}),
    ("frodo-ext-constant-sliding", "frodo-ext", "control", "sgd", {
        "ext_beta_mode": "constant", "ext_b1": 0.3, "schedule": "sliding",
    }),
    ("mgrl-chain", "mgrl", "control", "rmsprop", {}),
    ("mgrl-sliding", "mgrl", "control", "sgd", {"schedule": "sliding"}),
    ("frodo-async", "frodo", "control", "rmsprop", {"mode": "async"}),
    ("frodo-ext-async-delayed", "frodo-ext", "control", "sgd", {
        "mode": "async", "delay_windows": 1,
    }),
    ("mgrl-async", "mgrl", "control", "rmsprop", {"mode": "async"}),
)  # fmt: skip
FLOAT64_UPDATES = 7  # with M = 2: meta steps at updates 3, 5 and 7 (chain)


def _numbers(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().reshape(-1).tolist()
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in sorted(value.items())}
    return value


def random_batch(rng: np.random.Generator) -> Batch:
    """A [T=4, B=2] float64 batch with a terminal and a time-limit truncation inside."""
    logits = rng.normal(size=(STEPS, WIDTH, NUM_ACTIONS))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    actions = rng.integers(NUM_ACTIONS, size=(STEPS, WIDTH))
    continues = np.ones((STEPS, WIDTH), np.float32)
    continues[1, 0] = 0.0
    continues[2, 1] = 0.0
    trajectory = Trajectory(
        obs=rng.normal(size=(STEPS + 1, WIDTH, *OBS_SHAPE)),
        actions=actions,
        rewards=rng.normal(size=(STEPS, WIDTH)),
        continues=continues,
        behaviour_log_probs=np.take_along_axis(log_probs, actions[..., None], -1)[..., 0],
        truncation_index=np.array([2 * WIDTH + 1]),
        truncation_obs=rng.normal(size=(1, *OBS_SHAPE)),
    )
    return Batch.from_trajectories([trajectory], dtype=torch.float64)


def float64_updater(algo: str, task: str, optim: str, meta: dict[str, Any]) -> Updater:
    torch.manual_seed(0)
    cfg = Config.from_dict(
        {
            "algo": algo,
            "task": task,
            "agent": {"hidden_sizes": [4]},
            "optim": {"name": optim, "lr": 0.1},
            "meta": {"num_inner_steps": 2, "hidden_size": 3, **meta},
            "loss": {"gamma": 0.9, "lambda_": 0.95},
        }
    )
    updater = Updater(cfg, OBS_SHAPE, NUM_ACTIONS)
    head = getattr(updater.meta_net, "head", None)
    if head is not None:
        with torch.no_grad():
            head.weight.normal_(0.0, 0.3)
    return updater.double()


def float64_case(algo: str, task: str, optim: str, meta: dict[str, Any]) -> dict[str, Any]:
    updater = float64_updater(algo, task, optim, meta)
    rng = np.random.default_rng(7)
    record: dict[str, Any] = {"steps": []}
    if updater.meta_net is not None:
        grads = meta_gradient(
            updater.params,
            updater.opt_state,
            updater.eta,
            [random_batch(rng), random_batch(rng)],
            random_batch(rng),
            updater.inner.optimizer,
            updater.inner_loss,
            updater.outer_loss,
        )
        record["meta_gradient"] = _numbers(grads.eta_grads)
    for _ in range(FLOAT64_UPDATES):
        metrics = updater.update(random_batch(rng))
        record["steps"].append(
            {
                "metrics": metrics,
                "theta": _numbers(updater.params),
                "opt_state": _numbers(updater.opt_state),
                "eta": _numbers(updater.eta),
            }
        )
    return record


def sync_case(preset: str, overrides: dict[str, Any]) -> dict[str, Any]:
    from learner.training.sync import train_sync

    cfg = set_dotted(load_preset(preset), {**SYNC_RUN, **overrides})
    steps = SYNC_UPDATES * cfg.run.unroll_length * cfg.run.num_envs
    cfg = set_dotted(cfg, {"run.total_env_steps": steps})
    updates: list[dict[str, float]] = []
    updaters: list[Updater] = []

    def on_update(learner: Any, metrics: dict[str, float]) -> None:
        updates.append(dict(metrics))
        updaters[:] = [learner.updater]

    result = train_sync(cfg, on_update=on_update)
    return {
        "updates": updates,
        "episode_returns": list(result.history.episode_returns),
        "theta": _numbers(updaters[0].params),
        "eta": _numbers(updaters[0].eta),
    }


def record(out: Path) -> None:
    torch.set_num_threads(1)
    data: dict[str, Any] = {"sync": {}, "float64": {}}
    for name, preset, overrides in SYNC_CASES:
        data["sync"][name] = sync_case(preset, overrides)
        print(f"sync {name}: {len(data['sync'][name]['updates'])} updates", file=sys.stderr)
    for name, algo, task, optim, meta in FLOAT64_CASES:
        data["float64"][name] = float64_case(algo, task, optim, meta)
        print(f"float64 {name}", file=sys.stderr)
    out.write_text(json.dumps(data))


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{path}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, value


#: Metrics that time the machine, not the learning rule: recorded, never compared.
WALL_CLOCK_METRICS = ("perf/meta_step_s",)


def compare_case(a: Any, b: Any) -> tuple[float, list[str], list[str]]:
    """(max |difference| over the numbers both hold, 0 if bitwise equal, wall-clock
    metrics aside; paths only in ``a`` (removed); paths only in ``b`` (added))."""
    left, right = dict(_leaves(a)), dict(_leaves(b))
    worst = 0.0
    for key in set(left) & set(right):
        if key.endswith(WALL_CLOCK_METRICS):
            continue
        x, y = left[key], right[key]
        if isinstance(x, int | float) and isinstance(y, int | float):
            if not (x == y or (x != x and y != y)):
                worst = max(worst, abs(float(x) - float(y)))
        elif x != y:
            worst = float("inf")
    return worst, sorted(set(left) - set(right)), sorted(set(right) - set(left))


def _metric_names(paths: list[str]) -> list[str]:
    """``/updates[3]/perf/policy_lag`` -> ``perf/policy_lag``, once each."""
    return sorted({p.split("]/", 1)[-1] for p in paths})


def compare(before: Path, after: Path, atol: float) -> int:
    """Values must match (to ``atol``) and none may be missing; added metrics are listed."""
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    failed = 0
    for family in ("sync", "float64"):
        for name in sorted(set(a[family]) | set(b[family])):
            if name not in a[family] or name not in b[family]:
                print(f"{family:8s} {name:32s} missing in one record  FAIL")
                failed += 1
                continue
            worst, removed, added = compare_case(a[family][name], b[family][name])
            status = "identical" if worst == 0 else f"max |diff| {worst:.3g}"
            if removed:
                status += f"; missing after: {', '.join(_metric_names(removed))}"
            if added:
                status += f"; added: {', '.join(_metric_names(added))}"
            ok = worst <= atol and not removed
            failed += not ok
            print(f"{family:8s} {name:32s} {status}{'' if ok else '  FAIL'}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="run the cases and write their record")
    rec.add_argument("out", type=Path)
    cmp = sub.add_parser("compare", help="compare two records")
    cmp.add_argument("before", type=Path)
    cmp.add_argument("after", type=Path)
    cmp.add_argument("--atol", type=float, default=0.0, help="tolerance (default 0: bitwise)")
    args = parser.parse_args(argv)
    if args.command == "record":
        record(args.out)
        return 0
    return compare(args.before, args.after, args.atol)


if __name__ == "__main__":
    sys.exit(main())
