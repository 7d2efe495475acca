"""The synchronous, single-process trainer: act, then learn, in one loop.

It runs every algorithm through the same :class:`~impala_frodo.updater.Updater`
as the distributed learner, with no Ray and no queue. It is the reference the
distributed system must match, and the fast path for tests and sketches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from impala_frodo.analysis import value_error_metrics
from impala_frodo.batch import Batch
from impala_frodo.config import Config
from impala_frodo.envs import make_batched_env
from impala_frodo.intervals import IntervalLog
from impala_frodo.networks import agent_layout
from impala_frodo.rollout import DelayedWeights, NumpyPolicy, Roller, pack_params
from impala_frodo.updater import Updater
from impala_frodo.utils import resolve_device, seed_everything


@dataclass
class TrainResult:
    episode_returns: list[float] = field(default_factory=list)  # in the order episodes ended
    episode_end_steps: list[int] = field(default_factory=list)  # env steps done when each ended
    episode_lengths: list[int] = field(default_factory=list)
    # (env steps, RMS value error) after each update, on the random walk
    value_rmse: list[tuple[int, float]] = field(default_factory=list)
    last_metrics: dict[str, float] = field(default_factory=dict)
    env_steps: int = 0
    wall_time_s: float = 0.0

    @property
    def env_steps_per_s(self) -> float:
        return self.env_steps / max(self.wall_time_s, 1e-9)


def train_sync(
    cfg: Config,
    *,
    stop_at_return: float | None = None,
    callback: Callable[[TrainResult, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train for ``cfg.run.total_env_steps`` with ``cfg.run.num_envs`` envs in one process.

    ``stop_at_return``: stop early once the mean return of the last
    ``cfg.run.returns_window`` episodes reaches it.
    """
    seed_everything(cfg.run.seed)
    device = resolve_device(cfg.run.device)
    env = make_batched_env(cfg.env.id, cfg.run.num_envs, seed=cfg.run.seed, **cfg.env.kwargs)
    updater = Updater(cfg, env.observation_shape, env.num_actions, device=device)
    policy = NumpyPolicy(
        agent_layout(env.observation_shape, env.num_actions, cfg.agent),
        seed=cfg.run.seed,
        obs_scale=env.observation_scale,
    )
    delayed = DelayedWeights(cfg.run.policy_lag)  # mu = pi of policy_lag updates ago

    def load_behaviour_policy() -> None:
        packed = pack_params(updater.acting_params("cpu"))
        version, params = delayed.push(updater.num_updates, packed)
        policy.load(params, version)

    load_behaviour_policy()
    roller = Roller(env, cfg.run.unroll_length, seed=cfg.run.seed)
    state_obs = None
    if hasattr(env, "state_observations"):
        state_obs = torch.as_tensor(env.state_observations(), dtype=torch.float32)

    result = TrainResult()
    window = cfg.run.returns_window
    start = time.perf_counter()
    while result.env_steps < cfg.run.total_env_steps:
        trajectory = roller.unroll(policy, policy.version)
        result.env_steps += trajectory.num_steps
        result.episode_returns.extend(trajectory.episode_returns)
        result.episode_lengths.extend(trajectory.episode_lengths)
        result.episode_end_steps.extend([result.env_steps] * len(trajectory.episode_returns))

        metrics = updater.update(Batch.from_trajectories([trajectory], device))
        load_behaviour_policy()
        if state_obs is not None and trajectory.true_values is not None:
            errors = value_error_metrics(
                updater.values(state_obs).cpu().numpy(),
                trajectory.true_values,
                trajectory.steps_since_switch,
            )
            result.value_rmse.append((result.env_steps, errors["eval/value_rmse"]))
            metrics |= errors
        result.last_metrics = metrics
        if callback is not None:
            callback(result, metrics)
        if (
            stop_at_return is not None
            and len(result.episode_returns) >= window
            and np.mean(result.episode_returns[-window:]) >= stop_at_return
        ):
            break
    result.wall_time_s = time.perf_counter() - start
    env.close()
    return result


def run_sync(
    cfg: Config,
    run_dir: str | Path,
    *,
    num_records: int = 200,
    on_record: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """:func:`train_sync` that writes the run directory's TensorBoard events and metrics.jsonl.

    About ``num_records`` records, evenly spaced in env steps, so that curves
    of different seeds line up for plots.
    """
    from impala_frodo.runlog import RunLogger  # TensorBoard import only when logging

    log_every = max(cfg.run.total_env_steps // num_records, 1)
    interval = IntervalLog(cfg.run.returns_window)
    start = time.perf_counter()
    next_record = log_every
    episodes_seen = 0

    with RunLogger(run_dir) as logger:
        logger.add_config(cfg)

        def callback(result: TrainResult, metrics: dict[str, float]) -> None:
            nonlocal next_record, episodes_seen
            interval.add(
                metrics,
                result.episode_returns[episodes_seen:],
                result.episode_lengths[episodes_seen:],
            )
            episodes_seen = len(result.episode_returns)
            if result.env_steps >= next_record or result.env_steps >= cfg.run.total_env_steps:
                wall = time.perf_counter() - start
                record = interval.pop(result.episode_returns)
                record["perf/env_steps_per_s"] = result.env_steps / max(wall, 1e-9)
                logger.log(result.env_steps, record, wall)
                if on_record is not None:
                    on_record(result.env_steps, record)
                next_record = (result.env_steps // log_every + 1) * log_every

        return train_sync(cfg, callback=callback)
