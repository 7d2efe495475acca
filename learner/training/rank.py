"""One data-parallel learner process: :class:`RankLearner`, a plain class that
:class:`~learner.training.group.LearnerGroup` runs as a Ray actor, one per rank.

A rank joins a torch.distributed process group (gloo on CPU, NCCL on CUDA), builds its
updater with :class:`~impala_frodo.rule.data_parallel.AllReduceGradients` as the gradient
reducer, and takes each update on its own shard: the unrolls it is handed references to,
fetched from the object store and stacked on its device here. What it reports of an
update is a :class:`RankResult`.

Restarts (:mod:`learner.training.restarts`): a rank keeps a copy of its state as it was at
the start of its update in progress (:meth:`RankLearner.clean_state`), because a rank whose
peer is lost may have applied part of that update before its collective failed; it can
leave its process group and join a new one, and a collective that fails in an update is
reported as a :class:`CollectiveError` (the peer's loss, not this rank's bug).

Unrolls lost with their node: a rank's fetch is bounded (:data:`FETCH_SHARE` of the
group's deadline), and where the group asks (``agree``: some shard is fetched from another
node) the ranks agree, in one all-reduce of a flag before the update's first collective,
that every rank has its shard. If one has not (an object lost with its node or its owner,
or not fetched in time), no rank applies the update (its state is left as it was, to the
bit) and every rank answers that it was dropped (:attr:`RankResult.dropped`; the rank
that could not fetch says why in :attr:`RankResult.lost`): a loss of data, not of a
learner, so nothing is restarted. Where every shard is on its rank's own node (one
machine), no object can be lost without the rank's node, so there is no agreement: it
cost +16-25 % of a Catch update on the loaded 2-core machine.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import numpy as np
import ray
import torch
import torch.distributed as dist
from ray.exceptions import GetTimeoutError, ObjectLostError, OwnerDiedError
from torch import Tensor

from impala_frodo.acting.trajectory import Trajectory
from impala_frodo.envs.base import GroundTruth
from impala_frodo.networks.weights import pack_params
from impala_frodo.reports.probes import GroundTruthProbe
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.data_parallel import AllReduceGradients
from impala_frodo.rule.metagrad import GradientReducer
from impala_frodo.rule.updater import Updater
from impala_frodo.utils import map_tensors, seed_everything
from learner.cluster.payloads import PackedWeights, packed_payload

#: The Ray concurrency group of the calls that must answer while an update is blocked in
#: a collective (:meth:`RankLearner.pid`: is this rank alive, or frozen?).
CONTROL_GROUP = "control"
#: A rank's fetch of its shard may take this share of the group's deadline
#: (``run.progress_timeout_s``): its peers wait for it in the agreement's all-reduce, whose
#: timeout is the whole deadline, and the update must still be computed within it.
FETCH_SHARE = 0.5


class CollectiveError(RuntimeError):
    """An update failed inside a torch.distributed call: a peer was lost or stopped
    answering; this rank's process and its clean state are intact."""


def _in_collective(error: BaseException) -> bool:
    """``error`` was raised from within torch.distributed (gloo or NCCL)."""
    frames = traceback.extract_tb(error.__traceback__)
    return any(f"torch{os.sep}distributed" in frame.filename for frame in frames)


class UpdaterFactory(Protocol):
    """Builds one learner's updater on its device with its gradient reducer, e.g.
    ``functools.partial(Updater, cfg, obs_shape, num_actions)``. Every rank's process calls
    it, so it must pickle (a module-level class or function, or a partial of one)."""

    def __call__(self, *, device: torch.device, reducer: GradientReducer) -> Updater: ...


@dataclass
class RankResult:
    """What one learner reports of one update."""

    metrics: dict[str, float]
    num_updates: int
    num_meta_updates: int
    update_s: float  # this learner's update (fetching its shard and collectives included)
    collective_s: float  # the forward collectives' share of it
    fetch_s: float  # fetching its shard from the object store
    fetched_bytes: int  # its shard's bytes, fetched by this learner itself
    weights: PackedWeights | None = None  # rank 0's acting weights, when the update publishes
    #: The probe's parts: the learned target's (sum of squared errors, count) on this shard.
    target_error: tuple[float, int] | None = None
    #: A rank could not fetch its shard: no rank took the update (its state is unchanged).
    dropped: bool = False
    #: Why this rank could not fetch its shard (one line), or ``None``.
    lost: str | None = None


def fetch_failure(error: Exception, timeout_s: float) -> str:
    """Why a shard could not be fetched, in a few words."""
    if isinstance(error, GetTimeoutError):
        return f"not fetched within {timeout_s:g} s"
    if isinstance(error, OwnerDiedError):
        return "OwnerDiedError: the process that owned it died"
    return f"{type(error).__name__}: lost from the object store (with its node)"


