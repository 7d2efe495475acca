"""Atari throughput: the ALE backends, acting with IMPALA's ResNet, and the learner's time.

Prints JSON. Sections (``--sections``, all by default):

- ``env``: agent steps/s of one game's batched env alone, one C++ thread, random actions:
  ``ale-py``'s ``AtariVectorEnv`` (what :class:`~impala_frodo.envs.atari.BatchedAtari` steps)
  against ``envpool``'s Atari env with the same settings (if installed), alternating in
  this process, the median of ``--repeats`` timed windows each. Frames/s = 4 x steps/s.
- ``acting``: seconds to choose the actions of one step of an actor's ``--envs`` envs with
  the ResNet: ``numpy``
  (:class:`~impala_frodo.networks.numpy_policy.NumpyPolicy`, what actors do), ``torch`` in the
  actor (one thread, as an actor process has), and ``learner_side``: one batched
  forward pass for all ``--actors`` actors' envs in torch on the learner's device
  (``--device``; on the CPU with ``--learner-threads`` threads), frames sent as uint8 and
  logits back, per actor's share; each with the agent steps/s
  it allows an actor (acting alone, and with the env's step time added). Alternated, median.
- ``learner``: seconds per learner update on a real ``[T, B]`` Pong batch (the presets' T = 20,
  B = 32), IMPALA and FRODO (FRODO: averaged over whole meta cycles of M inner steps and the
  outer step), on ``--device`` (the CPU with ``--learner-threads`` threads), and the agent
  steps/s the learner alone could take in.

On a shared machine the figures move with the load: the load average before and after is
printed with them, and the single-threaded figures also per CPU second (``time.process_time``),
what a core of one's own would give, less the cache and memory-bandwidth contention.

    python benchmarks/bench_atari.py                              # everything, Pong
    python benchmarks/bench_atari.py --sections env acting --repeats 5
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import time

import numpy as np
import torch

from impala_frodo.acting.unroll import Unroller
from impala_frodo.config.presets import load_preset
from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.envs import make_batched_env
from impala_frodo.envs.atari import AtariSettings, atari_game
from impala_frodo.networks.agent import AgentNet
from impala_frodo.networks.numpy_policy import NumpyPolicy
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.updater import Updater
from impala_frodo.utils import resolve_device

SECTIONS = ("env", "acting", "learner")


def median_rate(fn, repeats: int) -> float:
    return statistics.median(fn() for _ in range(repeats))


def ale_rate(game: str, envs: int, seconds: float) -> tuple[float, float]:
    """Agent steps per wall second and per CPU second of ale-py's vector env (one thread),
    BatchedAtari's settings."""
    env = make_batched_env(f"ALE/{game}-v5", envs, seed=0)
    env.reset()
    rng = np.random.default_rng(0)
    steps, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        env.step(rng.integers(18, size=envs))
        steps += envs
    rates = steps / (time.perf_counter() - start), steps / (time.process_time() - cpu)
    env.close()
    return rates


def envpool_rate(game: str, envs: int, seconds: float) -> tuple[float, float]:
    """Agent steps per wall second and per CPU second of envpool's Atari env (one
    thread), the same settings."""
    import envpool

    s = AtariSettings()
    env = envpool.make(
        f"{game}-v5",
        env_type="gymnasium",
        num_envs=envs,
        num_threads=1,
        seed=0,
        img_height=s.frame_size,
        img_width=s.frame_size,
        stack_num=s.stack,
        frame_skip=s.frameskip,
        noop_max=s.noop_max,
        episodic_life=False,
        reward_clip=False,
        repeat_action_probability=s.repeat_action_probability,
        full_action_space=s.full_action_space,
        max_episode_steps=s.max_episode_frames // s.frameskip,
        use_fire_reset=False,
    )
    env.reset()
    rng = np.random.default_rng(0)
    steps, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        env.step(rng.integers(18, size=envs))
        steps += envs
    rates = steps / (time.perf_counter() - start), steps / (time.process_time() - cpu)
    env.close()
    return rates


