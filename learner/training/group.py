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

Data: the driver never holds a trajectory. It reads the unrolls' summaries, decides which
unrolls make which learner's shard (:func:`assign_shards`: whole unrolls, those made on a
learner's own node to that learner first) and sends each learner ObjectRefs; each learner
fetches and stacks its shard on its own device. An update that publishes has rank 0's new
weights in its reply, packed, by value or as a reference put in the object store once
(:func:`~learner.cluster.payloads.packed_payload`): no extra round trip. The ground-truth
probe (the random walk) is measured in the learners too and rides on the same replies.

Placement: a placement group of one bundle per learner (``run.learner_num_cpus`` CPUs,
and one GPU each where the run uses GPUs), packed or spread over nodes
(``run.learner_placement``). Nothing waits unboundedly: placement, every call and every
collective have ``run.progress_timeout_s``.

Faults: a learner that dies, stops answering or whose collective fails in an update is
replaced (:mod:`learner.training.restarts`): the update is dropped
(:class:`~learner.training.learner.UpdateDropped`), a new rank starts in the lost one's
bundle, the group meets again and every rank takes a survivor's state at the end of the
last completed update. With no survivor, every rank is restarted and takes the last
checkpoint's state, the update counts going on (:mod:`learner.training.rewind`). Past
``run.max_learner_restarts`` within ``run.restart_window_s``, or with no room for a new
rank, the run stops (:class:`LearnersLost`, exit 1) with a final checkpoint of that state;
with no survivor and no checkpoint yet (or restarts spent), or a learner's own error, it
stops as before (:class:`LearnerFailure`, exit 1), the last good checkpoint kept. A rank
that cannot fetch its shard (unrolls lost with their node) is no learner's loss: every
rank drops the update, state unchanged (:class:`UpdateDropped` with no restart).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import ray
import torch
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from torch import Tensor

from impala_frodo.acting.trajectory import UnrollSource
from impala_frodo.config.sections import RunConfig
from impala_frodo.envs.base import GroundTruth
from impala_frodo.reports.probes import target_rmse
from impala_frodo.rule.updater import NonFiniteLossError
from impala_frodo.utils import first_line
from learner.cluster import local_instance
from learner.cluster.payloads import PackedWeights
from learner.training.learner import UpdateDropped
from learner.training.rank import (
    CONTROL_GROUP,
    CollectiveError,
    RankLearner,
    RankResult,
    UpdaterFactory,
)
from learner.training.restarts import LearnerFailure, Replacements, RestartBudget
from learner.training.rewind import SavedState, no_saved_state

#: ``run.learner_placement`` -> Ray's placement-group strategy.
PLACEMENT_STRATEGIES: Mapping[str, str] = {
    "pack": "PACK",
    "spread": "SPREAD",
    "strict-spread": "STRICT_SPREAD",
}


def assign_shards(
    unroll_nodes: Sequence[str], rank_nodes: Sequence[str], per_rank: int
) -> list[list[int]]:
    """Which unrolls (indices into ``unroll_nodes``) make each rank's shard.

    Every rank gets ``per_rank`` whole unrolls. An unroll goes to a rank on the node whose
    object store holds it where one has room (no copy between nodes), the rest fill the
    other ranks in order; with nothing known of nodes (``""``), or all on one node, rank i
    gets the i-th run of ``per_rank`` unrolls: the split of the concatenated batch along B.
    Within a shard the unrolls keep their order.
    """
    if len(unroll_nodes) != per_rank * len(rank_nodes):
        raise ValueError(
            f"{len(unroll_nodes)} unrolls for {len(rank_nodes)} learners of {per_rank} each"
        )
    shards: list[list[int]] = [[] for _ in rank_nodes]
    left = []
    for index, node in enumerate(unroll_nodes):
        room = [
            r
            for r, rank_node in enumerate(rank_nodes)
            if node and rank_node == node and len(shards[r]) < per_rank
        ]
        if room:
            shards[room[0]].append(index)
        else:
            left.append(index)
    for index in left:
        rank = next(r for r, shard in enumerate(shards) if len(shard) < per_rank)
        shards[rank].append(index)
    return [sorted(shard) for shard in shards]


