"""A run's agent, loaded from its checkpoint, playing episodes: scores and videos.

:func:`load_agent` reads a run directory (its ``config.json``) and a checkpoint (by default
``checkpoints/latest.pt``) into a :class:`TrainedAgent`; :func:`evaluate` plays episodes
with it in the env the run trained on, on seeds training never used
(:func:`~impala_frodo.acting.evaluation.eval_seed`; Catch without its desynchronised first
episodes, :func:`~impala_frodo.envs.batched.evaluation_kwargs`), and :func:`record` films
some.
Bad input (not a run, a missing, corrupt or unfitting checkpoint) is a
:class:`~impala_frodo.config.checks.ConfigError` or
:class:`~impala_frodo.records.checkpoint.CheckpointError`, one line each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from impala_frodo.acting.evaluation import (
    VIDEO,
    ActionChooser,
    Episodes,
    Recording,
    eval_seed,
    greedy,
    play_episodes,
    record_episodes,
    sampled,
)
from impala_frodo.config.checks import ConfigError
from impala_frodo.config.schema import Config
from impala_frodo.envs import make_batched_env
from impala_frodo.envs.batched import evaluation_kwargs
from impala_frodo.envs.rendering import RenderingEnv
from impala_frodo.networks.agent import agent_layout
from impala_frodo.networks.numpy_policy import NumpyPolicy
from impala_frodo.networks.torch_policy import make_policy
from impala_frodo.networks.weights import ParamLayout, pack_params, param_layout
from impala_frodo.records.checkpoint import LATEST, CheckpointError, load_checkpoint
from impala_frodo.records.runlog import CHECKPOINT_DIR, CONFIG_FILE, read_config

#: Envs stepped together when scoring (fewer if fewer episodes are asked for).
MAX_EVAL_ENVS = 32


@dataclass(frozen=True)
class TrainedAgent:
    """A run's config and its agent's weights (packed), as a checkpoint holds them."""

    config: Config
    weights: np.ndarray
    layout: ParamLayout
    env_steps: int
    checkpoint: Path | None = None

    @classmethod
    def from_params(
        cls, config: Config, params: dict[str, Any], env_steps: int = 0
    ) -> TrainedAgent:
        """An agent of ``params`` (by name: tensors or arrays), e.g. a learner's current ones."""
        return cls(config, pack_params(params), param_layout(params), env_steps)

    def policy(self, obs_shape: tuple[int, ...], obs_scale: float, seed: int) -> NumpyPolicy:
        """The agent as an acting policy (numpy, or torch for IMPALA's ResNet)."""
        cfg = self.config
        policy = make_policy(
            self.layout,
            cfg.agent,
            obs_shape,
            _num_actions(self.layout),
            seed=seed,
            obs_scale=obs_scale,
            inference=cfg.run.actor_inference,
        )
        policy.load(self.weights, version=0)
        return policy


def load_agent(run_dir: str | Path, checkpoint: str | Path | None = None) -> TrainedAgent:
    """The agent of ``run_dir`` from ``checkpoint`` (default: its ``latest.pt``)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        what = "does not exist" if not run_dir.exists() else f"has no {CONFIG_FILE}"
        raise ConfigError(f"{str(run_dir)!r} is not a run directory: it {what}")
    cfg = read_config(run_dir)
    path = Path(checkpoint) if checkpoint is not None else run_dir / CHECKPOINT_DIR / LATEST
    if checkpoint is None and not path.is_file():
        raise CheckpointError(f"run {str(run_dir)!r} has no checkpoint yet ({path} is missing)")
    state = load_checkpoint(path)
    try:
        params = state["updater"]["params"]
        env_steps = int(state["counters"]["env_steps"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{str(path)!r} holds no agent weights") from None
    layout = param_layout(params)
    spec = make_batched_env(cfg.env.id, 1, seed=0, **cfg.env.kwargs)
    try:
        expected = agent_layout(spec.observation_shape, spec.num_actions, cfg.agent)
    finally:
        spec.close()
    if tuple(layout) != tuple(expected):
        raise CheckpointError(
            f"{str(path)!r} does not fit the agent of {str(run_dir / CONFIG_FILE)!r} "
            "(its parameters have other names or shapes)"
        )
    return TrainedAgent(cfg, pack_params(params), layout, env_steps, path)


def chooser(agent: TrainedAgent, env: Any, *, greedy_actions: bool, seed: int) -> ActionChooser:
    """The agent's actions in ``env``: the most likely, or sampled as in training."""
    policy = agent.policy(tuple(env.observation_shape), env.observation_scale, seed)
    return greedy(policy) if greedy_actions else sampled(policy)


def evaluate(
    agent: TrainedAgent,
    episodes: int,
    *,
    seed: int = 0,
    greedy_actions: bool = False,
    timeout_s: float = math.inf,
) -> Episodes:
    """``episodes`` episodes of the agent in its run's env, on evaluation seed ``seed``."""
    cfg = agent.config
    env_seed = eval_seed(cfg.run.seed, seed)
    kwargs = evaluation_kwargs(cfg.env.id, cfg.env.kwargs)
    env = make_batched_env(cfg.env.id, min(episodes, MAX_EVAL_ENVS), seed=env_seed, **kwargs)
    try:
        act = chooser(agent, env, greedy_actions=greedy_actions, seed=env_seed)
        return play_episodes(env, act, episodes, seed=env_seed, timeout_s=timeout_s)
    finally:
        env.close()


def record(
    agent: TrainedAgent,
    episodes: int,
    *,
    seed: int = 0,
    greedy_actions: bool = False,
    max_frames: int = 2_000,
    timeout_s: float = math.inf,
) -> Recording:
    """Frames of ``episodes`` episodes of the agent (on seeds of their own, not the scored
    episodes'), at most ``max_frames``."""
    cfg = agent.config
    env_seed = eval_seed(cfg.run.seed, seed, VIDEO)
    with RenderingEnv(cfg.env.id, **evaluation_kwargs(cfg.env.id, cfg.env.kwargs)) as env:
        act = chooser(agent, env, greedy_actions=greedy_actions, seed=env_seed)
        return record_episodes(
            env, act, episodes, seed=env_seed, max_frames=max_frames, timeout_s=timeout_s
        )


def _num_actions(layout: ParamLayout) -> int:
    return int(dict(layout)["policy.bias"][0])
