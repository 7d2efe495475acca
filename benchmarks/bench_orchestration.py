"""The orchestration under synthetic load: driver CPU, bytes and overhead per update.

Prints one JSON object. The real driver loop (``learner.training.loop.TrainingLoop``), the
real ``Learner`` and, for N > 1, the real ``LearnerGroup`` with its ``ActorPool``, wired as
``learner/app/driver.py`` wires them (no run directory, logger or checkpoints), against:

- **synthetic actors**: a :class:`~actors.rollout.RolloutActor` whose ``unroll`` returns a
  trajectory made once per actor in its constructor (the run's shape, e.g. Catch 32 envs x
  T 20 float32 observations, or MinAtar's uint8 [10, 10, 4]): no env cost. They take
  offered weights as every actor does. Injected by replacing
  ``learner.cluster.actor_pool.make_ray_actor_class``;
- **learners** whose update is either real (the project's ``Updater``, as the driver builds
  it) or a stand-in (:class:`StandInUpdater`) that sleeps ``--learner-ms`` per update;
- **a loopback cluster** (``ray.cluster_utils.Cluster``): a head node with no CPUs (the
  driver's) and ``--nodes`` worker nodes with logical CPUs; actors are spread over them,
  and N learners strictly one per node where N <= ``--nodes`` (``run.learner_placement``).

Per configuration (workload x N learners x actors), after ``--warmup`` updates, the
steady part is cut into ``--windows`` windows of ``--updates`` updates; each figure is the
median over the windows:

- ``driver_cpu_ms_per_update``: ``time.process_time()`` of the driver (all its threads:
  Ray's too; for N = 1 the in-process learner's compute as well);
- ``driver_bytes_per_update``: bytes the driver's Ray worker deserialised (``ray.get``)
  plus serialised (call arguments, ``ray.put``), counted in Ray's own (de)serialisation
  calls in the driver (:class:`DriverBytes`), and ``bytes_by_kind``: the same split by
  the type of the object (``in Trajectory``: unrolls fetched, by the in-process learner;
  ``in UnrollSummary``: what the driver reads of each unroll; ``out Batch``: shards shipped
  to the learners, before they fetched their own; ``in RankResult``: the learners' replies,
  rank 0's packed weights in them when it publishes; ``out ndarray``: the packed weights
  offered to the actors);
- ``overhead_ms_per_update``: wall time per update minus the learner's compute
  (``learner_ms_per_update``: the slowest rank's update as it reports it, or the
  in-process update's time for N = 1);
- ``env_steps_per_s``: N T B per update over the wall time (with the stand-in, the
  ceiling the orchestration allows for that learner time), and ``take_ms_per_update``:
  the driver's time inside ``ActorPool.take`` (waiting for unrolls included), and
  ``learner_fetch_ms_per_update``: the slowest learner's fetch of its own shard (N > 1;
  not counted in ``learner_ms_per_update``).

A global deadline (``--deadline-s``) ends the process (exit 3), whose Ray nodes go with
it; every Ray wait inside has ``run.progress_timeout_s``. docs/results-distributed.md
("The orchestration under synthetic load") has the figures and checks docs/design.md's
scaling model against them.

    python benchmarks/bench_orchestration.py --quick
    python benchmarks/bench_orchestration.py --learners 1 2 4 8 --actors 2 8 32 --nodes 8
    python benchmarks/bench_orchestration.py --workloads minatar --learners 1 2 4 8 --actors 8
    python benchmarks/bench_orchestration.py --real impala --learners 1 2 --actors 8
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from actors.rollout import (
    DEFAULT_MAX_RESTARTS,
    WEIGHTS_GROUP,
    RolloutActor,
    RolloutSpec,
    env_spec,
)
from impala_frodo.acting.trajectory import Trajectory
from impala_frodo.config.presets import load_preset
from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.config.sections import AgentConfig
from impala_frodo.envs.minatar_envs import WORKER_ENV
from impala_frodo.networks.agent import AgentNet, agent_layout
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.metagrad import LOCAL, GradientReducer
from impala_frodo.rule.updater import Updater
from learner.cluster import actor_pool
from learner.cluster.actor_pool import ActorPool
from learner.control.progress import Progress
from learner.control.signals import StopSignal
from learner.training.group import LearnerGroup
from learner.training.learner import Learner
from learner.training.loop import LoopContext, TrainingLoop

REPO = Path(__file__).resolve().parents[1]
#: workload -> (preset stem, envs per actor, unroll length T)
WORKLOADS: dict[str, tuple[str, int, int]] = {
    "catch": ("catch", 32, 20),
    "minatar": ("minatar-breakout", 32, 20),
}
#: Every worker node of the loopback cluster has this many logical CPUs.
NODE_CPUS = 8
NODE_OBJECT_STORE_BYTES = 100 * 1024**2
#: How actors are placed on the loopback cluster ("SPREAD": over the worker nodes, so
#: their unrolls leave another node's object store, as on a real cluster).
ACTOR_SCHEDULING = "SPREAD"


# ------------------------------------------------------------------ synthetic actors
def synthetic_trajectory(
    obs_shape: tuple[int, ...],
    obs_dtype: np.dtype,
    num_actions: int,
    unroll_length: int,
    num_envs: int,
    *,
    obs_scale: float = 1.0,
    seed: int = 0,
) -> Trajectory:
    """A ``[T, B]`` trajectory of the given shape with random content (no truncations)."""
    rng = np.random.default_rng(seed)
    t, b = unroll_length, num_envs
    obs = rng.integers(0, 2, size=(t + 1, b, *obs_shape)).astype(obs_dtype)
    continues = (rng.random((t, b)) > 0.05).astype(np.float32)
    return Trajectory(
        obs=obs,
        actions=rng.integers(0, num_actions, size=(t, b)).astype(np.int64),
        rewards=(rng.random((t, b)) < 0.05).astype(np.float32),
        continues=continues,
        behaviour_log_probs=np.full((t, b), -math.log(num_actions), np.float32),
        obs_scale=obs_scale,
    )


class SyntheticActor(RolloutActor):
    """A rollout actor whose unroll is a trajectory made once, in its constructor.

    Only ``__init__`` and ``unroll`` differ from :class:`RolloutActor`: weights are offered,
    taken and counted as there; the trajectory is stamped with the version acted with, the
    actor's id and its process.
    """

    def __init__(self, spec: RolloutSpec, layout: Any, *, seed: int, actor_id: int = 0) -> None:
        super().__init__(spec, layout, seed=seed, actor_id=actor_id)
        env = self.env
        self.premade = synthetic_trajectory(
            tuple(env.observation_shape),
            np.dtype(env.observation_dtype),
            env.num_actions,
            spec.unroll_length,
            spec.num_envs,
            obs_scale=env.observation_scale,
            seed=seed,
        )

    def unroll(self, version: int | None = None, params: Any = None) -> Trajectory:
        self._take_offered()
        if params is not None and version is not None:
            self.set_weights(version, params)
        if self.policy.version < 0:
            raise RuntimeError("SyntheticActor.unroll before any weights were set")
        self.num_unrolls += 1
        return dataclasses.replace(
            self.premade,
            policy_version=self.policy.version,
            actor_id=self.actor_id,
            actor_pid=os.getpid(),
        )


def synthetic_actor_class(num_cpus: float = 0.5, max_restarts: int = DEFAULT_MAX_RESTARTS) -> Any:
    """:func:`actors.rollout.make_ray_actor_class` for :class:`SyntheticActor`."""
    return ray.remote(
        num_cpus=num_cpus,
        max_restarts=max_restarts,
        max_task_retries=0,
        concurrency_groups={WEIGHTS_GROUP: 1},
        scheduling_strategy=ACTOR_SCHEDULING,
    )(SyntheticActor)


@contextlib.contextmanager
def synthetic_actors() -> Iterator[None]:
    """The actor pool makes :class:`SyntheticActor` s while inside."""
    saved = actor_pool.make_ray_actor_class
    actor_pool.make_ray_actor_class = synthetic_actor_class
    try:
        yield
    finally:
        actor_pool.make_ray_actor_class = saved


# ------------------------------------------------------------------ stand-in learners
class StandInSchedule:
    """What a rank's restart bookkeeping reads of a schedule (its state, the column
    sampler's generator, the windows ended): a stand-in has no meta-learning state to keep."""

    def __init__(self) -> None:
        self.sampler = types.SimpleNamespace(generator=torch.Generator())
        self.windows_ended = 0

    def state_dict(self) -> dict[str, Any]:
        return {"num_meta_updates": 0}


