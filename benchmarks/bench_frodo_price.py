"""FRODO's price, part by part: FLOPs and time of each piece of an update (prints JSON).

For each network (the Catch MLP, MinAtar's conv net, the Atari ResNet) and algorithm
(IMPALA, FRODO, the extension) an :class:`~impala_frodo.rule.updater.Updater` is built
from the preset and fed synthetic ``[T, B]`` batches of the env's observation shape (the
cost of an update does not depend on the observations' values). Each part is counted
with :class:`torch.utils.flop_counter.FlopCounterMode` (FLOPs of the forward and backward
operators, as torch counts them: matrix products and convolutions; element-wise work is
not counted) and timed (median of ``--repeats`` in this process, parts alternated):

- ``agent_forward``: the agent on the T + 1 observations (with its graph to theta);
- ``agent_forward_backward``: IMPALA's inner step (forward, V-trace loss, gradient, the
  optimizer's update; no graph kept);
- ``meta_forward``: G_eta on the batch (the learned target), given the agent's outputs;
- ``inner_step_with_graph``: FRODO's inner step keeping its graph to eta;
- ``meta_backward``: the outer loss at theta_M on the held-out batch, differentiated back
  to eta through the M inner steps taken before (those steps are not in this part);
- ``update``: the time of a whole update, averaged over whole cycles of M updates (in
  steady state, FRODO's chain takes one outer step in every M updates), and its FLOPs
  likewise.

``time_per_gflop_ms`` is each part's time over its FLOPs: a part far above the agent's
forward pass spends its time on work the FLOP count does not see (element-wise
operators, the LSTM's small products, autograd's bookkeeping). ``--profile`` adds a
``torch.profiler`` table of where one FRODO cycle on Catch spends its time.

``--settings`` adds the price settings' per-update time and FLOPs against IMPALA on
Catch 11 x 6; ``--e2e`` distributed runs of IMPALA and FRODO at those settings,
alternated, with their steady env steps/s.

    python benchmarks/bench_frodo_price.py --nets catch minatar --repeats 5 --profile
    python benchmarks/bench_frodo_price.py --nets --settings --e2e base k4-f0.25-w16
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# SETTINGS: the price settings (meta.every, meta.batch_fraction, meta.hidden_size), as the
# learning experiments run them (docs/results-price.md).
from experiments.frodo_targets import PRICE_SETTINGS as SETTINGS  # noqa: E402
from impala_frodo.acting.trajectory import Trajectory  # noqa: E402
from impala_frodo.config.presets import load_preset  # noqa: E402
from impala_frodo.config.schema import Config, set_dotted  # noqa: E402
from impala_frodo.rule import objectives  # noqa: E402
from impala_frodo.rule.batch import Batch  # noqa: E402
from impala_frodo.rule.metagrad import detach_params, inner_step, outer_gradient  # noqa: E402
from impala_frodo.rule.updater import Updater  # noqa: E402

#: name -> (preset prefix, observation shape, dtype, actions, batch width B)
NETS: dict[str, tuple[str, tuple[int, ...], Any, int, int]] = {
    "catch": ("catch", (50,), np.float32, 3, 32),
    "minatar": ("minatar-breakout", (10, 10, 4), np.uint8, 3, 32),
    "atari": ("atari-pong", (84, 84, 4), np.uint8, 6, 8),
}
ALGOS = ("impala", "frodo", "frodo-ext")


def synthetic_batch(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any, actions: int,
                    steps: int, width: int) -> Batch:  # fmt: skip
    """A ``[T, B]`` batch of random observations and actions (no truncations)."""
    obs = rng.integers(0, 2, size=(steps + 1, width, *shape)).astype(dtype)
    logits = rng.normal(size=(steps, width, actions))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    taken = rng.integers(actions, size=(steps, width))
    continues = (rng.random((steps, width)) > 0.05).astype(np.float32)
    trajectory = Trajectory(
        obs=obs,
        actions=taken,
        rewards=rng.normal(size=(steps, width)).astype(np.float32),
        continues=continues,
        behaviour_log_probs=np.take_along_axis(log_probs, taken[..., None], -1)[..., 0].astype(
            np.float32
        ),
        truncation_index=np.zeros(0, np.int64),
        truncation_obs=np.zeros((0, *shape), dtype),
        obs_scale=1.0 / 255.0 if dtype == np.uint8 else 1.0,
    )
    return Batch.from_trajectories([trajectory])


def config(net: str, algo: str) -> Config:
    prefix = NETS[net][0]
    preset = f"{prefix}-{'frodo' if algo == 'frodo-ext' else algo}"
    cfg = set_dotted(load_preset(preset), {"run.device": "cpu"})
    return set_dotted(cfg, {"algo": algo}) if algo == "frodo-ext" else cfg


def flops_of(fn: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def seconds_of(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Parts:
    """The parts of one algorithm's update on one network, as closures to count and time."""

    def __init__(self, net: str, algo: str, steps: int, seed: int = 0) -> None:
        _, shape, dtype, actions, width = NETS[net]
        torch.manual_seed(seed)
        self.cfg = config(net, algo)
        self.updater = Updater(self.cfg, shape, actions)
        rng = np.random.default_rng(seed)
        self.m = self.cfg.meta.num_inner_steps
        self.batches = [
            synthetic_batch(rng, shape, dtype, actions, steps, width) for _ in range(self.m + 1)
        ]

    def parts(self) -> dict[str, Callable[[], Callable[[], Any]]]:
        """Each part as ``prepare() -> run``: what ``run`` does is counted and timed."""
        u, batch = self.updater, self.batches[0]
        found: dict[str, Callable[[], Callable[[], Any]]] = {
            "agent_forward": lambda: (
                lambda: objectives.evaluate_agent(u.agent, detach_params(u.params), batch)
            ),
            "agent_forward_backward": lambda: lambda: self._step(create_graph=False),
            "update": lambda: self._cycle,
        }
        if u.meta_net is not None and self.cfg.algo != "mgrl":
            found["meta_forward"] = self._prepare_meta_forward
            found["inner_step_with_graph"] = lambda: lambda: self._step(create_graph=True)
            found["meta_backward"] = self._prepare_meta_backward
        return found

    def _step(self, create_graph: bool) -> None:
        u = self.updater
        inner_step(
            detach_params(u.params),
            u.opt_state,
            u.inner.optimizer,
            lambda p: u.inner_loss(p, self.batches[0]),
            create_graph=create_graph,
            max_grad_norm=u.inner.max_grad_norm,
        )

    def _prepare_meta_forward(self) -> Callable[[], Any]:
        """The agent's outputs (not this part), then the part: G_eta's target on them."""
        u, batch = self.updater, self.batches[0]
        objective = u.objective
        with torch.no_grad():
            outputs = objective.evaluate(detach_params(u.params), batch)
            policy = objective.policy(batch, outputs)
        return lambda: objective.target(u.eta, batch, outputs, policy)  # type: ignore[attr-defined]

    def _prepare_meta_backward(self) -> Callable[[], Any]:
        """M inner steps with graph (not this part), then the part: the outer loss and its
        gradient to eta through them."""
        u, held_out = self.updater, self.batches[self.m]
        theta, state = detach_params(u.params), u.opt_state
        inner_batches = self.batches[: self.m]
        for b in inner_batches:
            step = inner_step(
                theta,
                state,
                u.inner.optimizer,
                lambda p, b=b: u.inner_loss(p, b),
                create_graph=True,
                max_grad_norm=u.inner.max_grad_norm,
            )
            theta, state = step.params, step.opt_state
        return lambda: outer_gradient(
            theta, u.eta, lambda p: u.outer_loss(p, held_out, inner_batches)
        )

    def _cycle(self) -> None:
        """M updates: in steady state, one outer step and M inner steps."""
        for b in self.batches[: self.m]:
            self.updater.update(b)