class RankLearner:
    """One of N data-parallel learners: a plain class, a Ray actor in :class:`LearnerGroup`.
    :meth:`join` makes the process group and the updater (``make_updater``'s, seeded with
    ``seed`` on every rank); torch runs on ``threads`` threads. ``state_observations``:
    every state's observation, for the ground-truth probe (the random walk)."""

    def __init__(
        self,
        make_updater: UpdaterFactory,
        rank: int,
        world_size: int,
        device: str,
        *,
        seed: int,
        threads: int,
        state_observations: np.ndarray | None = None,
    ) -> None:
        self.make_updater, self.seed = make_updater, seed
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.updater: Updater | None = None
        self.reducer: AllReduceGradients | None = None
        self.probe = None
        if state_observations is not None:
            self.probe = GroundTruthProbe(state_observations, self.device)
        #: The rank's state at the start of the update in progress (or the last one).
        self._snapshot: dict[str, Any] | None = None
        self._in_update = False  # an update began and has not completed
        self._meta: dict[str, Any] | None = None  # eta's part of the state, copied
        self.fetch_timeout_s: float | None = None  # set by :meth:`join`
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

    @ray.method(concurrency_group=CONTROL_GROUP)
    def pid(self) -> int:
        """This process's id; answered beside an update blocked in a collective, so a rank
        that does not answer is frozen or gone."""
        return os.getpid()

    def join(self, init_method: str, timeout_s: float, state: dict[str, Any] | None = None) -> str:
        """Join the process group (its collectives time out after ``timeout_s``); build the
        updater, identical on every rank, unless this rank has one (a survivor rejoining);
        take ``state`` (a :meth:`rank_state`) if given. Returns this rank's node (one call
        for all three: a restart waits on each round trip)."""
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend,
            init_method=init_method,
            rank=self.rank,
            world_size=self.world_size,
            timeout=timedelta(seconds=timeout_s),
        )
        self.fetch_timeout_s = FETCH_SHARE * timeout_s
        if self.updater is None:
            seed_everything(self.seed)
            self.reducer = AllReduceGradients()
            self.updater = self.make_updater(device=self.device, reducer=self.reducer)
        if state is not None:
            self.restore(state)
        return self.node_id()

    def leave(self) -> None:
        """Leave the process group (one whose peer is lost), to join a new one."""
        if dist.is_initialized():
            dist.destroy_process_group()

    def broadcast_from_rank_0(self) -> None:
        """Every rank starts from rank 0's theta, optimizer state and eta (the seeds agree
        already; this holds whatever a device's initialisation does)."""
        updater = self.updater
        tensors = [*updater.params.values(), *updater.opt_state.values(), *updater.eta.values()]
        with torch.no_grad():
            for tensor in tensors:
                dist.broadcast(tensor.data, src=0)

    def update(
        self,
        unrolls: list[ray.ObjectRef],
        *,
        truth: GroundTruth | None = None,
        publish: bool = False,
        agree: bool = True,
    ) -> RankResult:
        r"""One update on this learner's shard: the unrolls behind ``unrolls`` (references,
        nested in a list so that Ray does not fetch them first), fetched and stacked here.
        Rank 0 also measures the probe's value error (given ``truth``) and, when the update
        ``publish``\ es, returns its new acting weights packed. A collective that fails is a
        :class:`CollectiveError`; the state before the update stays in :meth:`clean_state`.
        With ``agree`` (every rank is given the same), where a rank could not fetch its
        shard no rank takes the update (:attr:`RankResult.dropped`); without, a fetch that
        fails is this rank's error."""
        self._snapshot, self._in_update = self.rank_state(), True
        try:
            result = self._update(unrolls, truth, publish, agree)
        except Exception as error:
            if _in_collective(error):
                raise CollectiveError(f"rank {self.rank}: {error}") from error
            raise
        self._in_update = False
        return result

    def _update(
        self, unrolls: list[ray.ObjectRef], truth: GroundTruth | None, publish: bool, agree: bool
    ) -> RankResult:
        start = time.perf_counter()
        trajectories, lost = self._fetch(unrolls)
        fetch_s = time.perf_counter() - start
        if lost is not None and not agree:
            raise RuntimeError(f"rank {self.rank} could not fetch its shard: {lost}")
        if agree and not self._every_rank_fetched(lost is None):
            return RankResult(
                metrics={},
                num_updates=self.updater.num_updates,
                num_meta_updates=self.updater.num_meta_updates,
                update_s=time.perf_counter() - start,
                collective_s=self.reducer.take_collective_s(),
                fetch_s=fetch_s,
                fetched_bytes=0,
                dropped=True,
                lost=lost,
            )
        batch = Batch.from_trajectories(trajectories, self.device)
        metrics = self.updater.update(batch)
        target_error = None
        if self.probe is not None and truth is not None:
            if self.rank == 0:
                metrics |= self.probe.value_metrics(self.updater, truth)
            if self.updater.last_target is not None:
                target_error = self.probe.target_error(self.updater.last_target, batch, truth)
        return RankResult(
            metrics=metrics,
            num_updates=self.updater.num_updates,
            num_meta_updates=self.updater.num_meta_updates,
            update_s=time.perf_counter() - start,
            collective_s=self.reducer.take_collective_s(),
            fetch_s=fetch_s,
            fetched_bytes=sum(tr.nbytes for tr in trajectories),
            weights=self.acting_weights() if publish and self.rank == 0 else None,
            target_error=target_error,
        )

    def _fetch(self, unrolls: list[ray.ObjectRef]) -> tuple[list[Trajectory], str | None]:
        """This rank's shard, fetched within :attr:`fetch_timeout_s`; or why it could not
        be (an object lost with its node or its owner, or too slow)."""
        try:
            return ray.get(unrolls, timeout=self.fetch_timeout_s), None
        except (ObjectLostError, GetTimeoutError) as error:
            return [], fetch_failure(error, self.fetch_timeout_s)

    def _every_rank_fetched(self, fetched: bool) -> bool:
        """Whether every rank has its shard: one all-reduce of a flag, before the update's
        first collective (its time counts in ``collective_s``)."""
        start = time.perf_counter()
        missing = torch.tensor([0.0 if fetched else 1.0], device=self.device)
        dist.all_reduce(missing, op=dist.ReduceOp.SUM)
        self.reducer.collective_s += time.perf_counter() - start
        return float(missing.item()) == 0.0

    def acting_params(self) -> dict[str, Tensor]:
        return self.updater.acting_params("cpu")

    def acting_weights(self) -> PackedWeights:
        """The acting weights packed as the actors take them (by value, or a reference)."""
        return packed_payload(pack_params(self.updater.acting_params("cpu")))

    def values(self, obs: Tensor) -> Tensor:
        return self.updater.values(obs).cpu()

    def state_dict(self) -> dict[str, Any]:
        """The updater's state on CPU (the driver that saves it may have no GPU)."""
        return map_tensors(torch.Tensor.cpu, self.updater.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updater.load_state_dict(state)
        self._meta = None

    # ------------------------------------------------------------- restarts
    def rank_state(self) -> dict[str, Any]:
        """What every rank must share to take the same updates, on this device: the
        updater's state (:meth:`~impala_frodo.rule.updater.Updater.snapshot`: theta and
        its optimizer's state by reference, eta's part copied once per meta step), the
        meta-gradient's column sampler's generator and the count of windows ended (which
        of them take a meta step, ``meta.every``: a new rank must agree with the
        survivors). Cheap enough for every update."""
        updater = self.updater
        if self._meta is None or self._meta["num_meta_updates"] != updater.num_meta_updates:
            self._meta = updater.schedule.state_dict()
        return {
            "updater": updater.snapshot(self._meta),
            "sampler": updater.schedule.sampler.generator.get_state(),
            "windows_ended": updater.schedule.windows_ended,  # the phase of meta.every
        }

    def clean_state(self, num_updates: int) -> dict[str, Any]:
        """This rank's state at the end of update ``num_updates`` (the driver's last
        completed one): its current state if no update has begun since, else the copy
        taken when the next began, whether or not this rank finished it."""
        if not self._in_update and self.updater.num_updates == num_updates:
            state = self.rank_state()
        elif self._snapshot is not None and self._snapshot["updater"]["num_updates"] == num_updates:
            state = self._snapshot
        else:
            raise RuntimeError(f"rank {self.rank} has no clean state of update {num_updates}")
        return map_tensors(torch.Tensor.cpu, state)

    def restore(self, state: dict[str, Any]) -> None:
        """Take a rank's :meth:`rank_state` (a survivor's clean one, after a restart), or a
        checkpoint's updater state as ``{"updater": ...}`` (every rank restarted: no
        ``sampler`` nor ``windows_ended``, each new rank keeps the generator it was seeded
        with and counts windows from 0, as after a resume)."""
        self.updater.load_state_dict(state["updater"])
        if "sampler" in state:
            self.updater.schedule.sampler.generator.set_state(state["sampler"])
            self.updater.schedule.windows_ended = int(state["windows_ended"])
        self._snapshot, self._in_update, self._meta = None, False, None
