"""The distributed system on a local Ray (2 CPUs): flow, logging, resume, faults, signals, learning.

Small unrolls (8 envs x 10 steps) keep runs to seconds; the learning tests at
the end use the default Catch 10 x 5 config with 32 envs per actor.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from impala_frodo.config.presets import load_preset
from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.records.checkpoint import load_checkpoint
from impala_frodo.records.runlog import read_metrics
from learner.app.driver import TrainOptions, train
from learner.cluster.actor_pool import ActorPool
from learner.cluster.slots import Slot
from learner.control.exit_codes import ExitCode
from tests.meta_checks import dead_meta_signs

pytestmark = pytest.mark.ray

STEPS_PER_UNROLL = 8 * 10
REQUIRED_TAGS = (
    "episode/return",
    "episode/length",
    "loss/inner",
    "loss/outer",
    "meta/target_mean",
    "perf/env_steps_per_s",
    "perf/policy_lag",
    "perf/queue_size",
)


def small_cfg(tmp_path: Path, algo: str = "impala", **overrides) -> Config:
    base = {
        "algo": algo,
        "run.num_actors": 2,
        "run.envs_per_actor": 8,
        "run.unroll_length": 10,
        "run.total_env_steps": 16_000,
        "run.queue_size": 4,
        "run.log_every_s": 0.2,
        "run.checkpoint_every_s": 0.5,
        "run.logdir": str(tmp_path / "runs"),
        "meta.num_inner_steps": 3,
    }
    return set_dotted(Config(), base | overrides)


def options(**kwargs) -> TrainOptions:
    return TrainOptions(progress=False, handle_signals=False, **kwargs)


def scalar_tags(run_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: accumulator.Scalars(tag) for tag in accumulator.Tags()["scalars"]}


def test_two_actors_feed_the_learner_and_everything_is_logged(ray_local, tmp_path):
    seen: set[int] = set()
    result = train(
        small_cfg(tmp_path, "frodo"),
        options(callback=lambda ctx: seen.update(ctx.learner.books.trajectories_by_actor)),
    )
    assert result.exit_code == ExitCode.OK and result.reason == "budget"
    assert seen == {0, 1}, "both actors' trajectories reached the learner"
    assert result.env_steps >= 16_000
    assert result.env_steps == result.updates * STEPS_PER_UNROLL  # one unroll per update

    records = read_metrics(result.run_dir / "metrics.jsonl")
    assert len(records) >= 3
    steps = [r["env_steps"] for r in records]
    assert steps == sorted(steps) and steps[-1] == result.env_steps
    versions = [r["progress/updates"] for r in records]
    assert versions == sorted(versions) and versions[-1] > versions[0]  # versions increase
    lags = [r["perf/policy_lag"] for r in records if r.get("perf/policy_lag") is not None]
    assert lags and all(lag >= 0 for lag in lags) and max(lags) > 0  # stale by design

    tags = scalar_tags(result.run_dir)
    missing = [t for t in REQUIRED_TAGS if t not in tags]
    assert not missing, f"TensorBoard lacks {missing}"
    assert json.loads((result.run_dir / "config.json").read_text())["algo"] == "frodo"
    state = load_checkpoint(result.run_dir / "checkpoints" / "latest.pt")
    assert state["counters"]["env_steps"] == result.env_steps  # the final checkpoint


def test_random_walk_run_logs_the_value_error(ray_local, tmp_path):
    cfg = set_dotted(
        load_preset("randomwalk-frodo"),
        {
            "run.total_env_steps": 3_000,
            "run.log_every_s": 0.2,
            "run.logdir": str(tmp_path / "runs"),
        },
    )
    result = train(cfg, options())
    assert result.exit_code == ExitCode.OK
    values = [s.value for s in scalar_tags(result.run_dir)["eval/value_rmse"]]
    assert values and all(0.0 <= v < 5.0 for v in values)


def test_a_gymnasium_env_with_time_limits_runs_through_the_actors(ray_local, tmp_path):
    """CartPole through the whole system: episodes cut by a time limit are counted too."""
    cfg = set_dotted(
        load_preset("cartpole-frodo"),
        {
            "env.kwargs": {"max_episode_steps": 30},
            "run.envs_per_actor": 8,
            "run.total_env_steps": 4_000,
            "run.logdir": str(tmp_path / "runs"),
            "meta.num_inner_steps": 2,
        },
    )
    result = train(cfg, options())
    assert result.exit_code == ExitCode.OK and result.env_steps >= 4_000
    # Every episode ends within 30 steps: all steps but the unfinished episodes' (< 30 in
    # each of the 2 x 8 envs) belong to recorded episodes of at most 30 steps each.
    assert result.episodes >= (result.env_steps - 2 * 8 * 29) // 30
    lengths = [s.value for s in scalar_tags(result.run_dir)["episode/length"]]
    assert lengths and all(1 <= n <= 30 for n in lengths)


def test_resume_continues_counters_and_curves_without_double_counting(ray_local, tmp_path):
    first = train(small_cfg(tmp_path, "frodo", **{"run.total_env_steps": 8_000}), options())
    assert first.exit_code == ExitCode.OK
    run_dir = first.run_dir
    # A crash after the last checkpoint could have logged steps that the resume does again.
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"env_steps": 10**9, "wall_time_s": 1.0}) + "\n")

    cfg = small_cfg(tmp_path, "frodo", **{"run.total_env_steps": 16_000})
    seen = []  # (actor resume count, learner resumes): the actors, started first, reseeded

    def record(ctx) -> None:
        seen.append((ctx.pool.resume_count, ctx.learner.books.counters.resumes))

    second = train(cfg, options(resume_dir=run_dir, callback=record))
    assert seen and set(seen) == {(1, 1)}
    assert second.exit_code == ExitCode.OK and second.run_dir == run_dir
    assert second.updates > first.updates and second.env_steps >= 16_000
    assert second.env_steps == second.updates * STEPS_PER_UNROLL  # no step counted twice
    assert second.session_env_steps == second.env_steps - first.env_steps

    records = read_metrics(run_dir / "metrics.jsonl")
    steps = [r["env_steps"] for r in records]
    assert steps == sorted(set(steps)), "metrics.jsonl steps are not strictly increasing"
    assert steps[-1] == second.env_steps and first.env_steps in steps
    walls = [r["wall_time_s"] for r in records]
    assert walls == sorted(walls)  # wall time continues too
    updates = scalar_tags(run_dir)["progress/updates"]
    assert updates[-1].value == second.updates
    assert [e.step for e in updates] == sorted({e.step for e in updates})
    state = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert state["counters"]["resumes"] == 1
    assert json.loads((run_dir / "config.json").read_text())["run"]["total_env_steps"] == 16_000


def _kill_plan(kills: dict[int, str]):
    """A callback that kills actors from given update counts on ('ray': ray.kill, 'sigkill').

    Each kill waits for an update at which the actor has an unroll still running: Ray
    restarts an idle actor without any call failing, so its death would go unseen (with a
    slow learner, an actor's calls are often all finished, waiting in the queue).
    """
    import ray

    done: list[str] = []

    def callback(ctx) -> None:
        due = [how for at, how in sorted(kills.items()) if ctx.learner.books.counters.updates >= at]
        how = next((h for h in due if h not in done), None)
        if how is None or not ctx.pool.running(0 if how == "ray" else 1):
            return
        done.append(how)
        if how == "ray":
            ray.kill(ctx.pool.slots[0].handle, no_restart=False)
        else:
            pid = ray.get(ctx.pool.slots[1].handle.pid.remote())
            os.kill(pid, signal.SIGKILL)

    return callback, done


def test_killed_actors_are_restarted_and_the_run_finishes(ray_local, tmp_path, caplog):
    callback, done = _kill_plan({30: "ray", 120: "sigkill"})
    cfg = small_cfg(tmp_path, **{"run.total_env_steps": 48_000})
    with caplog.at_level(logging.WARNING, logger="impala_frodo"):
        result = train(cfg, options(callback=callback))
    assert done == ["ray", "sigkill"]
    assert result.exit_code == ExitCode.OK and result.env_steps >= 48_000
    assert result.actor_failures == 2
    died = [r.getMessage() for r in caplog.records if "died" in r.getMessage()]
    assert any(m.startswith("actor 0 died") for m in died)
    assert any(m.startswith("actor 1 died") for m in died)
    records = read_metrics(result.run_dir / "metrics.jsonl")
    assert records[-1]["perf/actor_failures"] == 2


def test_a_restart_no_failed_call_showed_is_counted_once_by_its_new_process():
    """An actor killed with no call in flight and restarted by Ray before its next call
    fails no call: the new process id its next unroll carries is the death, counted once
    (late results of the old process do not count again), and a death a failed call
    already counted is not counted a second time."""
    pool = object.__new__(ActorPool)  # the bookkeeping alone: no Ray, no actors
    pool.failures, pool.max_failures, pool.max_restarts = 0, 10, 3
    slot = Slot(handle=None, actor_id=0)
    for pid in (100, 100, 200, 100, 200):
        pool._note_process(slot, pid)
    assert pool.failures == 1 and slot.deaths_on_handle == 1
    slot.incarnation += 1  # a failed call counted the next death (ActorPool._on_actor_error)
    pool.failures += 1
    pool._note_process(slot, 300)  # the process Ray started after it
    assert pool.failures == 2 and slot.deaths_on_handle == 1


def test_a_process_restarted_unseen_and_called_without_weights_is_one_death_then_weights():
    """An actor that Ray restarted with no call in flight raises ``NoWeightsError`` on each
    call made before the pool knew: one death, counted once (not again by its new process
    id when it returns an unroll), and the next call carries the weights."""
    pool = object.__new__(ActorPool)  # the bookkeeping alone: no Ray, no actors
    pool.failures, pool.max_failures, pool.max_restarts = 0, 10, 3
    slot = Slot(handle=None, actor_id=0)
    pool._note_process(slot, 100)  # the first process returned unrolls
    slot.needs_weights = False
    for _ in range(2):  # two calls in flight when it was restarted, made at incarnation 0
        pool._restarted_without_weights(slot, 0)
    assert pool.failures == 1 and slot.deaths_on_handle == 1 and slot.needs_weights
    pool._note_process(slot, 200)  # the new process's first unroll, made with the weights
    assert pool.failures == 1 and slot.deaths_on_handle == 1


def test_an_actor_out_of_restarts_is_replaced(ray_local, tmp_path, caplog):
    kill, done = _kill_plan({20: "ray"})
    pools = []

    def callback(ctx) -> None:
        pools.append(ctx.pool)
        kill(ctx)

    cfg = small_cfg(tmp_path, **{"run.total_env_steps": 24_000})
    with caplog.at_level(logging.WARNING, logger="impala_frodo"):
        result = train(cfg, options(callback=callback, max_actor_restarts=0))
    assert done == ["ray"] and result.exit_code == ExitCode.OK
    assert result.env_steps >= 24_000 and result.actor_failures == 1
    assert any("replaced by a new actor" in r.getMessage() for r in caplog.records)
    # One death, one replacement: the calls lost with the dead actor are not more deaths.
    assert [slot.replacements for slot in pools[-1].slots] == [1, 0]


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    ray_local, tmp_path, monkeypatch
):
    from impala_frodo.rule.updater import NonFiniteLossError, Updater

    real_update = Updater.update
    saved: dict[str, bytes] = {}

    def update(self, batch):
        if self.num_updates == 60:
            time.sleep(0.6)  # let a periodic checkpoint exist
            latest = Path(cfg.run.logdir).glob("*/checkpoints/latest.pt")
            saved["bytes"] = next(latest).read_bytes()
            raise NonFiniteLossError("inner loss is not finite (nan): stopping")
        return real_update(self, batch)

    monkeypatch.setattr(Updater, "update", update)
    cfg = small_cfg(tmp_path, **{"run.checkpoint_every_s": 0.05})
    result = train(cfg, options())
    assert result.exit_code == ExitCode.FAILED and result.reason == "nan"
    assert "last good checkpoint" in result.message
    latest = result.run_dir / "checkpoints" / "latest.pt"
    assert latest.read_bytes() == saved["bytes"], "the NaN state overwrote the checkpoint"
    assert load_checkpoint(latest)["counters"]["updates"] <= 60


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_a_final_checkpoint_and_exits_cleanly(tmp_path, signum):
    logdir = tmp_path / "runs"
    command = [
        sys.executable, "-m", "learner", "--preset", "catch-impala",
        "--num-actors", "2", "--envs-per-actor", "8", "--unroll-length", "10",
        "--total-env-steps", "1000000000", "--log-every-s", "0.2",
        "--logdir", str(logdir), "--no-progress",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            metrics = list(logdir.glob("*/metrics.jsonl"))
            if metrics and len(read_metrics(metrics[0])) >= 3:
                break
            time.sleep(0.2)
        assert process.poll() is None, f"exited early:\n{process.stderr.read()}"
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == ExitCode.INTERRUPTED, stderr
    assert signal.Signals(signum).name in stderr and "Traceback" not in stderr
    (run_dir,) = logdir.iterdir()
    state = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert (
        state["counters"]["env_steps"] == read_metrics(run_dir / "metrics.jsonl")[-1]["env_steps"]
    )
    assert state["counters"]["env_steps"] > 0


# ------------------------------------------------------------------ learning
def _solve(tmp_path: Path, algo: str, budget: int, callback=None):
    cfg = set_dotted(
        Config(),
        {
            "algo": algo,
            "run.total_env_steps": budget,
            "run.num_actors": 2,
            "run.envs_per_actor": 32,
            "run.logdir": str(tmp_path / "runs"),
        },
    )
    assert cfg.env.id == "impala_frodo/Catch-v0" and cfg.env.kwargs == {}  # bsuite's 10 x 5
    return train(cfg, options(stop_at_return=0.8, callback=callback))


def _solve_and_read_eta(tmp_path: Path, budget: int):
    """A FRODO run to return 0.8, and :func:`tests.meta_checks.dead_meta_signs` of what it
    wrote: eta before its first meta step (read after the first update) and in the final
    checkpoint, meta/grad_norm of every record, meta/target_minus_return_rms of the last."""
    eta_before = {}

    def keep_first_eta(ctx) -> None:
        if not eta_before:
            updater = ctx.learner.updater
            assert updater.num_meta_updates == 0, "the first update came after a meta step"
            eta_before.update({k: v.detach().clone() for k, v in updater.eta.items()})

    result = _solve(tmp_path, "frodo", budget, callback=keep_first_eta)
    state = load_checkpoint(result.run_dir / "checkpoints" / "latest.pt")
    assert state["counters"]["env_steps"] == result.env_steps  # the final checkpoint
    assert state["updater"]["num_meta_updates"] > 0
    records = read_metrics(result.run_dir / "metrics.jsonl")
    grad_norms = [r["meta/grad_norm"] for r in records if "meta/grad_norm" in r]
    final_rms = records[-1]["meta/target_minus_return_rms"]
    signs = dead_meta_signs(eta_before, state["updater"]["meta_net"], grad_norms, final_rms)
    return result, signs


@pytest.mark.slow
def test_distributed_impala_solves_catch_within_100k_steps(ray_local, tmp_path):
    result = _solve(tmp_path, "impala", 100_000)
    assert result.reason == "return", f"mean return {result.mean_return} after 100k steps"
    assert result.mean_return >= 0.8 and result.env_steps <= 100_000


@pytest.mark.slow
def test_distributed_frodo_solves_catch_within_500k_steps_and_learns_its_target(
    ray_local, tmp_path
):
    """Solved, and eta moved, the meta-gradient was never 0 and the learned target ended
    away from the V-trace target (tests/test_learning.py shows these checks fail with a
    dead meta-gradient)."""
    result, signs = _solve_and_read_eta(tmp_path, 500_000)
    assert result.reason == "return", f"mean return {result.mean_return} after 500k steps"
    assert result.mean_return >= 0.8 and result.env_steps <= 500_000
    assert not signs, f"a dead meta-gradient: {signs}"