def measure(net: str, algo: str, steps: int, repeats: int) -> dict[str, Any]:
    parts = Parts(net, algo, steps)
    closures = parts.parts()
    cycle = parts.m
    out: dict[str, Any] = {"M": parts.m, "T": steps, "B": NETS[net][4]}
    for name, prepare in closures.items():
        prepare()()  # warm-up
        flops = flops_of(prepare()) / (cycle if name == "update" else 1)
        times = [seconds_of(prepare()) for _ in range(repeats)]
        ms = 1e3 * statistics.median(times) / (cycle if name == "update" else 1)
        out[name] = {
            "mflop": round(flops / 1e6, 2),
            "ms": round(ms, 3),
            "time_per_gflop_ms": round(ms / (flops / 1e9), 1) if flops else None,
        }
    return out


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """FRODO's and the extension's update over IMPALA's: FLOPs and time."""
    base = results["impala"]["update"]
    return {
        algo: {
            "flop_ratio": round(r["update"]["mflop"] / base["mflop"], 2),
            "time_ratio": round(r["update"]["ms"] / base["ms"], 2),
        }
        for algo, r in results.items()
        if algo != "impala"
    }


def settings_table(steps: int, repeats: int, cycles: int = 4) -> dict[str, Any]:
    """Catch 11 x 6 (the price experiments' preset): per-update time and FLOPs of IMPALA
    and of FRODO at each setting, alternated within each repeat; medians over repeats.
    An update is averaged over ``cycles`` x k x M updates (whole cycles of the cadence)."""
    rng = np.random.default_rng(0)
    cfg = set_dotted(load_preset("catch-frodo"), {"run.device": "cpu"})
    shape, actions, width = (66,), 3, cfg.run.num_envs
    arms: dict[str, Config] = {"impala": set_dotted(load_preset("catch-impala"), {})}
    arms |= {name: set_dotted(cfg, overrides) for name, overrides in SETTINGS.items()}
    updaters = {name: Updater(c, shape, actions) for name, c in arms.items()}
    longest = max(c.meta_every for c in arms.values()) * cfg.meta.num_inner_steps * cycles
    batches = [synthetic_batch(rng, shape, np.float32, actions, steps, width) for _ in range(8)]

    def run(name: str) -> float:
        start = time.perf_counter()
        for i in range(longest):
            updaters[name].update(batches[i % len(batches)])
        return (time.perf_counter() - start) / longest

    flops = {name: flops_of(lambda n=name: run(n)) / longest for name in arms}
    samples: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(repeats):
        for name in arms:
            samples[name].append(run(name))
    base = statistics.median(samples["impala"])
    return {
        name: {
            "ms": round(1e3 * statistics.median(times), 3),
            "mflop": round(flops[name] / 1e6, 2),
            "learner_rate_ratio_to_impala": round(base / statistics.median(times), 3),
        }
        for name, times in samples.items()
    }