def bench_env(game: str, envs: int, repeats: int, seconds: float) -> dict[str, object]:
    torch.set_num_threads(1)
    backends = {"ale_py": ale_rate}
    if importlib.util.find_spec("envpool") is not None:
        backends["envpool"] = envpool_rate
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in backends}
    for _ in range(repeats):  # alternate, so that both see the same load
        for name, fn in backends.items():
            rates[name].append(fn(game, envs, seconds))
    out = {}
    for name, pairs in rates.items():
        wall = statistics.median(w for w, _ in pairs)
        out[name] = {
            "agent_steps_per_s_median": round(wall),
            "frames_per_s_median": round(4 * wall),
            "agent_steps_per_cpu_s_median": round(statistics.median(c for _, c in pairs)),
            "all_wall": [round(w) for w, _ in pairs],
        }
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_acting(
    game: str, envs: int, actors: int, repeats: int, learner_threads: int, device: torch.device
) -> dict[str, object]:
    torch.manual_seed(0)
    agent = AgentNet((84, 84, 4), 18, (256,))
    learner_agent = AgentNet((84, 84, 4), 18, (256,)).to(device)
    learner_agent.load_state_dict(agent.state_dict())
    policy = NumpyPolicy.from_params(dict(agent.named_parameters()), obs_scale=1 / 255)
    env = make_batched_env(f"ALE/{game}-v5", envs, seed=0)
    frames = env.reset()
    for _ in range(50):  # frames from play, not of the reset
        frames = env.step(np.random.default_rng(0).integers(18, size=envs)).obs
    frames = np.ascontiguousarray(frames)
    all_frames = np.concatenate([frames] * actors)

    cpu_times: dict[str, list[float]] = {"numpy": [], "torch": [], "env": []}

    def timed(fn, *args, cpu_key: str | None = None) -> float:
        start, cpu = time.perf_counter(), time.process_time()
        fn(*args)
        if cpu_key is not None:
            cpu_times[cpu_key].append(time.process_time() - cpu)
        return time.perf_counter() - start

    def torch_logits(obs: np.ndarray) -> None:
        with torch.inference_mode():
            agent(torch.from_numpy(obs).float().mul_(1 / 255))

    def learner_logits(obs: np.ndarray) -> None:
        """Frames to the learner's device as uint8, logits back: one batched pass."""
        with torch.inference_mode():
            x = torch.from_numpy(obs).to(device).float().mul_(1 / 255)
            learner_agent(x)[0].cpu()

    times: dict[str, list[float]] = {"numpy": [], "torch": [], "learner_side": [], "env": []}
    actions = np.random.default_rng(1).integers(18, size=envs)
    for _ in range(repeats):
        torch.set_num_threads(1)  # an actor process: one thread
        times["numpy"].append(timed(policy, frames, cpu_key="numpy"))
        times["torch"].append(timed(torch_logits, frames, cpu_key="torch"))
        torch.set_num_threads(learner_threads)
        learner_logits(all_frames)  # warm (CUDA: kernels chosen)
        times["learner_side"].append(timed(learner_logits, all_frames) / actors)
        times["env"].append(timed(env.step, actions, cpu_key="env"))
    env.close()
    env_s = statistics.median(times["env"])
    env_cpu_s = statistics.median(cpu_times["env"])
    out: dict[str, object] = {
        "env_step_s_median": round(env_s, 4),
        "env_step_cpu_s_median": round(env_cpu_s, 4),
    }
    for name in ("numpy", "torch", "learner_side"):
        s = statistics.median(times[name])
        out[name] = {
            "s_per_step_median": round(s, 4),
            "ms_per_frame": round(1e3 * s / envs, 2),
            "acting_only_agent_steps_per_s": round(envs / s, 1),
            "with_env_agent_steps_per_s": round(envs / (s + env_s), 1),
        }
        if name in cpu_times:  # single-threaded: CPU seconds, what a dedicated core gives
            cpu_s = statistics.median(cpu_times[name])
            out[name] |= {
                "cpu_s_per_step_median": round(cpu_s, 4),
                "with_env_agent_steps_per_cpu_s": round(envs / (cpu_s + env_cpu_s), 1),
            }
    return out


