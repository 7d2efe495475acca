"""The synchronous trainer: one rollout actor and the learner, in turn, in one process.

It is the distributed system's loop with the queue taken out: the same
:class:`~learner.training.learner.Learner` (weights and policy lag, probes, stopping, logging,
result) and the same :class:`~actors.rollout.RolloutActor`, called directly, with no Ray.
The actor acts with the newest published weights (or ``run.policy_lag`` versions old),
so mu = pi up to that set lag. It is the reference the distributed system must match,
and the fast path for tests, sweeps and experiments.

The actor steps ``run.num_envs`` envs and is seeded with ``run.seed``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path

from actors.rollout import RolloutActor, RolloutSpec, env_spec
from impala_frodo.config.checks import ConfigError
from impala_frodo.config.schema import Config
from impala_frodo.networks.weights import param_layout
from impala_frodo.records.runlog import RunLogger
from impala_frodo.utils import resolve_device, seed_everything
from learner.training.learner import Learner
from learner.training.result import StopReason, TrainResult

#: ``(learner, metrics)`` after every update.
UpdateCallback = Callable[[Learner, dict[str, float]], None]


def train_sync(
    cfg: Config,
    *,
    stop_at_return: float | None = None,
    run_dir: str | Path | None = None,
    num_records: int = 200,
    on_update: UpdateCallback | None = None,
) -> TrainResult:
    """Train for ``cfg.run.total_env_steps`` in this process; see the module docstring.

    ``stop_at_return``: stop once the mean return of the last ``run.returns_window``
    episodes reaches it. ``run_dir``: write TensorBoard events and ``metrics.jsonl`` there,
    about ``num_records`` records evenly spaced in updates (so that seeds line up in plots).
    """
    if cfg.run.num_learners > 1:
        raise ConfigError(
            f"run.num_learners = {cfg.run.num_learners}: data-parallel learners run in the "
            "distributed trainer (impala-frodo train), the synchronous one has one learner"
        )
    if run_dir is not None:
        cfg = _record_every(cfg, num_records)
    seed_everything(cfg.run.seed)
    spec = env_spec(cfg)
    learner = Learner(
        cfg,
        spec.observation_shape,
        spec.num_actions,
        device=resolve_device(cfg.run.device),
        state_observations=spec.state_observations,
    )
    actor = RolloutActor(
        RolloutSpec.from_config(cfg, num_envs=cfg.run.num_envs),
        param_layout(learner.updater.params),
        seed=cfg.run.seed,
    )
    if run_dir is not None:
        learner.run_logger = RunLogger(run_dir)
        learner.run_logger.add_config(cfg)
    start = time.perf_counter()
    try:
        reason = _loop(learner, actor, stop_at_return, on_update)
        if learner.books.has_unlogged_steps():
            learner.log()
    finally:
        actor.close()
        learner.close()
    trajectories = learner.books.counters.trajectories  # every unroll asked for was trained on
    return TrainResult.from_books(
        learner.books,
        reason,
        run_dir=Path(run_dir) if run_dir else None,
        wall_s=time.perf_counter() - start,
        unrolls={"submitted": trajectories, "collected": trajectories, "lost": 0},
        last_log=learner.last_record,
    )


def _loop(
    learner: Learner,
    actor: RolloutActor,
    stop_at_return: float | None,
    on_update: UpdateCallback | None,
) -> StopReason:
    """Act, learn, publish; returns why it stopped (the budget, or the return reached)."""
    while not learner.books.done:
        metrics = learner.update([actor.unroll(*learner.behaviour_weights())])
        learner.maybe_log()
        if on_update is not None:
            on_update(learner, metrics)
        if stop_at_return is not None and learner.books.solved(stop_at_return):
            return StopReason.RETURN
    return StopReason.BUDGET


def _record_every(cfg: Config, num_records: int) -> Config:
    """``cfg`` logging every ``total updates / num_records`` updates, and never by time."""
    steps_per_update = cfg.run.unroll_length * cfg.run.num_envs
    updates = math.ceil(cfg.run.total_env_steps / steps_per_update)
    run = dataclasses.replace(
        cfg.run, log_every_updates=max(updates // num_records, 1), log_every_s=1e9
    )
    return dataclasses.replace(cfg, run=run)