def e2e_table(settings: list[str], actors: int, steps: int, repeats: int) -> dict[str, Any]:
    """Distributed runs on a local Ray instance (Catch 11 x 6, the price presets): IMPALA and
    FRODO at each setting alternated within every repeat; steady env steps/s (between the
    first and last log records), medians, and each one's ratio to IMPALA's median."""
    import ray
    from bench_e2e import machine_info, steady_rate

    from learner.app.driver import TrainOptions, train
    from learner.cluster.session import local_ray_init_kwargs

    arms = {"impala": ("catch-impala", {})}
    arms |= {name: ("catch-frodo", SETTINGS[name]) for name in settings}
    samples: dict[str, list[float]] = {name: [] for name in arms}
    ray.init(**local_ray_init_kwargs())
    try:
        with tempfile.TemporaryDirectory() as logdir:
            for _ in range(repeats):
                for name, (preset, overrides) in arms.items():
                    cfg = set_dotted(
                        load_preset(preset),
                        overrides
                        | {
                            "run.num_actors": actors,
                            "run.total_env_steps": steps,
                            "run.log_every_s": 0.5,
                            "run.checkpoint_every_s": 1e9,
                            "run.logdir": logdir,
                        },
                    )
                    result = train(cfg, TrainOptions(progress=False, handle_signals=False))
                    if result.exit_code != 0:
                        raise RuntimeError(f"{name}: {result.reason} {result.message}")
                    rate = steady_rate(result.run_dir)
                    if rate is not None:
                        samples[name].append(rate)
    finally:
        ray.shutdown()
    base = statistics.median(samples["impala"])
    return {
        "machine": machine_info(torch.get_num_threads()),
        "actors": actors,
        "env_steps_per_run": steps,
        "repeats": repeats,
        "rates": {
            name: {
                "steady_env_steps_per_s": round(statistics.median(rates)),
                "samples": [round(r) for r in rates],
                "ratio_to_impala": round(statistics.median(rates) / base, 3),
            }
            for name, rates in samples.items()
        },
    }


def profile_table(steps: int, rows: int = 15) -> list[dict[str, Any]]:
    """Where one FRODO cycle on Catch spends its CPU time: the top operators."""
    parts = Parts("catch", "frodo", steps)
    parts._cycle()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            parts._cycle()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [
        {
            "op": e.key,
            "self_cpu_share": round(e.self_cpu_time_total / total, 3),
            "calls_per_cycle": e.count // 3,
        }
        for e in events[:rows]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", nargs="*", choices=sorted(NETS), default=["catch", "minatar"])
    parser.add_argument("--algos", nargs="+", choices=ALGOS, default=list(ALGOS))
    parser.add_argument("--steps", type=int, default=20, help="unroll length T")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--settings", action="store_true", help="the price settings on Catch 11 x 6 (T = 16)"
    )
    parser.add_argument(
        "--e2e",
        nargs="*",
        metavar="SETTING",
        help="distributed runs of IMPALA and FRODO at these settings (default: all), alternated",
    )
    parser.add_argument("--e2e-actors", type=int, default=2)
    parser.add_argument("--e2e-steps", type=int, default=200_000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {"threads": args.threads, "torch": torch.__version__, "nets": {}}
    for net in args.nets:
        results = {algo: measure(net, algo, args.steps, args.repeats) for algo in args.algos}
        if "impala" in results:
            results["ratios_to_impala"] = ratios(results)
        report["nets"][net] = results
        print(f"{net} done", file=sys.stderr)
    if args.profile:
        report["profile_frodo_catch"] = profile_table(args.steps)
    if args.settings:
        report["settings_catch_11x6"] = settings_table(16, args.repeats)
    if args.e2e is not None:
        chosen = args.e2e or list(SETTINGS)
        report["e2e_catch_11x6"] = e2e_table(chosen, args.e2e_actors, args.e2e_steps, args.repeats)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
