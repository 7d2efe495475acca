"""Rollout actors: a plain :class:`RolloutActor` and its Ray wrapper, built at the edge.

:class:`RolloutActor` knows nothing about Ray: it owns a batched env, a
:class:`~impala_frodo.networks.numpy_policy.NumpyPolicy` (mu) and a
:class:`~impala_frodo.acting.unroll.Unroller`, and turns ``unroll(version, params)``
calls into :class:`~impala_frodo.acting.trajectory.Trajectory` batches stamped with
the policy version it acted with and its actor id. Tests drive it directly.

:func:`make_ray_actor_class` wraps it with ``ray.remote`` so that the CPU
share (``run.actor_num_cpus``) and the restart policy come from the config.

Weights: the learner offers each published ``(version, params)`` to every
actor with ``offer_weights``, which the Ray wrapper runs in a concurrency
group of its own, so the offer lands while an unroll is running. The actor
takes the newest offer at the start of its next unroll. It never waits for
the learner: mu is stale by design (by about one unroll plus the queue) and
the learner's V-trace corrects for it. ``unroll(version, params)`` also takes
weights directly (a freshly started or restarted actor gets them that way).

An actor takes what it acts with, not the run's whole config: a :class:`RolloutSpec` (the
env and agent sections, the envs per actor, the unroll length, numpy or torch acting),
plain values that pickle into a Ray actor.

An actor process never imports torch: mu acts with numpy from the packed weight vector,
laid out as the ``layout`` it was built with (:func:`~impala_frodo.networks.weights.param_layout` of
the learner's agent). That saves each actor process torch's import at start-up
(docs/results-distributed.md, "Measurements behind the code").
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from impala_frodo.acting.trajectory import Trajectory, UnrollSummary
from impala_frodo.acting.unroll import Unroller
from impala_frodo.config.schema import Config
from impala_frodo.config.sections import AgentConfig, EnvConfig
from impala_frodo.envs import make_batched_env
from impala_frodo.networks.numpy_policy import NumpyPolicy
from impala_frodo.networks.torch_policy import make_policy
from impala_frodo.networks.weights import ParamLayout, pack_params

#: Weights packed into one vector by
#: :func:`~impala_frodo.networks.weights.pack_params`, or a dict of arrays (or detached
#: tensors) by parameter name, packed on arrival.
Weights = Mapping[str, Any] | np.ndarray

#: Ray restarts a crashed actor process this many times before it is dead for good.
DEFAULT_MAX_RESTARTS = 3


@dataclass(frozen=True)
class EnvSpec:
    """What the learner needs to build the agent: the observation shape and action count."""

    observation_shape: tuple[int, ...]
    num_actions: int
    #: ``[S, *obs_shape]`` observations of every state, for value evaluation (random walk).
    state_observations: np.ndarray | None = None
    #: Bytes of an observation element as the env stores it (1 for byte images).
    observation_itemsize: int = 4


def env_spec(cfg: Config) -> EnvSpec:
    """Build one env of ``cfg.env`` to read its spec (cheap; raises ``ValueError`` if unknown)."""
    env = make_batched_env(cfg.env.id, 1, seed=0, **cfg.env.kwargs)
    try:
        states = env.state_observations()
        if states is not None:
            states = np.asarray(states, dtype=np.float32)
        itemsize = np.dtype(env.observation_dtype).itemsize
        return EnvSpec(tuple(env.observation_shape), int(env.num_actions), states, itemsize)
    finally:
        env.close()


@dataclass(frozen=True)
class RolloutSpec:
    """What a :class:`RolloutActor` acts in and with: ``num_envs`` envs of ``env``, mu with
    ``agent``'s torso acting with ``inference`` (``run.actor_inference``), ``unroll_length``
    steps per unroll."""

    env: EnvConfig
    agent: AgentConfig
    num_envs: int
    unroll_length: int
    inference: str = "auto"

    @classmethod
    def from_config(cls, cfg: Config, *, num_envs: int) -> RolloutSpec:
        """``cfg``'s env, agent, unroll length and actor inference, in ``num_envs`` envs."""
        return cls(cfg.env, cfg.agent, num_envs, cfg.run.unroll_length, cfg.run.actor_inference)


def actor_seed(base_seed: int, actor_id: int, resume_count: int = 0, replacement: int = 0) -> int:
    """A distinct, reproducible seed per run seed, actor slot, resume of the run (0 for its
    first session) and replacement of the slot's actor (0 for the first one)."""
    incarnation = resume_count * 1000 + replacement
    return int(np.random.SeedSequence([base_seed, actor_id, incarnation]).generate_state(1)[0])


class NoWeightsError(RuntimeError):
    """An unroll asked of an actor that has no weights yet: a process Ray restarted that no
    failed call showed (the pool calls it again, with the weights)."""


