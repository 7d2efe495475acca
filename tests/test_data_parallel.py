"""Data-parallel learners are exact: N learners on shards == one learner on the whole batch.

Two processes joined by torch.distributed (gloo, CPU, float64) each take one half of every
batch; one learner in this process takes every batch whole. After several updates, two
meta steps at least, theta, the inner optimizer's state and eta agree to 1e-10 for every
algorithm and schedule. An average with no gradient through the collective (DDP-style)
misses, so the comparison can fail.
"""

from __future__ import annotations

import multiprocessing
import socket
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist

from impala_frodo.acting.trajectory import Trajectory
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.data_parallel import AllReduceGradients
from impala_frodo.rule.metagrad import LOCAL, GradientReducer
from impala_frodo.rule.updater import Updater
from tests.test_metagrad import tiny_updater

OBS_SHAPE, NUM_ACTIONS, STEPS, WIDTH, LEARNERS = (3,), 2, 4, 4, 2
UPDATES = 7  # with M = 2: meta steps before updates 3, 5 and 7 (chain)
TOLERANCE = 1e-10

#: name -> (algo, optim, meta overrides)
CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "impala": ("impala", "rmsprop", {}),
    "mgrl-chain": ("mgrl", "rmsprop", {}),
    "mgrl-sliding": ("mgrl", "sgd", {"schedule": "sliding"}),
    "frodo-residual-chain": ("frodo", "rmsprop", {}),
    "frodo-plain-chain": ("frodo", "sgd", {"target": "plain"}),
    "frodo-residual-sliding": ("frodo", "rmsprop", {"schedule": "sliding"}),
    "frodo-centred-ratio-consistency": ("frodo", "rmsprop", {
        "target": "residual-centred", "ratio_input": True, "consistency_cost": 0.3,
    }),
    "frodo-ext-annealed": ("frodo-ext", "rmsprop", {}),
    "frodo-ext-constant-sliding": ("frodo-ext", "sgd", {
        "ext_beta_mode": "constant", "ext_b1": 0.3, "schedule": "sliding",
    }),
}  # fmt: skip
#: eta's parameters whose meta-gradient is zero in exact arithmetic: the centred target
#: subtracts its batch mean, which cancels G's output bias. Adam divides that gradient's
#: rounding noise (~1e-17) by its own RMS, so the bias moves by noise (~1e-7) that differs
#: with the order of additions; it is checked to stay near zero instead.
ZERO_GRADIENT = {"frodo-centred-ratio-consistency": frozenset({"head.bias"})}