def fetches_from_another_node(
    unroll_nodes: Sequence[str], rank_nodes: Sequence[str], shards: Sequence[Sequence[int]]
) -> bool:
    """Some rank's shard holds an unroll made on another node than the rank's, or on an
    unknown one (``""``): an object that could be lost without the rank (its node lost),
    so the ranks must agree that every fetch worked
    (:meth:`~learner.training.rank.RankLearner.update`'s ``agree``)."""
    return any(
        not unroll_nodes[i] or unroll_nodes[i] != rank_nodes[rank]
        for rank, shard in enumerate(shards)
        for i in shard
    )


class LearnerGroup(Replacements):
    """N :class:`RankLearner` actors in a placement group, driven as one updater.

    It offers what :class:`~learner.training.learner.Learner` uses of an ``Updater`` (the
    counts, ``acting_params``, ``values``, ``params`` (shapes) and the state dict, all of
    rank 0: the ranks agree) and of an
    :class:`~learner.training.learner.UnrollLearner`: ``update`` on unrolls the ranks fetch
    themselves, with ``perf/*`` timings of the ranks, and ``acting_weights``.

    ``run``: the learners' number, CPUs, placement, seed and deadline; ``make_updater``:
    each rank's updater; ``state_observations``: every state's observation, for the
    ground-truth probe.
    """

    def __init__(
        self,
        run: RunConfig,
        make_updater: UpdaterFactory,
        *,
        use_gpus: bool = False,
        state_observations: np.ndarray | None = None,
    ) -> None:
        self.size = run.num_learners
        self.timeout_s = run.progress_timeout_s
        self.strategy = PLACEMENT_STRATEGIES[run.learner_placement]
        gpus = 1 if use_gpus else 0
        bundle = {"CPU": run.learner_num_cpus} | ({"GPU": gpus} if gpus else {})
        self.placement = placement_group([dict(bundle) for _ in range(self.size)], self.strategy)
        self._rank_args = (make_updater, self.size, "cuda" if gpus else "cpu")
        self._rank_kwargs = {
            "seed": run.seed,
            "threads": max(1, int(run.learner_num_cpus)),
            "state_observations": state_observations,
        }
        self._rank_resources = {"num_cpus": run.learner_num_cpus, "num_gpus": gpus}
        self.ranks: list[Any] = []
        self.num_updates = 0
        self.num_meta_updates = 0
        #: ``(version, packed weights)`` from the last update that published.
        self._published: tuple[int, PackedWeights] | None = None
        self.budget = RestartBudget(run.max_learner_restarts, run.restart_window_s)
        self.restarts = 0
        self.last_loss = ""  # what the last restart replaced
        self.last_rewound = 0  # updates the last restart undid (every rank lost)
        self.agreements = 0  # updates whose ranks agreed that every shard was fetched
        #: The last checkpoint's updater state (set by the Learner that saves them).
        self.saved_state: SavedState = no_saved_state
        #: A survivor's clean state, once the group can go on no more (the final checkpoint).
        self._final_state: dict[str, Any] | None = None
        try:
            self._get(self.placement.ready(), f"placing {self.size} learners ({bundle} each)")
            self.ranks = [self._start_rank(rank) for rank in range(self.size)]
            self._meet()
            self._get(
                [rank.broadcast_from_rank_0.remote() for rank in self.ranks],
                "the learners taking rank 0's state",
            )
            self.params = self.acting_params()
        except BaseException:
            self.shutdown()
            raise

    def _start_rank(self, rank: int) -> Any:
        """A new :class:`RankLearner` actor for ``rank``, in the placement group's bundle
        ``rank`` (never restarted by Ray: the group replaces lost ranks itself)."""
        return (
            ray.remote(concurrency_groups={CONTROL_GROUP: 1})(RankLearner)
            .options(
                **self._rank_resources,
                max_restarts=0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    self.placement, placement_group_bundle_index=rank
                ),
            )
            .remote(self._rank_args[0], rank, *self._rank_args[1:], **self._rank_kwargs)
        )

    def _meet(self, address: ray.ObjectRef | None = None, state: Any = None) -> None:
        """Every rank joins one new process group at ``address`` (default: a fresh
        rendezvous on rank 0's node) and takes ``state`` (a rank's state, or a reference
        to one) if given."""
        address = address or self.ranks[0].rendezvous_address.remote()
        address = self._get(address, "the rendezvous")
        self.node_ids: list[str] = self._get(
            [rank.join.remote(address, self.timeout_s, state) for rank in self.ranks],
            "the learners joining their process group",
        )

    def _get(self, refs: Any, what: str) -> Any:
        """``ray.get`` within the deadline. Results are taken as they come, so a learner
        that fails is seen at once (not after its peers' collectives time out): a dead,
        failing or silent learner is a :class:`LearnerFailure`, a non-finite loss on any
        learner a :class:`~impala_frodo.rule.updater.NonFiniteLossError`."""
        pending = list(refs) if isinstance(refs, list) else [refs]
        deadline = time.monotonic() + self.timeout_s
        results = {}
        try:
            while pending:
                left = max(0.0, deadline - time.monotonic())
                ready, pending = ray.wait(pending, num_returns=1, timeout=left)
                if not ready:
                    raise GetTimeoutError()
                (ref,) = ready
                results[ref] = ray.get(ref)  # a failure raises now; each reply read once
            return [results[ref] for ref in refs] if isinstance(refs, list) else results[refs]
        except GetTimeoutError:
            raise LearnerFailure(
                f"{what}: no answer within run.progress_timeout_s = {self.timeout_s:g} s",
                restartable=True,
            ) from None
        except RayActorError as e:
            raise LearnerFailure(
                f"{what}: a learner process died ({first_line(e)})", restartable=True
            ) from None
        except RayTaskError as e:
            if isinstance(e.cause, NonFiniteLossError):
                raise NonFiniteLossError(str(e.cause)) from None
            collective = isinstance(e.cause, CollectiveError)
            raise LearnerFailure(
                f"{what}: a learner failed: {first_line(e.cause)}", restartable=collective
            ) from None

    def update(
        self, unrolls: Sequence[UnrollSource], *, truth: GroundTruth | None, publish: bool
    ) -> dict[str, float]:
        """One update of every learner, each on its shard of ``unrolls`` (references: each
        learner fetches its own, see :func:`assign_shards`); rank 0's metrics with the
        ranks' timings (``perf/learner_update_s``: the slowest rank's, its fetch
        included; ``perf/collective_s``: rank 0's forward collectives, the shards'
        agreement included; ``perf/learner_fetch_s``: the slowest fetch;
        ``perf/learner_call_s``: the round trip seen from here) and bytes
        (``perf/driver_unroll_bytes``: none pass through the driver;
        ``perf/learner_fetch_bytes``: what the learners fetched).

        A lost rank is replaced and the update dropped (:class:`UpdateDropped`), or, where
        it cannot be, :class:`LearnersLost`. A shard a rank could not fetch drops the
        update on every rank, nothing restarted (:class:`UpdateDropped`, ``restart_s``
        ``None``)."""
        start = time.perf_counter()
        per_rank, remainder = divmod(len(unrolls), self.size)
        if remainder:
            raise ValueError(f"{len(unrolls)} unrolls do not split among {self.size} learners")
        if self._final_state is not None:
            raise LearnerFailure("the learner group was lost: no more updates")
        nodes = [unroll.summary.node_id for unroll in unrolls]
        shards = assign_shards(nodes, self.node_ids, per_rank)
        agree = fetches_from_another_node(nodes, self.node_ids, shards)
        self.agreements += agree
        refs = [
            rank.update.remote(
                [unrolls[i].ref for i in shard],
                truth=truth,
                publish=publish and index == 0,
                agree=agree,
            )
            for index, (rank, shard) in enumerate(zip(self.ranks, shards, strict=True))
        ]
        try:
            results: list[RankResult] = self._get(refs, f"update {self.num_updates + 1}")
        except LearnerFailure as failure:
            if not failure.restartable:
                raise
            restart_s = self._replace_lost(refs, failure)
            raise UpdateDropped(
                len(unrolls), restart_s, self.last_loss, rewound=self.last_rewound
            ) from None
        if any(result.dropped for result in results):
            raise UpdateDropped(len(unrolls), None, self._unrolls_lost(results, shards))
        return self._merge(results, start)

    def _unrolls_lost(self, results: list[RankResult], shards: list[list[int]]) -> str:
        """``update 7: unrolls lost with their node: unrolls 2, 3 (rank 1's shard): ...``:
        the unrolls a rank could not fetch, and why (a loss of data, not a restart)."""
        parts = [
            f"unrolls {', '.join(map(str, shard))} (rank {rank}'s shard): {result.lost}"
            for rank, (result, shard) in enumerate(zip(results, shards, strict=True))
            if result.lost is not None
        ]
        return f"update {self.num_updates + 1}: unrolls lost with their node: {'; '.join(parts)}"

    def _merge(self, results: list[RankResult], start: float) -> dict[str, float]:
        """Rank 0's metrics with every rank's timings and bytes; the counts and published
        weights taken."""
        first = results[0]
        self.num_updates, self.num_meta_updates = first.num_updates, first.num_meta_updates
        if first.weights is not None:
            self._published = (self.num_updates, first.weights)
        parts = [r.target_error for r in results if r.target_error is not None]
        timings = {
            "perf/learner_update_s": max(r.update_s for r in results),
            "perf/collective_s": first.collective_s,
            "perf/learner_fetch_s": max(r.fetch_s for r in results),
            "perf/learner_call_s": time.perf_counter() - start,
            "perf/driver_unroll_bytes": 0.0,
            "perf/learner_fetch_bytes": float(sum(r.fetched_bytes for r in results)),
        }
        return first.metrics | target_rmse(parts) | timings

    def acting_weights(self) -> PackedWeights:
        """Rank 0's acting weights, packed: those its last publishing reply carried where
        they are current, else fetched (at the start, after a resume)."""
        if self._published is not None and self._published[0] == self.num_updates:
            return self._published[1]
        return self._get(self.ranks[0].acting_weights.remote(), "rank 0's weights")

    def acting_params(self, device: torch.device | str | None = None) -> dict[str, Tensor]:
        params = self._get(self.ranks[0].acting_params.remote(), "rank 0's weights")
        return {k: v.to(device or "cpu") for k, v in params.items()}

    def values(self, obs: Tensor) -> Tensor:
        return self._get(self.ranks[0].values.remote(obs.cpu()), "rank 0's values")

    def state_dict(self) -> dict[str, Any]:
        """Rank 0's state; once the group is lost, a survivor's at the last completed
        update (the final checkpoint's)."""
        if self._final_state is not None:
            return self._final_state
        return self._get(self.ranks[0].state_dict.remote(), "rank 0's state")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Every rank from the same state (rank 0's checkpoint)."""
        self._get([rank.load_state_dict.remote(state) for rank in self.ranks], "loading state")
        self.num_updates = int(state["num_updates"])
        self.num_meta_updates = int(state["num_meta_updates"])
        self._published = None

    def shutdown(self) -> None:
        """Stop the learners (one stuck in a collective too) and free their placement."""
        for rank in self.ranks:
            ray.kill(rank, no_restart=True)
        self.ranks = []
        if not local_instance.hit():  # else Ray would wait on its GCS: 60 s, then exit 1
            remove_placement_group(self.placement)