class StandInUpdater:
    """What ``Learner`` and ``LearnerGroup`` use of an ``Updater``, whose update sleeps
    ``update_s`` and changes nothing: the agent's real parameters (the actors' layout), no
    optimizer state, no eta."""

    def __init__(
        self,
        agent: AgentConfig,
        obs_shape: tuple[int, ...],
        num_actions: int,
        update_s: float,
        *,
        device: torch.device | str = "cpu",
        reducer: GradientReducer = LOCAL,
    ) -> None:
        self.device = torch.device(device)
        net = AgentNet.from_config(obs_shape, num_actions, agent).to(self.device)
        self.params = {k: v.detach().clone() for k, v in net.named_parameters()}
        self.opt_state: dict[str, torch.Tensor] = {}
        self.eta: dict[str, torch.Tensor] = {}
        self.update_s = update_s
        self.num_updates = 0
        self.num_meta_updates = 0
        self.last_target: torch.Tensor | None = None
        self.schedule = StandInSchedule()

    def update(self, batch: Batch) -> dict[str, float]:
        time.sleep(self.update_s)
        self.num_updates += 1
        return {"loss/inner": 0.0}

    def acting_params(self, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        return {k: v.to(device or self.device) for k, v in self.params.items()}

    def values(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.zeros(obs.shape[0])

    def state_dict(self) -> dict[str, Any]:
        return {
            "params": self.acting_params("cpu"),
            "opt_state": {},
            "num_updates": self.num_updates,
            "num_meta_updates": self.num_meta_updates,
        }

    def snapshot(self, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """The state a rank keeps at each update's start (for a restart)."""
        return self.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.params = {k: v.to(self.device) for k, v in state["params"].items()}
        self.num_updates = int(state["num_updates"])
        self.num_meta_updates = int(state["num_meta_updates"])


class TimedUpdater:
    """An updater (or learner group) whose updates' compute time is summed: the slowest
    rank's ``perf/learner_update_s`` less the slowest fetch of its shard where it reports
    them (``fetch_s``: those fetches), else the call's time."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.compute_s = 0.0
        self.fetch_s = 0.0

    def update(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        start = time.perf_counter()
        metrics = self.inner.update(*args, **kwargs)
        fetch = metrics.get("perf/learner_fetch_s", 0.0)
        self.compute_s += metrics.get("perf/learner_update_s", time.perf_counter() - start)
        self.compute_s -= fetch
        self.fetch_s += fetch
        return metrics

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# ------------------------------------------------------------------ bytes
class DriverBytes:
    """Bytes this process's Ray worker deserialises and serialises, by the object's type.

    Counted in Ray's own calls (``Worker.deserialize_objects``: the data of every object
    ``ray.get`` returns; ``SerializationContext.serialize``: every call argument and
    ``ray.put``), so nothing the driver moves is missed; the hooks are removed on exit.
    """

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def _add(self, key: str, size: int) -> None:
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + size

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    @contextlib.contextmanager
    def counting(self) -> Iterator[DriverBytes]:
        from ray._private import worker as ray_worker
        from ray._private.serialization import SerializationContext

        driver = ray_worker.global_worker
        deserialize, serialize = driver.deserialize_objects, SerializationContext.serialize

        def counted_deserialize(serialized_objects, object_refs, *args, **kwargs):
            values = deserialize(serialized_objects, object_refs, *args, **kwargs)
            for (data, *_), value in zip(serialized_objects, values, strict=True):
                self._add(f"in {type(value).__name__}", 0 if data is None else len(data))
            return values

        def counted_serialize(context, value):
            serialized = serialize(context, value)
            self._add(f"out {type(value).__name__}", serialized.total_bytes)
            return serialized

        driver.deserialize_objects = counted_deserialize
        SerializationContext.serialize = counted_serialize
        try:
            yield self
        finally:
            SerializationContext.serialize = serialize
            del driver.deserialize_objects  # the bound method again


# ------------------------------------------------------------------ one configuration
@dataclasses.dataclass
class Setting:
    """One configuration: the workload, N learners, A actors, the learner's update."""

    workload: str
    learners: int
    actors: int
    learner_ms: float | None  # None: the real Updater
    algo: str = "impala"
    nodes: int = 1  # nodes the learners may spread over
    #: Logical CPUs of an actor and of a learner process (they share the cores anyway).
    actor_cpus: float = 0.25
    learner_cpus: float = 0.5
    #: The workload's envs per actor and unroll length, unless given here.
    envs_per_actor: int | None = None
    unroll_length: int | None = None
    warmup: int = 10
    updates: int = 20
    windows: int = 3
    progress_timeout_s: float = 120.0

    def config(self) -> Config:
        stem, envs, unroll = WORKLOADS[self.workload]
        envs, unroll = self.envs_per_actor or envs, self.unroll_length or unroll
        total = self.warmup + self.windows * self.updates
        placement = "strict-spread" if 1 < self.learners <= self.nodes else "pack"
        return set_dotted(
            load_preset(f"{stem}-{self.algo}"),
            {
                "run.device": "cpu",
                "run.num_actors": self.actors,
                "run.envs_per_actor": envs,
                "run.unroll_length": unroll,
                "run.num_learners": self.learners,
                "run.batches_per_update": 1,
                "run.actor_num_cpus": self.actor_cpus,
                "run.learner_num_cpus": self.learner_cpus,
                "run.learner_placement": placement,
                "run.total_env_steps": total * self.learners * envs * unroll,
                "run.checkpoint_every_s": 1e9,
                "run.progress_timeout_s": self.progress_timeout_s,
            },
        )


def _updater(setting: Setting, cfg: Config, obs_shape: tuple, num_actions: int) -> Any:
    """The updater the driver would give its ``Learner`` (stand-in or real), N = 1 or N."""
    if setting.learner_ms is None:
        make = partial(Updater, cfg, obs_shape, num_actions)
    else:
        make = partial(StandInUpdater, cfg.agent, obs_shape, num_actions, setting.learner_ms / 1e3)
    if setting.learners == 1:
        return make(device=torch.device("cpu"), reducer=LOCAL)
    return LearnerGroup(cfg.run, make)


class Samples:
    """After every update: wall clock, driver CPU, bytes so far, compute and take time."""

    def __init__(self, counter: DriverBytes, updater: TimedUpdater, take_s: list[float]) -> None:
        self.counter, self.updater, self.take_s = counter, updater, take_s
        self.rows: list[tuple[float, float, dict[str, int], float, float, float]] = []

    def __call__(self, _context: LoopContext | None = None) -> None:
        self.rows.append(
            (
                time.perf_counter(),
                time.process_time(),
                self.counter.snapshot(),
                self.updater.compute_s,
                self.take_s[0],
                self.updater.fetch_s,
            )
        )


def _timed_take(pool: ActorPool, take_s: list[float]) -> None:
    """``pool.take`` with its time summed into ``take_s[0]``."""
    take = pool.take

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return take(*args, **kwargs)
        finally:
            take_s[0] += time.perf_counter() - start

    pool.take = timed


def _pickle_by_value() -> None:
    """Ray's workers get this module's classes by value, as they cannot import benchmarks/
    (run as a script, ``__main__``, the module is pickled by value anyway)."""
    if __name__ != "__main__" and __name__ in sys.modules:
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def run_setting(setting: Setting) -> dict[str, Any]:
    """Run one configuration against the Ray this process is connected to; its row."""
    _pickle_by_value()
    cfg = setting.config()
    spec = env_spec(cfg)
    obs_shape = tuple(spec.observation_shape)
    layout = agent_layout(obs_shape, spec.num_actions, cfg.agent)
    rollout = RolloutSpec.from_config(cfg, num_envs=cfg.run.envs_per_actor)
    counter, take_s, start = DriverBytes(), [0.0], time.perf_counter()
    with synthetic_actors():
        pool = ActorPool(cfg.run, rollout, layout)
    updater = None
    try:
        updater = TimedUpdater(_updater(setting, cfg, obs_shape, spec.num_actions))
        learner = (
            Learner(cfg, obs_shape, spec.num_actions, group=updater)
            if setting.learners > 1
            else Learner(cfg, obs_shape, spec.num_actions, updater=updater)
        )
        samples = Samples(counter, updater, take_s)
        _timed_take(pool, take_s)
        loop = TrainingLoop(
            learner,
            pool,
            StopSignal(),
            Progress("off", cfg.run.total_env_steps),
            trajectories_per_update=cfg.run.trajectories_per_update,
            progress_timeout_s=cfg.run.progress_timeout_s,
            callback=samples,
        )
        with counter.counting():
            reason = loop.run()
        if len(samples.rows) < setting.warmup + setting.windows * setting.updates:
            raise RuntimeError(f"the loop ended early ({reason}) after {len(samples.rows)}")
        row = _figures(setting, cfg, samples)
        dtype = np.uint8 if spec.observation_itemsize == 1 else np.float32
        one = synthetic_trajectory(
            obs_shape, dtype, spec.num_actions, cfg.run.unroll_length, cfg.run.envs_per_actor
        )
        row["trajectory_array_bytes"] = one.nbytes  # its arrays: the wire less pickle's framing
        nodes = getattr(updater.inner, "node_ids", None)
        row["learner_nodes"] = len(set(nodes)) if nodes else 1
        row["session_s"] = round(time.perf_counter() - start, 1)
        return row
    finally:
        pool.shutdown()
        if updater is not None and isinstance(updater.inner, LearnerGroup):
            updater.inner.shutdown()


def _figures(setting: Setting, cfg: Config, samples: Samples) -> dict[str, Any]:
    """The medians over the windows of the steady part."""
    steps = cfg.run.trajectories_per_update * cfg.run.envs_per_actor * cfg.run.unroll_length
    windows: list[dict[str, Any]] = []
    for w in range(setting.windows):
        first = samples.rows[setting.warmup - 1 + w * setting.updates]
        last = samples.rows[setting.warmup - 1 + (w + 1) * setting.updates]
        n = setting.updates
        wall, cpu = (last[0] - first[0]) / n, (last[1] - first[1]) / n
        compute, take = (last[3] - first[3]) / n, (last[4] - first[4]) / n
        fetch = (last[5] - first[5]) / n
        kinds = {k: (v - first[2].get(k, 0)) / n for k, v in last[2].items()}
        windows.append(
            {
                "wall_ms_per_update": 1e3 * wall,
                "driver_cpu_ms_per_update": 1e3 * cpu,
                "learner_ms_per_update": 1e3 * compute,
                "overhead_ms_per_update": 1e3 * (wall - compute),
                "take_ms_per_update": 1e3 * take,
                "learner_fetch_ms_per_update": 1e3 * fetch,
                "env_steps_per_s": steps / wall,
                "driver_bytes_per_update": sum(kinds.values()),
                "bytes_by_kind": kinds,
            }
        )
    row: dict[str, Any] = {
        "workload": setting.workload,
        "learner": "real " + setting.algo
        if setting.learner_ms is None
        else f"stand-in {setting.learner_ms:g} ms",
        "learners": setting.learners,
        "actors": setting.actors,
        "envs_per_actor": cfg.run.envs_per_actor,
        "unroll_length": cfg.run.unroll_length,
        "env_steps_per_update": steps,
        "placement": cfg.run.learner_placement,
    }
    for key in windows[0]:
        if key == "bytes_by_kind":
            names = sorted({k for w in windows for k in w[key]})
            row[key] = {
                k: round(statistics.median(w[key].get(k, 0) for w in windows)) for k in names
            }
        else:
            row[key] = round(statistics.median(w[key] for w in windows), 2)
    kinds = row["bytes_by_kind"]
    row["data_bytes_per_update"] = kinds.get("in Trajectory", 0) + kinds.get("out Batch", 0)
    if setting.learner_ms:
        row["ideal_env_steps_per_s"] = round(steps / (setting.learner_ms / 1e3), 1)
    return row


# ------------------------------------------------------------------ the cluster
@contextlib.contextmanager
def loopback_cluster(nodes: int, inline_bytes: int | None) -> Iterator[Any]:
    """A head node with no CPUs (the driver's) and ``nodes`` worker nodes of
    :data:`NODE_CPUS` logical CPUs each, on this machine; the driver connected."""
    from ray.cluster_utils import Cluster

    system = {} if inline_bytes is None else {"max_direct_call_object_size": inline_bytes}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "include_dashboard": False,
            "object_store_memory": NODE_OBJECT_STORE_BYTES,
            "_system_config": system,
        },
    )
    try:
        for _ in range(nodes):
            cluster.add_node(num_cpus=NODE_CPUS, object_store_memory=NODE_OBJECT_STORE_BYTES)
        cluster.wait_for_nodes(timeout=120)
        ray.init(
            address=cluster.address,
            logging_level=logging.WARNING,
            runtime_env={"env_vars": {WORKER_ENV: "1"}},
        )
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def _deadline(seconds: float) -> threading.Timer:
    """Ends the process (exit 3) after ``seconds``: its Ray nodes' reaper takes them along."""

    def expire() -> None:
        print(f"bench_orchestration: past its deadline of {seconds:g} s", file=sys.stderr)
        os._exit(3)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer


def machine() -> dict[str, Any]:
    """The commit, the machine and its load, for the report."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    return {
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__,
        "ray": ray.__version__,
        "python": platform.python_version(),
    }


def measure(settings: list[Setting], notes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every setting against the Ray this process is connected to: the report."""
    report: dict[str, Any] = {"benchmark": "orchestration", **machine(), **(notes or {})}
    rows = []
    for setting in settings:
        rows.append(run_setting(setting))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    report["rows"] = rows
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=["catch"], choices=list(WORKLOADS))
    parser.add_argument("--learners", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--actors", nargs="+", type=int, default=[2, 8, 32])
    parser.add_argument("--learner-ms", type=float, default=20.0, help="the stand-in's update")
    parser.add_argument("--real", metavar="ALGO", help="the real Updater of ALGO instead")
    parser.add_argument("--nodes", type=int, default=8, help="worker nodes of the cluster")
    parser.add_argument("--warmup", type=int, default=10, help="updates not measured")
    parser.add_argument("--updates", type=int, default=20, help="updates per window")
    parser.add_argument("--windows", type=int, default=3, help="windows (median over them)")
    parser.add_argument(
        "--inline-bytes", type=int, help="max_direct_call_object_size (default: Ray's)"
    )
    parser.add_argument("--deadline-s", type=float, default=3600.0)
    parser.add_argument("--quick", action="store_true", help="N 1, 2; 2 actors; 2 nodes")
    args = parser.parse_args()
    if args.quick:
        args.learners, args.actors, args.nodes = [1, 2], [2], 2
        args.warmup, args.updates, args.windows = 3, 5, 2
    _deadline(args.deadline_s)
    torch.set_num_threads(1)  # one torch thread per learner, as each rank has
    settings = [
        Setting(
            workload,
            learners,
            actors,
            None if args.real else args.learner_ms,
            algo=args.real or "impala",
            nodes=args.nodes,
            warmup=args.warmup,
            updates=args.updates,
            windows=args.windows,
        )
        for workload in args.workloads
        for learners in args.learners
        for actors in args.actors
    ]
    notes: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if k != "quick"}}
    # The config refuses more learners than actors (every learner needs an actor batch).
    notes["skipped"] = [
        f"{s.workload}: {s.learners} learners, {s.actors} actors"
        for s in settings
        if s.learners > s.actors
    ]
    settings = [s for s in settings if s.learners <= s.actors]
    with loopback_cluster(args.nodes, args.inline_bytes):
        report = measure(settings, notes)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