def learner_cfg(game: str, algo: str, envs: int) -> Config:
    name = atari_game(f"ALE/{game}-v5").replace("_", "")
    return set_dotted(
        load_preset(f"atari-{name}-{algo}"), {"run.envs_per_actor": envs, "run.num_envs": envs}
    )


def learner_seconds_per_update(
    cfg: Config, cycles: int, device: torch.device
) -> tuple[float, float]:
    """Median (wall, CPU) seconds per update over whole meta cycles (M + 1 updates each;
    IMPALA: 3)."""
    env = make_batched_env(cfg.env.id, cfg.run.num_envs, seed=0, **cfg.env.kwargs)
    agent = AgentNet.from_config(env.observation_shape, env.num_actions, cfg.agent)
    unroller = Unroller(env, cfg.run.unroll_length, seed=0)
    policy = NumpyPolicy.from_params(
        dict(agent.named_parameters()), obs_scale=env.observation_scale
    )
    batches = [Batch.from_trajectories([unroller.unroll(policy)], device) for _ in range(2)]
    env.close()
    updater = Updater(cfg, env.observation_shape, env.num_actions, device)
    per_cycle = cfg.meta.num_inner_steps + 1 if cfg.is_meta else 3
    updater.update(batches[0])  # warm-up
    _sync(device)
    times, cpu_times = [], []
    for i in range(cycles):
        start, cpu = time.perf_counter(), time.process_time()
        for j in range(per_cycle):
            updater.update(batches[(i + j) % len(batches)])
        _sync(device)
        times.append((time.perf_counter() - start) / per_cycle)
        cpu_times.append((time.process_time() - cpu) / per_cycle)
    return statistics.median(times), statistics.median(cpu_times)


def bench_learner(
    game: str, envs: int, cycles: int, threads: int, device: torch.device
) -> dict[str, object]:
    torch.set_num_threads(threads)
    out: dict[str, object] = {}
    for algo in ("impala", "frodo"):
        cfg = learner_cfg(game, algo, envs)
        s, cpu_s = learner_seconds_per_update(cfg, cycles, device)
        steps = cfg.run.unroll_length * envs
        out[algo] = {
            "s_per_update_median": round(s, 3),
            "ms_per_update_median": round(1e3 * s),
            "cpu_s_per_update_median": round(cpu_s, 3),
            "batch": [cfg.run.unroll_length, envs],
            "learner_only_agent_steps_per_s": round(steps / s, 1),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--game", default="Pong", help="Gymnasium's name (Pong, MsPacman)")
    parser.add_argument("--envs", type=int, default=32, help="envs per actor (B of a batch)")
    parser.add_argument("--actors", type=int, default=2, help="actors fed by the learner side")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--env-seconds", type=float, default=3.0, help="per timed env window")
    parser.add_argument("--cycles", type=int, default=2, help="learner cycles timed")
    parser.add_argument("--learner-threads", type=int, default=2)
    parser.add_argument("--device", default="auto", help="the learner's: auto, cpu, cuda")
    args = parser.parse_args()
    device = resolve_device(args.device)

    load_before = os.getloadavg()[0]
    results: dict[str, object] = {}
    if "env" in args.sections:
        results["env"] = bench_env(args.game, args.envs, args.repeats, args.env_seconds)
    if "acting" in args.sections:
        results["acting"] = bench_acting(
            args.game, args.envs, args.actors, args.repeats, args.learner_threads, device
        )
    if "learner" in args.sections:
        results["learner"] = bench_learner(
            args.game, args.envs, args.cycles, args.learner_threads, device
        )
    print(
        json.dumps(
            {
                "benchmark": "atari",
                "game": args.game,
                "envs_per_actor": args.envs,
                "repeats": args.repeats,
                "learner_threads": args.learner_threads,
                "learner_device": str(device),
                "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                "load_avg_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                "cpus": os.cpu_count(),
                "torch": torch.__version__,
                "python": platform.python_version(),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