def ray_node_id() -> str:
    """The Ray node this process runs on; "" outside a Ray worker (ray is not imported
    for it: the plain class runs without Ray)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return ""
    return ray.get_runtime_context().get_node_id()


class RolloutActor:
    """Acts with a (stale) copy of the agent in ``spec.num_envs`` envs, T steps a call.

    ``seed`` seeds its envs, mu's sampling and the unroller (the pool's are
    :func:`actor_seed`); ``actor_id`` stamps its trajectories.
    """

    def __init__(
        self, spec: RolloutSpec, layout: ParamLayout, *, seed: int, actor_id: int = 0
    ) -> None:
        self.spec = spec
        self.actor_id = actor_id
        self.env = make_batched_env(spec.env.id, spec.num_envs, seed=seed, **spec.env.kwargs)
        # numpy, or torch for IMPALA's ResNet
        # (run.actor_inference; impala_frodo.networks.torch_policy)
        self.policy: NumpyPolicy = make_policy(
            layout,
            spec.agent,
            self.env.observation_shape,
            self.env.num_actions,
            seed=seed,
            obs_scale=self.env.observation_scale,
            inference=spec.inference,
        )
        self.unroller = Unroller(self.env, spec.unroll_length, seed=seed)
        self.num_unrolls = 0
        #: The Ray node it runs on ("" outside Ray), stamped on each unroll's summary so
        #: the driver can hand the unroll to a learner there.
        self.node_id = ray_node_id()
        # The newest weights offered while an unroll runs (another thread, under Ray):
        # taken at the start of the next unroll, so mu is at most one unroll stale.
        self._offer_lock = threading.Lock()
        self._offered: tuple[int, Weights] | None = None

    @property
    def version(self) -> int:
        """The policy version mu acts with (-1 before any weights arrived)."""
        return self.policy.version

    def set_weights(self, version: int, params: Weights) -> bool:
        """Take ``params`` (packed, or a dict by name) if ``version`` is newer."""
        if version <= self.policy.version:
            return False
        self.policy.load(params if isinstance(params, np.ndarray) else pack_params(params), version)
        return True

    def offer_weights(self, version: int, params: Weights) -> None:
        """Keep ``params`` for the next unroll if newer than anything held; returns at once.

        Safe to call from another thread while :meth:`unroll` runs (the Ray wrapper
        runs it in its own concurrency group): it only swaps a reference under a lock.
        """
        with self._offer_lock:
            held = self.policy.version if self._offered is None else self._offered[0]
            if version > held:
                self._offered = (version, params)

    def _take_offered(self) -> None:
        with self._offer_lock:
            offered, self._offered = self._offered, None
        if offered is not None:
            self.set_weights(*offered)

    def unroll(self, version: int | None = None, params: Weights | None = None) -> Trajectory:
        """Unroll T steps in every env, after taking the newest weights offered or given."""
        self._take_offered()
        if params is not None and version is not None:
            self.set_weights(version, params)
        if self.policy.version < 0:
            raise NoWeightsError("RolloutActor.unroll before any weights were set")
        trajectory = self.unroller.unroll(self.policy, self.policy.version)
        trajectory.actor_id = self.actor_id
        trajectory.actor_pid = os.getpid()
        self.num_unrolls += 1
        return trajectory

    def unroll_parts(
        self, version: int | None = None, params: Weights | None = None
    ) -> tuple[UnrollSummary, Trajectory]:
        """:meth:`unroll`, returned as ``(summary, trajectory)``: the pool calls it with two
        returns, so the driver reads the small summary and the trajectory stays in the
        object store until a learner fetches it."""
        trajectory = self.unroll(version, params)
        return UnrollSummary.of(trajectory, self.node_id), trajectory

    def pid(self) -> int:
        """The process id (fault tests kill it)."""
        return os.getpid()

    def close(self) -> None:
        self.env.close()


#: The Ray concurrency group of :meth:`RolloutActor.offer_weights`: one thread of its own,
#: so a weight offer lands while an unroll runs. Everything else runs in the default
#: group, one call at a time, in submission order.
WEIGHTS_GROUP = "weights"


def make_ray_actor_class(num_cpus: float = 0.5, max_restarts: int = DEFAULT_MAX_RESTARTS) -> Any:
    """``ray.remote(RolloutActor)`` with this CPU share and restart budget.

    ``max_task_retries=0``: an unroll in flight when the process dies fails
    (the learner sees ``RayActorError``, logs it and submits again; Ray has
    restarted the process by then). Retrying silently would hide deaths.
    Call ``offer_weights`` with ``.options(concurrency_group=WEIGHTS_GROUP)`` and
    ``unroll_parts`` with ``.options(num_returns=2)``.
    """
    import ray  # at the edge only: the plain class above runs without Ray

    return ray.remote(
        num_cpus=num_cpus,
        max_restarts=max_restarts,
        max_task_retries=0,
        concurrency_groups={WEIGHTS_GROUP: 1},
    )(RolloutActor)
