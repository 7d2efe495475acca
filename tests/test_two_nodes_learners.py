"""Nodes lost under the learners, on the loopback two-node cluster of tests/test_two_nodes.py.

Three runs, each in a fresh driver process (:func:`scenario`), each losing the worker node
(every process of it SIGKILLed) once the run has a checkpoint:

- ``group``: two data-parallel learners placed one per node (``strict-spread``): the node
  of one rank goes. No new rank can be placed (one node left for two learners), so the
  run must end as a learner failure (exit 1) within :data:`END_WITHIN_S`, with a final
  checkpoint of the surviving rank's state at the last completed update. A resume with
  the same placement is refused at once; one with the learners packed on the surviving
  node trains on.
- ``spread``: the same, placed with ``spread`` (a ballast holds the head's CPUs but one
  learner's until the loss): the lost rank is replaced on the surviving node and the run
  reaches its budget (exit 0), one learner restart counted; the unrolls of the lost node
  dealt after the restart (the node is lost with finished unroll calls, their trajectories
  in its object store) drop their update, not a restart.
- ``meta``: the async meta-learner (and the actors), placed on the worker node by a
  ballast actor that holds the head's CPUs at first: the run must end as a meta-learner
  failure (exit 1) within :data:`END_WITHIN_S`, with a final checkpoint holding eta as
  last received; a resume starts a new meta-learner on the surviving node and trains on.

Small nets, short unrolls and budgets of a few thousand steps: each test takes about as
long as its cluster's and its two sessions' start-ups.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from impala_frodo.config.checks import ConfigError
from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.records.checkpoint import load_checkpoint
from learner.control.exit_codes import ExitCode
from tests.test_deploy import _clean_env
from tests.test_two_nodes import (
    AUTH,
    _connect,
    _kill_session,
    _node_of,
    two_nodes,  # noqa: F401 (the fixture)
)

pytestmark = pytest.mark.ray

#: A run must end this soon after its node is lost (the head declares a node dead after
#: 2 s, and a dead rank or meta-learner is seen at the next update); a stall would take
#: ``run.progress_timeout_s``, set far above it.
END_WITHIN_S = 60.0
#: Env steps the resumed session adds.
RESUME_STEPS = 2_000

COMMON = {
    "run.num_actors": 2,
    "run.actor_num_cpus": 0.5,
    "run.envs_per_actor": 8,
    "run.unroll_length": 10,
    "run.total_env_steps": 10**9,  # never reached: the node loss ends the run
    "run.checkpoint_every_s": 0.5,
    "run.progress_timeout_s": 180.0,
    "agent.hidden_sizes": [16],
}
CONFIGS = {
    "group": COMMON
    | {
        "algo": "impala",
        "run.num_learners": 2,
        "run.learner_num_cpus": 0.5,
        "run.learner_placement": "strict-spread",
    },
    "meta": COMMON
    | {
        "algo": "frodo",
        "meta.mode": "async",
        "meta.num_inner_steps": 2,
        "meta.hidden_size": 8,
        "meta.embed_size": 8,
        "meta.max_restarts": 0,  # a lost meta-learner is not replaced: the run ends
    },
}
CONFIGS["spread"] = CONFIGS["group"] | {
    "run.learner_placement": "spread",
    # Unrolls of 147 KB: over Ray's 100 KiB for a reply held by its caller, so each one's
    # trajectory stays in the object store of the actor's node (the worker's), and is lost
    # with it (at 8 x 10, 19 KB, the driver holds them: none was ever lost).
    "run.envs_per_actor": 32,
    "run.unroll_length": 20,
    "run.total_env_steps": 40_000,  # 31 updates: the loss comes after 10 and a checkpoint
}
#: ``spread``: unroll calls finished on the worker node when it is lost (two updates'
#: worth: the first update after the loss is dropped by the restart, the second by the
#: unrolls lost with the node).
LOST_READY = 4
#: CPUs of the head held by a ballast actor until the worker node is lost: ``meta``, all
#: of them (the meta-learner and the actors go to the worker); ``spread``, room for one
#: learner only (the other and the actors go to the worker).
BALLAST_CPUS = {"meta": 2.0, "spread": 1.5}
#: The resumed session: the group's learners packed on the one node left.
RESUMED = {"group": {"run.learner_placement": "pack"}, "meta": {}}


def _meta_learner_node(learner) -> str:
    return _node_of(learner.updater.schedule.link.actor)


def scenario(kind: str, address: str, logdir: str, worker_dir: str, worker_session: int) -> dict:
    """The run that loses the worker node, then its resume; returns what the test checks."""
    import ray

    from learner.app.driver import TrainOptions, train

    _connect(address)
    nodes = {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}
    (worker_id,) = [i for i, n in nodes.items() if "worker" in n["Resources"]]
    ballast = _ballast(BALLAST_CPUS[kind]) if kind in BALLAST_CPUS else None
    seen: dict = {"worker": worker_id}

    def callback(ctx) -> None:
        learner = ctx.learner
        if learner.books.counters.learner_restarts and "placed_after" not in seen:
            seen["placed_after"] = learner.updater.node_ids
            seen["training_again_s"] = time.monotonic() - seen["killed_at"]
        if (
            "killed_at" in seen
            or not learner.checkpoints.exists()
            or learner.books.counters.updates < 10
        ):
            return
        if kind == "meta" and learner.books.counters.meta_updates < 1:
            return  # the meta-learner has delivered an eta
        seen["placed"] = (
            learner.updater.node_ids if kind != "meta" else [_meta_learner_node(learner)]
        )
        if kind == "spread":
            seen["ready_at_kill"] = _wait_ready(ctx.pool, LOST_READY)
        seen["survivors"] = _kill_session(worker_session, worker_dir)
        seen["killed_at"] = time.monotonic()
        seen["killed_at_steps"] = learner.books.counters.env_steps
        if ballast is not None:
            ray.kill(ballast)  # room on the surviving node

    cfg = set_dotted(Config(), CONFIGS[kind] | {"run.logdir": logdir})
    options = TrainOptions(progress=False, handle_signals=False, callback=callback)
    result = train(cfg, options)
    seen |= {"ended_after_s": time.monotonic() - seen.get("killed_at", float("nan"))}
    seen |= {"reason": str(result.reason), "exit_code": result.exit_code}
    seen |= {"message": result.message, "run_dir": str(result.run_dir)}
    seen |= {"learner_restarts": result.learner_restarts, "env_steps": result.env_steps}
    saved = load_checkpoint(Path(result.run_dir) / "checkpoints" / "latest.pt")
    seen["checkpoint_steps"] = int(saved["counters"]["env_steps"])
    seen["dropped_unrolls"] = int(saved["counters"].get("dropped_unrolls", 0))
    if kind == "spread":
        ray.shutdown()
        return seen
    _wait_dead(worker_id)  # as a user resuming later finds the cluster
    budget = seen["checkpoint_steps"] + RESUME_STEPS
    options = TrainOptions(resume_dir=result.run_dir, progress=False, handle_signals=False)
    if kind == "group":  # the same placement first: one node is left for two learners
        start = time.monotonic()
        try:
            train(set_dotted(cfg, {"run.total_env_steps": budget}), options)
        except ConfigError as error:
            seen |= {"same_placement": str(error), "refused_in_s": time.monotonic() - start}
    resumed = train(set_dotted(cfg, RESUMED[kind] | {"run.total_env_steps": budget}), options)
    ray.shutdown()
    return seen | {
        "resumed_exit_code": resumed.exit_code,
        "resumed_message": resumed.message,
        "resumed_env_steps": resumed.env_steps,
        "resumed_session_steps": resumed.session_env_steps,
        "budget": budget,
    }


def _wait_ready(pool, n: int) -> int:
    """Until ``n`` of the pool's unroll calls have finished (their trajectories where they
    were made); how many have."""
    import ray

    ray.wait(list(pool._order), num_returns=n, timeout=60, fetch_local=False)
    ready, _ = ray.wait(list(pool._order), num_returns=pool.in_flight, timeout=0)
    return len(ready)


def _wait_dead(node_id: str, timeout_s: float = 120.0) -> None:
    """Until the head has declared the node dead."""
    import ray

    deadline = time.monotonic() + timeout_s
    while any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes()):
        assert time.monotonic() < deadline, "the lost node was never declared dead"
        time.sleep(0.2)


def _ballast(cpus: float):
    """An actor holding ``cpus`` of the head's 2, so that the run's actors (and in
    ``spread``, one learner) go to the worker node."""
    import ray

    @ray.remote(num_cpus=cpus, resources={"head": 1})
    class Ballast:
        def ready(self) -> bool:
            return True

    ballast = Ballast.remote()
    ray.get(ballast.ready.remote(), timeout=120)
    return ballast


def run_scenario(kind: str, two_nodes, tmp_path: Path) -> dict:  # noqa: F811
    address, worker = two_nodes
    argv = [kind, address, str(tmp_path / "runs"), str(worker.temp_dir), str(worker.proc.pid)]
    done = subprocess.run(
        [sys.executable, "-m", "tests.test_two_nodes_learners", *argv],
        capture_output=True,
        text=True,
        env=_clean_env(**AUTH),
        timeout=600,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    seen["unrolls_lost_updates"] = done.stderr.count("unrolls lost with their node")
    seen["restart_warnings"] = done.stderr.count("learners restarted in")
    shown = ("ended_after_s", "reason", "refused_in_s", "training_again_s", "message")
    shown += ("dropped_unrolls", "unrolls_lost_updates", "restart_warnings", "ready_at_kill")
    print(kind, {k: seen.get(k) for k in shown})
    return seen


def assert_resumed(seen: dict) -> None:
    assert seen["resumed_exit_code"] == ExitCode.OK, seen["resumed_message"]
    assert seen["resumed_env_steps"] >= seen["budget"], seen
    assert seen["resumed_session_steps"] >= RESUME_STEPS, seen


def test_losing_the_node_of_a_strictly_spread_rank_ends_the_run_with_a_final_checkpoint(
    two_nodes,  # noqa: F811
    tmp_path,
):
    seen = run_scenario("group", two_nodes, tmp_path)
    assert seen["worker"] in seen["placed"] and len(set(seen["placed"])) == 2, seen
    assert not seen["survivors"], "the worker node's processes survived SIGKILL"
    assert seen["reason"] == "learners" and seen["exit_code"] == ExitCode.FAILED, seen
    assert seen["ended_after_s"] < END_WITHIN_S, seen
    assert "2 learners cannot be spread over 1 live node(s)" in seen["message"], seen
    # The final checkpoint: the survivor's state at the last update before the loss.
    assert seen["checkpoint_steps"] == seen["killed_at_steps"], seen
    # A resume with the same placement is refused at once, saying why; packed, it goes on.
    assert "has 1 live node(s): use 'spread' or 'pack'" in seen.get("same_placement", ""), seen
    assert seen["refused_in_s"] < END_WITHIN_S, seen
    assert_resumed(seen)


def test_losing_the_node_of_a_spread_rank_replaces_it_on_the_other_and_goes_on(
    two_nodes,  # noqa: F811
    tmp_path,
):
    seen = run_scenario("spread", two_nodes, tmp_path)
    assert seen["worker"] in seen["placed"] and len(set(seen["placed"])) == 2, seen
    assert seen["reason"] == "budget" and seen["exit_code"] == ExitCode.OK, seen
    assert seen["learner_restarts"] == 1, seen
    assert seen["worker"] not in seen["placed_after"], seen
    assert seen["env_steps"] >= CONFIGS["spread"]["run.total_env_steps"], seen
    # The unrolls of the lost node dealt after the restart: their update dropped, no restart.
    assert seen["ready_at_kill"] >= LOST_READY, seen
    assert seen["unrolls_lost_updates"] >= 1 and seen["dropped_unrolls"] >= 4, seen


def test_losing_the_node_of_the_async_meta_learner_ends_the_run_and_a_resume_goes_on(
    two_nodes,  # noqa: F811
    tmp_path,
):
    seen = run_scenario("meta", two_nodes, tmp_path)
    assert seen["placed"] == [seen["worker"]], "the meta-learner was not on the worker node"
    assert not seen["survivors"], "the worker node's processes survived SIGKILL"
    assert seen["reason"] == "meta" and seen["exit_code"] == ExitCode.FAILED, seen
    assert seen["ended_after_s"] < END_WITHIN_S, seen
    assert "meta-learner" in seen["message"], seen
    assert seen["checkpoint_steps"] >= seen["killed_at_steps"], "no final checkpoint"
    assert_resumed(seen)


if __name__ == "__main__":
    kind, address, logdir, worker_dir, session = sys.argv[1:]
    print(json.dumps(scenario(kind, address, logdir, worker_dir, int(session))))
