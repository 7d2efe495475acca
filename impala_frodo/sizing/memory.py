"""The memory a run's sizes ask for, process by process: estimates made before a run starts.

:func:`run_memory` counts the bytes of the arrays and tensors that the config's sizes
make certain: the envs' observations and an unroll in each actor, the global batch, the
queue of unrolls, and the networks' parameters with what an update keeps beside them. It
is a lower bound on each process's resident memory, which adds the interpreter and its
libraries (torch alone), activations, an env's internals and Ray's buffers (docs/faults.md
sets the estimate beside measured sizes). So a run it says cannot fit cannot, and is
refused up front (:mod:`learner.app.preflight`) instead of failing inside an actor.

- **An actor** (B = ``run.envs_per_actor`` envs, T = ``run.unroll_length``): its envs'
  current observations, an unroll ``[T, B]`` and mu's weights.
- **A learner** (B_l = ``run.batches_per_update`` actor batches of B envs): its batch as
  float32 tensors; theta, its gradient and RMSProp's state; eta, its gradient and Adam's
  two moments. An inline meta-gradient keeps a chain of M inner updates and the outer one:
  M + 1 batches and M more versions of theta. IMPALA, and a learner whose meta step is
  async, keep one batch.
- **The driver**: the unrolls queued for the learners (``run.queue_size``), and the learner
  when it runs there (one learner), else the global batch it deals to the learners.
- **The async meta-learner**: one window, M + 1 batches, and the chain's versions of theta.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from impala_frodo.config.schema import Config
from impala_frodo.sizing.parameters import agent_parameters, meta_parameters

#: Bytes of a float32, the learner's and mu's number type.
FLOAT_BYTES = 4
#: Bytes per step of an env besides the observation: the action (int64), the reward, the
#: continue flag and log mu (float32 each).
STEP_BYTES = 8 + 4 + 4 + 4


@dataclass(frozen=True)
class RunMemory:
    """Estimated bytes of each part of a run (lower bounds)."""

    actor: int  # one rollout actor
    queue: int  # the unrolls queued for the learners, in the driver
    learner: int  # one learner: in the driver with one learner, else each of the N ranks
    global_batch: int  # the batch the driver deals to N > 1 learners; 0 with one learner
    meta_learner: int  # the async meta-learner's process; 0 without one
    agent_parameters: int
    meta_parameters: int

    @property
    def driver(self) -> int:
        """The driver process: the queue, and the learner or the batch dealt to the learners."""
        return self.queue + (self.learner if self.global_batch == 0 else self.global_batch)

    def on_one_machine(self, cfg: Config) -> int:
        """Every process of the run on one machine (a local Ray instance)."""
        ranks = cfg.run.num_learners if cfg.run.num_learners > 1 else 0
        actors = cfg.run.num_actors * self.actor
        return self.driver + actors + ranks * self.learner + self.meta_learner


def unroll_bytes(steps: int, envs: int, obs_shape: Sequence[int], obs_itemsize: int) -> int:
    """An unroll's arrays as an actor makes them: ``[T + 1, B]`` observations, ``[T, B]`` rest."""
    return (steps + 1) * envs * math.prod(obs_shape) * obs_itemsize + steps * envs * STEP_BYTES


def batch_bytes(steps: int, envs: int, obs_shape: Sequence[int]) -> int:
    """A learner's batch of ``[T, B]`` steps as tensors (observations as float32)."""
    return unroll_bytes(steps, envs, obs_shape, FLOAT_BYTES)


def chain_length(cfg: Config, *, meta_learner: bool = False) -> int:
    """The batches an update keeps: M + 1 for a meta-gradient chain (inline, or the async
    meta-learner's), 1 for IMPALA and for a learner whose meta step is async."""
    if not cfg.is_meta or (cfg.meta.mode == "async" and not meta_learner):
        return 1
    return cfg.meta.num_inner_steps + 1


def update_bytes(cfg: Config, obs_shape: Sequence[int], agent: int, meta: int, chain: int) -> int:
    """One update keeping ``chain`` batches of ``run.batches_per_update`` actor batches, with
    ``agent`` and ``meta`` parameters (theta, its gradient, RMSProp's state and the chain's
    other versions of theta; eta, its gradient and Adam's two moments)."""
    envs = cfg.run.batches_per_update * cfg.run.envs_per_actor
    parameters = (3 + chain - 1) * agent + 4 * meta
    return chain * batch_bytes(cfg.run.unroll_length, envs, obs_shape) + parameters * FLOAT_BYTES


def run_memory(
    cfg: Config, obs_shape: Sequence[int], obs_itemsize: int, num_actions: int
) -> RunMemory:
    """The estimate for ``cfg`` on an env of ``obs_shape`` observations (``obs_itemsize``
    bytes an element, as the env stores them) and ``num_actions`` actions."""
    run = cfg.run
    agent = agent_parameters(obs_shape, num_actions, cfg.agent)
    meta = meta_parameters(cfg, obs_shape, num_actions)
    unroll = unroll_bytes(run.unroll_length, run.envs_per_actor, obs_shape, obs_itemsize)
    observations = run.envs_per_actor * math.prod(obs_shape) * obs_itemsize
    global_batch = batch_bytes(
        run.unroll_length, run.trajectories_per_update * run.envs_per_actor, obs_shape
    )
    is_async = cfg.is_meta and cfg.meta.mode == "async"
    meta_chain = chain_length(cfg, meta_learner=True)
    return RunMemory(
        actor=observations + unroll + agent * FLOAT_BYTES,
        queue=run.queue_size * unroll,
        learner=update_bytes(cfg, obs_shape, agent, meta, chain_length(cfg)),
        global_batch=global_batch if run.num_learners > 1 else 0,
        meta_learner=update_bytes(cfg, obs_shape, agent, meta, meta_chain) if is_async else 0,
        agent_parameters=agent,
        meta_parameters=meta,
    )
