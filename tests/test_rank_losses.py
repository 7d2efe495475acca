"""What data-parallel learners survive beyond one lost rank (issue 33).

- Unrolls lost with their node: a rank that cannot fetch its shard (an object whose owner
  died, or one not there within the fetch's bound) makes every rank drop the update, to
  the bit, with no restart; the next update goes on.
- Every rank lost at once: new ranks take the last checkpoint's state, the update and
  meta-step counts going on (the policy version never goes back); with no checkpoint yet
  the run ends, saying so.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from functools import partial
from types import SimpleNamespace

import pytest
import ray

from actors.rollout import env_spec
from impala_frodo.acting.trajectory import Trajectory, UnrollSummary
from impala_frodo.records.checkpoint import CheckpointManager, load_checkpoint
from impala_frodo.records.runlog import read_metrics
from impala_frodo.rule.updater import Updater
from learner.app.driver import train
from learner.control.exit_codes import ExitCode
from learner.training.group import LearnerGroup, fetches_from_another_node
from learner.training.learner import Learner, UpdateDropped
from learner.training.rank import RankLearner
from learner.training.restarts import LearnerFailure
from learner.training.rewind import rewound_state
from tests.test_data_out_of_driver import RefOnly, two_learners, unrolls
from tests.test_learner_group import group_cfg, options
from tests.test_rank_restarts import _alive, assert_same_state, rank_states

CATCH = {"run.envs_per_actor": 8, "run.unroll_length": 10}


class Elsewhere:
    """An unroll whose trajectory ``ref`` a rank cannot fetch."""

    def __init__(self, trajectory: Trajectory, ref: ray.ObjectRef) -> None:
        self.summary = UnrollSummary.of(trajectory)
        self.ref = ref


@ray.remote(num_cpus=0)
class Owner:
    """Puts objects it owns; killed, they are lost (as an unroll on a lost node)."""

    def put(self, trajectory: Trajectory) -> list[ray.ObjectRef]:
        return [ray.put(trajectory)]

    def never(self) -> None:
        time.sleep(3600)


def owned_by_a_dead_actor(trajectory: Trajectory) -> Elsewhere:
    owner = Owner.remote()
    (ref,) = ray.get(owner.put.remote(trajectory), timeout=60)
    ray.kill(owner, no_restart=True)
    deadline = time.monotonic() + 60.0
    while True:  # until the owner's death is known (about 1 s): the driver cannot fetch it
        try:
            ray.get(ref, timeout=10)
        except ray.exceptions.OwnerDiedError:
            return Elsewhere(trajectory, ref)
        assert time.monotonic() < deadline, "an object whose owner was killed is still there"
        time.sleep(0.2)


def pids(group: LearnerGroup) -> list[int]:
    return ray.get([rank.pid.remote() for rank in group.ranks], timeout=60)


def make_group(cfg) -> LearnerGroup:
    spec = env_spec(cfg)
    return LearnerGroup(cfg.run, partial(Updater, cfg, spec.observation_shape, spec.num_actions))


# ------------------------------------------------------------------ no Ray
def test_a_dropped_update_without_a_restart_counts_its_unrolls_and_no_restart(tmp_path):
    cfg = two_learners("catch-impala", **CATCH)
    spec = env_spec(cfg)
    reason = "update 1: unrolls lost with their node: unrolls 2, 3 (rank 1's shard): lost"

    class Dropping:
        params, num_updates, num_meta_updates = {}, 0, 0

        def update(self, unrolls, *, truth, publish):
            raise UpdateDropped(len(unrolls), None, reason)

    learner = Learner(cfg, spec.observation_shape, spec.num_actions, group=Dropping())
    batch = [SimpleNamespace(summary=UnrollSummary.of(t)) for t in unrolls(cfg, 1)[0]]
    assert learner.update(batch) == {}
    counters = learner.books.counters
    assert (counters.dropped_unrolls, counters.learner_restarts, counters.updates) == (4, 0, 0)
    assert counters.env_steps == 0 and counters.rewound_updates == 0


def test_a_rewound_state_keeps_the_counts_and_refuses_a_checkpoint_from_later():
    saved = {"params": {}, "num_updates": 3, "num_meta_updates": 1, "meta_net": None}
    state = rewound_state(saved, 5, 2)["updater"]
    assert state == saved | {"num_updates": 5, "num_meta_updates": 2}
    with pytest.raises(ValueError, match="after the group's 2"):
        rewound_state(saved, 2, 1)


def test_a_new_rank_takes_the_survivors_count_of_windows_ended():
    """With ``meta.every`` = 2, which window ends in a meta step is its count's parity: a
    new rank counting from 0 beside survivors at an odd count would take a meta step (its
    collectives) where they do not."""
    cfg = two_learners("catch-frodo", **CATCH, **{"meta.every": 2})
    spec = env_spec(cfg)

    def rank() -> RankLearner:
        learner = RankLearner(None, 0, 2, "cpu", seed=0, threads=1)
        learner.updater = Updater(cfg, spec.observation_shape, spec.num_actions)
        return learner

    survivor, new = rank(), rank()
    survivor.updater.schedule.windows_ended = 3
    assert not survivor.updater.schedule.meta_window()
    new.restore(survivor.clean_state(0))
    assert new.updater.schedule.windows_ended == 3 and not new.updater.schedule.meta_window()


# ----------------------------------------------------------------- Ray
@pytest.mark.ray
def test_ranks_agree_only_where_a_shard_is_fetched_from_another_node():
    shards = [[0, 1], [2, 3]]
    assert not fetches_from_another_node(["a", "a", "b", "b"], ["a", "b"], shards)
    assert fetches_from_another_node(["a", "b", "b", "b"], ["a", "b"], shards)
    assert fetches_from_another_node(["a", "a", "b", ""], ["a", "b"], shards)  # unknown
    assert not fetches_from_another_node(["a"] * 4, ["a", "a"], shards)  # one machine


def test_a_shard_that_cannot_be_fetched_drops_the_update_on_every_rank_and_no_restart(
    ray_local,
):
    """Rank 1's unroll is owned by a dead actor: neither rank takes the update (both at
    update 2, to the bit), no rank is restarted, and the next updates go on, equal. Then
    rank 0's shard holds a reference that never resolves: its fetch is bounded by half of
    ``run.progress_timeout_s``, and the update is dropped the same way."""
    cfg = two_learners("catch-frodo", **CATCH, **{"run.progress_timeout_s": 20.0})
    data = unrolls(cfg, updates=5)
    group = make_group(cfg)
    try:
        for batch in data[:2]:
            group.update([RefOnly(t) for t in batch], truth=None, publish=False)
        before, processes = rank_states(group), pids(group)
        lost = [RefOnly(t) for t in data[2][:3]] + [owned_by_a_dead_actor(data[2][3])]
        start = time.monotonic()
        with pytest.raises(UpdateDropped) as dropped:
            group.update(lost, truth=None, publish=True)
        print(f"an update dropped for an unroll whose owner died: {time.monotonic() - start:.2f} s")
        assert dropped.value.restart_s is None and dropped.value.unrolls == 4
        assert "unrolls lost with their node: unrolls 2, 3 (rank 1's shard): Owner" in str(
            dropped.value
        )
        assert "rank 0" not in str(dropped.value)
        for state in rank_states(group):
            assert_same_state(state, before[0])
        assert_same_state(before[0], before[1])
        assert group.num_updates == 2 and group.restarts == 0 and not group.budget.spent()
        assert pids(group) == processes and not group.budget._times

        never = Owner.remote()
        pending = Elsewhere(data[3][0], never.never.remote())
        with pytest.raises(UpdateDropped) as dropped:
            group.update([pending] + [RefOnly(t) for t in data[3][1:]], truth=None, publish=False)
        ray.kill(never, no_restart=True)
        assert "unrolls 0, 1 (rank 0's shard): not fetched within 10 s" in str(dropped.value)
        for state in rank_states(group):
            assert_same_state(state, before[0])

        for batch in data[2:]:  # update 3 takes a meta step (M = 2)
            group.update([RefOnly(t) for t in batch], truth=None, publish=False)
            first, second = rank_states(group)
            assert_same_state(first, second)
        assert group.num_updates == 5 and group.num_meta_updates == 2
        assert group.restarts == 0 and pids(group) == processes
        # Unrolls of unknown nodes (as above) were agreed on, every update; unrolls made on
        # the ranks' own node (one machine) need no agreement, and train the same.
        assert group.agreements == 7
        (node,) = set(group.node_ids)
        for unroll in (local := [RefOnly(t) for t in data[0]]):
            unroll.summary = dataclasses.replace(unroll.summary, node_id=node)
        group.update(local, truth=None, publish=False)
        assert group.agreements == 7 and group.num_updates == 6
        assert_same_state(*rank_states(group))
    finally:
        group.shutdown()


def _kill_every_rank(group: LearnerGroup) -> list[int]:
    killed = pids(group)
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    for pid in killed:
        assert not _alive(pid, within_s=30.0), f"rank process {pid} survived SIGKILL"
    return killed


def _learner(cfg, tmp_path) -> Learner:
    spec = env_spec(cfg)
    checkpoints = CheckpointManager(tmp_path / "checkpoints")
    group = make_group(cfg)
    return Learner(
        cfg, spec.observation_shape, spec.num_actions, checkpoints=checkpoints, group=group
    )


def _without_counts(state: dict) -> dict:
    return {k: v for k, v in state.items() if k not in ("num_updates", "num_meta_updates")}


@pytest.mark.ray
def test_every_rank_lost_restarts_all_from_the_last_checkpoint_and_the_counts_go_on(
    ray_local, tmp_path
):
    """Checkpoint at update 3 (after a meta step), two more updates (and a meta step),
    then both rank processes SIGKILLed: the next update is dropped, new ranks hold the
    checkpoint's theta, optimizer state, eta and eta's Adam to the bit, the counts stay at
    5 updates and 2 meta steps, one restart counted and 2 updates undone; training goes
    on with the policy version rising."""
    cfg = two_learners("catch-frodo", **CATCH)
    data = unrolls(cfg, updates=8)
    learner = _learner(cfg, tmp_path)
    group = learner.updater
    try:
        for batch in data[:3]:
            learner.update([RefOnly(t) for t in batch])
        learner.checkpoint()
        saved = load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["updater"]
        assert (saved["num_updates"], saved["num_meta_updates"]) == (3, 1)
        for batch in data[3:5]:
            learner.update([RefOnly(t) for t in batch])
        assert learner.behaviour_weights()[0] == 5 and group.num_meta_updates == 2
        killed = _kill_every_rank(group)

        assert learner.update([RefOnly(t) for t in data[5]]) == {}
        counters = learner.books.counters
        assert counters.learner_restarts == 1 and group.restarts == 1
        assert counters.rewound_updates == 2 and counters.dropped_unrolls == 4
        assert counters.updates == group.num_updates == 5 and group.num_meta_updates == 2
        assert set(pids(group)).isdisjoint(killed)
        for state in rank_states(group):
            assert_same_state(_without_counts(state), _without_counts(saved))
            assert (state["num_updates"], state["num_meta_updates"]) == (5, 2)
        assert learner.behaviour_weights()[0] == 5  # the same version, not an older one

        for batch in data[6:]:
            learner.update([RefOnly(t) for t in batch])
            first, second = rank_states(group)
            assert_same_state(first, second)
        assert learner.behaviour_weights()[0] == counters.updates == 7
        record = learner.log()
        assert record["perf/rewound_updates"] == 2.0 and record["perf/learner_restarts"] == 1.0
        print(f"every rank restarted in {record['perf/learner_restart_s']:.2f} s")
    finally:
        group.shutdown()


@pytest.mark.ray
def test_every_rank_lost_before_any_checkpoint_ends_the_run_saying_so(ray_local, tmp_path):
    cfg = two_learners("catch-impala", **CATCH)
    data = unrolls(cfg, updates=2)
    learner = _learner(cfg, tmp_path)
    try:
        learner.update([RefOnly(t) for t in data[0]])
        _kill_every_rank(learner.updater)
        with pytest.raises(LearnerFailure, match="no checkpoint has been saved yet") as failed:
            learner.update([RefOnly(t) for t in data[1]])
        assert "learner ranks 0 (dead), 1 (dead) lost: no learner survived" in str(failed.value)
        assert learner.books.counters.learner_restarts == 0
    finally:
        learner.updater.shutdown()


@pytest.mark.ray
def test_a_run_whose_ranks_are_all_killed_goes_on_from_its_last_checkpoint(ray_local, tmp_path):
    """Both ranks SIGKILLed in a Catch FRODO run once it has a checkpoint: the run reaches
    its budget, one restart counted, the updates since that checkpoint counted as undone,
    and the logged update counts never go back."""
    seen: dict = {}

    def callback(ctx) -> None:
        learner = ctx.learner
        counters = learner.books.counters
        if counters.updates == 4:
            learner.checkpoint()
        if "killed_at" not in seen and counters.updates >= 7:
            saved = load_checkpoint(learner.checkpoints.latest)
            seen["checkpoint_updates"] = saved["counters"]["updates"]
            seen["killed_at"] = counters.updates
            _kill_every_rank(learner.updater)

    cfg = group_cfg(tmp_path, **{"run.total_env_steps": 6_000, "run.checkpoint_every_s": 60.0})
    result = train(cfg, options(callback=callback))
    assert result.exit_code == ExitCode.OK and result.reason == "budget", result.message
    assert seen["checkpoint_updates"] == 4 and seen["killed_at"] == 7, seen
    assert result.learner_restarts == 1
    rewound = seen["killed_at"] - seen["checkpoint_updates"]
    records = read_metrics(result.run_dir / "metrics.jsonl")
    assert records[-1]["perf/rewound_updates"] == float(rewound), (seen, records[-1])
    assert records[-1]["perf/learner_restarts"] == 1.0
    updates = [r["progress/updates"] for r in records]
    assert updates == sorted(updates) and updates[-1] > seen["killed_at"], updates
    saved = load_checkpoint(result.run_dir / "checkpoints" / "latest.pt")
    assert saved["counters"]["rewound_updates"] == rewound
    assert saved["counters"]["updates"] == saved["updater"]["num_updates"]
    restart_s = [r["perf/learner_restart_s"] for r in records if "perf/learner_restart_s" in r]
    assert len(restart_s) == 1 and restart_s[0] > 0, restart_s
    print(f"updates undone: {rewound}; every rank restarted in {restart_s[0]:.2f} s")