class ValueOnlyAverage:
    """DDP-style: the learners' mean gradient as a value, each learner's own graph as its
    derivative (no gradient through the collective). Wrong for the meta-gradient."""

    def __init__(self) -> None:
        self.exact = AllReduceGradients()

    def inner(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        means = self.exact.inner([g.detach() for g in grads])
        return [g + (m - g).detach() for g, m in zip(grads, means, strict=True)]

    def meta(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.exact.meta(grads)

    def batch_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.exact.batch_mean(tensor)


def random_batch(rng: np.random.Generator) -> Batch:
    """A float64 [T=4, B=4] batch with terminals and time-limit truncations in both halves."""
    logits = rng.normal(size=(STEPS, WIDTH, NUM_ACTIONS))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    actions = rng.integers(NUM_ACTIONS, size=(STEPS, WIDTH))
    continues = np.ones((STEPS, WIDTH), np.float32)
    continues[1, 0] = continues[2, 3] = 0.0
    trajectory = Trajectory(
        obs=rng.normal(size=(STEPS + 1, WIDTH, *OBS_SHAPE)),
        actions=actions,
        rewards=rng.normal(size=(STEPS, WIDTH)),
        continues=continues,
        behaviour_log_probs=np.take_along_axis(log_probs, actions[..., None], -1)[..., 0],
        truncation_index=np.array([0 * WIDTH + 1, 2 * WIDTH + 2]),
        truncation_obs=rng.normal(size=(2, *OBS_SHAPE)),
    )
    return Batch.from_trajectories([trajectory], dtype=torch.float64)


def float64_updater(case: str, reducer: GradientReducer) -> Updater:
    """The case's updater in float64, initialised identically in every process."""
    algo, optim, meta = CASES[case]
    return tiny_updater(algo, optim=optim, num_inner_steps=2, reducer=reducer, **meta)


def final_state(updater: Updater) -> dict[str, dict[str, np.ndarray]]:
    """theta, the optimizer's state and eta as numpy (torch tensors sent between processes
    share memory that their sender may free first)."""
    parts = {"theta": updater.params, "opt_state": updater.opt_state, "eta": updater.eta}
    return {
        part: {k: v.detach().numpy().copy() for k, v in tensors.items()}
        for part, tensors in parts.items()
    }


def train(case: str, batches: list[Batch], reducer: GradientReducer) -> dict[str, Any]:
    updater = float64_updater(case, reducer)
    for batch in batches:
        updater.update(batch)
    assert updater.num_meta_updates >= (2 if updater.meta_net is not None else 0)
    return final_state(updater)


def _learner_process(
    rank: int, port: int, reducer_kind: str, batches: list[Batch], results: Any
) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=LEARNERS
    )
    try:
        reducer = AllReduceGradients() if reducer_kind == "exact" else ValueOnlyAverage()
        shards = [batch.shard(rank, LEARNERS) for batch in batches]
        results.put((rank, {case: train(case, shards, reducer) for case in CASES}))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_learners(reducer_kind: str, batches: list[Batch]) -> dict[int, dict[str, Any]]:
    """Every case on ``LEARNERS`` processes, each given its shard of every batch."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    port = _free_port()
    processes = [
        context.Process(target=_learner_process, args=(rank, port, reducer_kind, batches, results))
        for rank in range(LEARNERS)
    ]
    for p in processes:
        p.start()
    try:
        return dict(results.get(timeout=300) for _ in processes)
    finally:
        for p in processes:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()


def max_difference(
    a: dict[str, Any], b: dict[str, Any], skip_eta: frozenset[str] = frozenset()
) -> float:
    return max(
        float(np.abs(a[part][k] - b[part][k]).max())
        for part in a
        for k in a[part]
        if a[part][k].size and not (part == "eta" and k in skip_eta)
    )


@pytest.fixture(scope="module")
def batches() -> list[Batch]:
    rng = np.random.default_rng(11)
    return [random_batch(rng) for _ in range(UPDATES)]


@pytest.fixture(scope="module")
def one_learner(batches: list[Batch]) -> dict[str, Any]:
    return {case: train(case, batches, LOCAL) for case in CASES}


def test_shards_are_the_batch_split_along_b() -> None:
    rng = np.random.default_rng(0)
    batch = random_batch(rng)
    halves = [batch.shard(i, 2) for i in range(2)]
    assert torch.equal(torch.cat([h.obs for h in halves], 1), batch.obs)
    assert torch.equal(torch.cat([h.rewards for h in halves], 1), batch.rewards)
    # Truncation (t=0, b=1) lands in the first half at b=1; (t=2, b=2) in the second at b=0.
    assert halves[0].truncation_index.tolist() == [0 * 2 + 1]
    assert halves[1].truncation_index.tolist() == [2 * 2 + 0]
    assert torch.equal(halves[1].truncation_obs, batch.truncation_obs[1:])
    with pytest.raises(ValueError, match="shard 0 of 3"):
        batch.shard(0, 3)


@pytest.mark.parametrize("reducer_kind", ["exact", "value-only"])
def test_two_learners_on_halves_equal_one_learner_on_the_whole_batch(
    reducer_kind: str, batches: list[Batch], one_learner: dict[str, Any]
) -> None:
    ranks = run_learners(reducer_kind, batches)
    differences = {
        case: max_difference(
            ranks[0][case], one_learner[case], ZERO_GRADIENT.get(case, frozenset())
        )
        for case in CASES
    }
    for case, names in ZERO_GRADIENT.items():
        for state in (ranks[0][case], one_learner[case]):
            assert all(np.abs(state["eta"][k]).max() < 1e-5 for k in names)
    between_ranks = {case: max_difference(ranks[0][case], ranks[1][case]) for case in CASES}
    assert max(between_ranks.values()) <= TOLERANCE, between_ranks  # the ranks agree anyway
    if reducer_kind == "exact":
        assert max(differences.values()) <= TOLERANCE, differences
    else:
        # Inner gradients' values are still averaged, so IMPALA (no meta-gradient) stays
        # exact; every meta-learner's eta goes wrong.
        assert differences["impala"] <= TOLERANCE
        wrong = {case: d for case, d in differences.items() if case != "impala"}
        assert min(wrong.values()) > 1e-6, wrong
