"""Data out of the driver (issue 30): with data-parallel learners the driver reads only the
unrolls' summaries and deals out references; each learner fetches its own shard, and rank
0's new weights and the ground-truth probe come back on the update's reply."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import ray
import torch

from actors.rollout import RolloutActor, RolloutSpec, env_spec, make_ray_actor_class
from impala_frodo.acting.trajectory import Trajectory, UnrollSummary
from impala_frodo.config.presets import load_preset
from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.networks.weights import pack_params, param_layout
from impala_frodo.reports.probes import GroundTruthProbe
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.updater import Updater
from impala_frodo.utils import seed_everything
from learner.training.group import LearnerGroup, assign_shards

UNROLLS_PER_UPDATE = 4  # two per learner


def test_without_node_knowledge_rank_i_takes_the_ith_run_of_unrolls():
    assert assign_shards([""] * 4, ["a", "b"], 2) == [[0, 1], [2, 3]]
    assert assign_shards(["n"] * 6, ["n", "n", "n"], 2) == [[0, 1], [2, 3], [4, 5]]


def test_an_unroll_goes_to_a_learner_on_its_own_node_first():
    assert assign_shards(["b", "a", "b", "a"], ["a", "b"], 2) == [[1, 3], [0, 2]]
    # More on one node than its learner takes: the rest fill the other learners in order.
    assert assign_shards(["a", "a", "a", "b"], ["a", "b"], 2) == [[0, 1], [2, 3]]
    assert assign_shards(["c", "a", "c", "c"], ["a", "b"], 2) == [[0, 1], [2, 3]]


def test_unrolls_that_do_not_split_among_the_learners_are_refused():
    with pytest.raises(ValueError, match="3 unrolls for 2 learners"):
        assign_shards([""] * 3, ["a", "b"], 2)


class RefOnly:
    """An unroll in the object store that the driver must not fetch."""

    def __init__(self, trajectory: Trajectory) -> None:
        self.summary = UnrollSummary.of(trajectory)
        self.ref = ray.put(trajectory)

    def trajectory(self) -> Trajectory:
        raise AssertionError("the driver fetched an unroll")


def unrolls(cfg: Config, updates: int) -> list[list[Trajectory]]:
    """``updates`` x 4 unrolls acted by a fixed policy in ``cfg``'s env."""
    spec = env_spec(cfg)
    seed_everything(123)
    layout_source = Updater(cfg, spec.observation_shape, spec.num_actions)
    params = layout_source.acting_params("cpu")
    rollout = RolloutSpec.from_config(cfg, num_envs=cfg.run.envs_per_actor)
    actor = RolloutActor(rollout, param_layout(params), seed=7)
    actor.set_weights(0, params)
    return [[actor.unroll() for _ in range(UNROLLS_PER_UPDATE)] for _ in range(updates)]


def group_and_reference(cfg: Config) -> tuple[LearnerGroup, Updater]:
    spec = env_spec(cfg)
    make = partial(Updater, cfg, spec.observation_shape, spec.num_actions)
    group = LearnerGroup(cfg.run, make, state_observations=spec.state_observations)
    seed_everything(cfg.run.seed)  # as every rank seeds before it builds its updater
    return group, Updater(cfg, spec.observation_shape, spec.num_actions)


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].detach().cpu() - b[k].detach().cpu()).abs().max()) for k in a)


def two_learners(preset: str, **overrides) -> Config:
    base = {
        "run.num_learners": 2,
        "run.num_actors": 2,
        "run.learner_num_cpus": 0.5,
        "run.progress_timeout_s": 120.0,
        "meta.num_inner_steps": 2,
        "meta.every": 1,  # a meta step every window: the tests count and time them per window
    }
    return set_dotted(load_preset(preset), base | overrides)


@pytest.mark.ray
def test_learners_fetch_their_own_shards_and_equal_one_learner_on_the_union(ray_local):
    cfg = two_learners("catch-frodo", **{"run.envs_per_actor": 8, "run.unroll_length": 10})
    data = unrolls(cfg, updates=4)
    group, reference = group_and_reference(cfg)
    try:
        for batch in data:
            metrics = group.update([RefOnly(t) for t in batch], truth=None, publish=False)
            reference.update(Batch.from_trajectories(batch))
            assert metrics["perf/driver_unroll_bytes"] == 0
            assert metrics["perf/learner_fetch_bytes"] == sum(t.nbytes for t in batch)
        state = group.state_dict()
        assert group.num_meta_updates == reference.num_meta_updates >= 1
        assert largest_difference(state["params"], reference.params) < 1e-5
        assert largest_difference(state["meta_net"], reference.meta_net.state_dict()) < 1e-5
    finally:
        group.shutdown()


@pytest.mark.ray
def test_published_weights_come_with_the_update_not_in_a_call_of_their_own(ray_local):
    cfg = two_learners("catch-impala", **{"run.envs_per_actor": 8, "run.unroll_length": 10})
    data = unrolls(cfg, updates=2)
    group, reference = group_and_reference(cfg)
    calls = []
    get = group._get
    group._get = lambda refs, what: calls.append(what) or get(refs, what)
    try:
        group.update([RefOnly(t) for t in data[0]], truth=None, publish=True)
        reference.update(Batch.from_trajectories(data[0]))
        made = len(calls)
        weights = group.acting_weights()
        assert len(calls) == made  # no round trip: the reply carried them
        expected = pack_params(reference.acting_params("cpu"))
        assert np.abs(weights - expected).max() < 1e-5
        group.update([RefOnly(t) for t in data[1]], truth=None, publish=False)
        made = len(calls)
        group.acting_weights()  # not published with the update: fetched
        assert calls[made:] == ["rank 0's weights"]
    finally:
        group.shutdown()


@pytest.mark.ray
def test_the_ground_truth_probe_rides_on_the_replies_and_equals_one_learners(ray_local):
    cfg = two_learners("randomwalk-frodo")
    data = unrolls(cfg, updates=3)
    group, reference = group_and_reference(cfg)
    probe = GroundTruthProbe(env_spec(cfg).state_observations, "cpu")
    try:
        for batch in data:
            truth = batch[-1].ground_truth
            metrics = group.update([RefOnly(t) for t in batch], truth=truth, publish=False)
            local = Batch.from_trajectories(batch)
            reference.update(local)
            expected = probe.metrics(reference, local, truth)
            assert set(expected) <= set(metrics) and "eval/target_rmse" in expected
            for key, value in expected.items():
                assert metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    finally:
        group.shutdown()


@pytest.mark.ray
def test_an_unroll_call_returns_its_summary_and_its_trajectory_apart(ray_local):
    """The pool's call: two results, the summary stamped with the actor's node (on one
    node, the driver's), the trajectory left in the object store for whoever trains."""
    cfg = two_learners("catch-impala", **{"run.envs_per_actor": 4, "run.unroll_length": 5})
    spec = env_spec(cfg)
    params = Updater(cfg, spec.observation_shape, spec.num_actions).acting_params("cpu")
    actor = make_ray_actor_class(0.5).remote(
        RolloutSpec.from_config(cfg, num_envs=4), param_layout(params), seed=3
    )
    try:
        summary_ref, data_ref = actor.unroll_parts.options(num_returns=2).remote(0, params)
        summary, trajectory = ray.get([summary_ref, data_ref], timeout=60)
        assert summary.node_id == ray.get_runtime_context().get_node_id() != ""
        assert summary == UnrollSummary.of(trajectory, summary.node_id)
        assert summary.nbytes == trajectory.nbytes > 0 and summary.num_steps == 20
    finally:
        ray.kill(actor)
