"""N data-parallel learner processes as Ray actors, updated as one (``run.num_learners``).

Each learner is a :class:`RankLearner`: an :class:`~impala_frodo.rule.updater.Updater` whose
gradient reducer is :class:`~impala_frodo.rule.data_parallel.AllReduceGradients`, one rank of
a torch.distributed group (gloo on CPU, NCCL on CUDA). The driver's
:class:`~learner.training.learner.Learner` holds a :class:`LearnerGroup` where it would hold an
``Updater``: one update splits the global batch (``run.batches_per_update`` actor batches
per learner) into equal shards along B, one per learner; every learner takes the same
update on its shard, the collectives keeping theta, the optimizers' states and eta equal
on every rank (exact: ``tests/test_data_parallel.py``). Rank 0 is the reference copy:
its parameters are the weights published to the actors, its metrics are logged and its
state is the checkpoint, which a resume loads into every rank.

Placement: a placement group of one bundle per learner (``run.learner_num_cpus`` CPUs,
and one GPU each where the run uses GPUs), packed or spread over nodes
(``run.learner_placement``). Nothing waits unboundedly: placement, every call and every
collective have ``run.progress_timeout_s``; a learner that dies or times out ends the run
(:class:`LearnerFailure`, exit 1) with the last good checkpoint kept.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import ray
import torch
import torch.distributed as dist
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from torch import Tensor

from impala_frodo.config.sections import RunConfig
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.data_parallel import AllReduceGradients
from impala_frodo.rule.metagrad import GradientReducer
from impala_frodo.rule.updater import NonFiniteLossError, Updater
from impala_frodo.utils import first_line, map_tensors, seed_everything
from learner.cluster import local_instance

#: ``run.learner_placement`` -> Ray's placement-group strategy.
PLACEMENT_STRATEGIES: Mapping[str, str] = {
    "pack": "PACK",
    "spread": "SPREAD",
    "strict-spread": "STRICT_SPREAD",
}


class UpdaterFactory(Protocol):
    """Builds one learner's updater on its device with its gradient reducer, e.g.
    ``functools.partial(Updater, cfg, obs_shape, num_actions)``. Every rank's process calls
    it, so it must pickle (a module-level class or function, or a partial of one)."""

    def __call__(self, *, device: torch.device, reducer: GradientReducer) -> Updater: ...


class LearnerFailure(RuntimeError):
    """A learner process died, failed, or did not answer within the deadline."""


@dataclass
class RankResult:
    """What one learner reports of one update."""

    metrics: dict[str, float]
    target: Tensor | None  # the learned target on this learner's shard [T, B / N]
    num_updates: int
    num_meta_updates: int
    update_s: float  # this learner's update, collectives included
    collective_s: float  # the forward collectives' share of it


class RankLearner:
    """One of N data-parallel learners: a plain class, a Ray actor in :class:`LearnerGroup`.
    :meth:`join` makes the process group and the updater (``make_updater``'s, seeded with
    ``seed`` on every rank); torch runs on ``threads`` threads."""

    def __init__(
        self,
        make_updater: UpdaterFactory,
        rank: int,
        world_size: int,
        device: str,
        *,
        seed: int,
        threads: int,
    ) -> None:
        self.make_updater, self.seed = make_updater, seed
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.updater: Updater | None = None
        self.reducer: AllReduceGradients | None = None
        torch.set_num_threads(threads)

    @staticmethod
    def rendezvous_address() -> str:
        """``tcp://host:port`` on this node for the group to meet at (called on rank 0)."""
        host = ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        return f"tcp://{host}:{port}"

    @staticmethod
    def node_id() -> str:
        return ray.get_runtime_context().get_node_id()

    def join(self, init_method: str, timeout_s: float) -> None:
        """Join the process group (its collectives time out after ``timeout_s``); build the
        updater, identical on every rank."""
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend,
            init_method=init_method,
            rank=self.rank,
            world_size=self.world_size,
            timeout=timedelta(seconds=timeout_s),
        )
        seed_everything(self.seed)
        self.reducer = AllReduceGradients()
        self.updater = self.make_updater(device=self.device, reducer=self.reducer)
        self._broadcast_from_rank_0()

    def _broadcast_from_rank_0(self) -> None:
        """Every rank starts from rank 0's theta, optimizer state and eta (the seeds agree
        already; this holds whatever a device's initialisation does)."""
        updater = self.updater
        tensors = [*updater.params.values(), *updater.opt_state.values(), *updater.eta.values()]
        with torch.no_grad():
            for tensor in tensors:
                dist.broadcast(tensor.data, src=0)

    def update(self, batch: Batch) -> RankResult:
        start = time.perf_counter()
        metrics = self.updater.update(batch.to(self.device))
        target = self.updater.last_target
        return RankResult(
            metrics=metrics,
            target=None if target is None else target.cpu(),
            num_updates=self.updater.num_updates,
            num_meta_updates=self.updater.num_meta_updates,
            update_s=time.perf_counter() - start,
            collective_s=self.reducer.take_collective_s(),
        )

    def acting_params(self) -> dict[str, Tensor]:
        return self.updater.acting_params("cpu")

    def values(self, obs: Tensor) -> Tensor:
        return self.updater.values(obs).cpu()

    def state_dict(self) -> dict[str, Any]:
        """The updater's state on CPU (the driver that saves it may have no GPU)."""
        return map_tensors(torch.Tensor.cpu, self.updater.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updater.load_state_dict(state)


class LearnerGroup:
    """N :class:`RankLearner` actors in a placement group, driven as one updater.

    It offers what :class:`~learner.training.learner.Learner` uses of an ``Updater``: ``update``,
    the counts, ``acting_params``, ``values``, ``last_target``, ``params`` (shapes) and
    the state dict, all of rank 0 (the ranks agree), and ``perf/*`` timings of the ranks.

    ``run``: the learners' number, CPUs, placement, seed and deadline; ``make_updater``:
    each rank's updater.
    """

    def __init__(
        self, run: RunConfig, make_updater: UpdaterFactory, *, use_gpus: bool = False
    ) -> None:
        self.size = run.num_learners
        self.timeout_s = run.progress_timeout_s
        gpus = 1 if use_gpus else 0
        bundle = {"CPU": run.learner_num_cpus} | ({"GPU": gpus} if gpus else {})
        self.placement = placement_group(
            [dict(bundle) for _ in range(self.size)],
            strategy=PLACEMENT_STRATEGIES[run.learner_placement],
        )
        self.ranks: list[Any] = []
        self.num_updates = 0
        self.num_meta_updates = 0
        self.last_target: Tensor | None = None
        try:
            self._get(self.placement.ready(), f"placing {self.size} learners ({bundle} each)")
            remote = ray.remote(RankLearner)
            self.ranks = [
                remote.options(
                    num_cpus=run.learner_num_cpus,
                    num_gpus=gpus,
                    max_restarts=0,
                    scheduling_strategy=PlacementGroupSchedulingStrategy(
                        self.placement, placement_group_bundle_index=rank
                    ),
                ).remote(
                    make_updater,
                    rank,
                    self.size,
                    "cuda" if gpus else "cpu",
                    seed=run.seed,
                    threads=max(1, int(run.learner_num_cpus)),
                )
                for rank in range(self.size)
            ]
            address = self._get(self.ranks[0].rendezvous_address.remote(), "the rendezvous")
            self._get(
                [rank.join.remote(address, self.timeout_s) for rank in self.ranks],
                "the learners joining their process group",
            )
            self.node_ids: list[str] = self._get(
                [rank.node_id.remote() for rank in self.ranks], "the learners' nodes"
            )
            self.params = self.acting_params()
        except BaseException:
            self.shutdown()
            raise

    def _get(self, refs: Any, what: str) -> Any:
        """``ray.get`` within the deadline. Results are taken as they come, so a learner
        that fails is seen at once (not after its peers' collectives time out): a dead,
        failing or silent learner is a :class:`LearnerFailure`, a non-finite loss on any
        learner a :class:`~impala_frodo.rule.updater.NonFiniteLossError`."""
        pending = list(refs) if isinstance(refs, list) else [refs]
        deadline = time.monotonic() + self.timeout_s
        try:
            while pending:
                left = max(0.0, deadline - time.monotonic())
                ready, pending = ray.wait(pending, num_returns=1, timeout=left)
                if not ready:
                    raise GetTimeoutError()
                ray.get(ready)  # a failure raises now
            return ray.get(refs)
        except GetTimeoutError:
            raise LearnerFailure(
                f"{what}: no answer within run.progress_timeout_s = {self.timeout_s:g} s"
            ) from None
        except RayActorError as e:
            raise LearnerFailure(f"{what}: a learner process died ({first_line(e)})") from None
        except RayTaskError as e:
            if isinstance(e.cause, NonFiniteLossError):
                raise NonFiniteLossError(str(e.cause)) from None
            raise LearnerFailure(f"{what}: a learner failed: {first_line(e.cause)}") from None

    def update(self, batch: Batch) -> dict[str, float]:
        """One update of every learner, each on its shard of ``batch``; rank 0's metrics
        with the ranks' timings (``perf/learner_update_s``: the slowest rank's;
        ``perf/collective_s``: rank 0's forward collectives; ``perf/learner_call_s``:
        the round trip seen from here, shipping the shards included)."""
        start = time.perf_counter()
        refs = [
            rank.update.remote(batch.shard(index, self.size))
            for index, rank in enumerate(self.ranks)
        ]
        results: list[RankResult] = self._get(refs, f"update {self.num_updates + 1}")
        first = results[0]
        self.num_updates, self.num_meta_updates = first.num_updates, first.num_meta_updates
        targets = [r.target for r in results]
        self.last_target = None if targets[0] is None else torch.cat(targets, dim=1)
        timings = {
            "perf/learner_update_s": max(r.update_s for r in results),
            "perf/collective_s": first.collective_s,
            "perf/learner_call_s": time.perf_counter() - start,
        }
        return first.metrics | timings

    def acting_params(self, device: torch.device | str | None = None) -> dict[str, Tensor]:
        params = self._get(self.ranks[0].acting_params.remote(), "rank 0's weights")
        return {k: v.to(device or "cpu") for k, v in params.items()}

    def values(self, obs: Tensor) -> Tensor:
        return self._get(self.ranks[0].values.remote(obs.cpu()), "rank 0's values")

    def state_dict(self) -> dict[str, Any]:
        return self._get(self.ranks[0].state_dict.remote(), "rank 0's state")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Every rank from the same state (rank 0's checkpoint)."""
        self._get([rank.load_state_dict.remote(state) for rank in self.ranks], "loading state")
        self.num_updates = int(state["num_updates"])
        self.num_meta_updates = int(state["num_meta_updates"])

    def shutdown(self) -> None:
        """Stop the learners (one stuck in a collective too) and free their placement."""
        for rank in self.ranks:
            ray.kill(rank, no_restart=True)
        self.ranks = []
        if not local_instance.hit():  # else Ray would wait on its GCS: 60 s, then exit 1
            remove_placement_group(self.placement)
