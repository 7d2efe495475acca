"""The async meta-learner as a Ray actor: newest-first windows, a dead meta-learner, a run.

On a local Ray with 2 CPUs (the ``ray_local`` fixture). Waits are polls with a deadline.
"""

from __future__ import annotations

import copy
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray

from actors.rollout import RolloutActor, RolloutSpec, env_spec
from impala_frodo.config.checks import ConfigError
from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.networks.weights import param_layout
from impala_frodo.records.checkpoint import CheckpointManager, load_checkpoint
from impala_frodo.records.runlog import CHECKPOINT_DIR, read_metrics
from impala_frodo.rule.meta_learner import EtaUpdate, MetaLearnerError
from learner.app.driver import TrainOptions, train
from learner.cluster.session import check_resources
from learner.control.exit_codes import ExitCode
from learner.training.learner import Learner
from learner.training.meta_actor import MetaLearnerSpec, RayMetaLink
from tests.test_metagrad import NUM_ACTIONS, OBS_SHAPE, random_batch

pytestmark = pytest.mark.ray

DEADLINE_S = 120.0


def tiny_cfg() -> Config:
    return Config.from_dict(
        {
            "algo": "frodo",
            "agent": {"hidden_sizes": [4]},
            # Every window to the meta-learner: the tests count windows and meta steps.
            "meta": {"num_inner_steps": 2, "hidden_size": 3, "mode": "async", "every": 1},
        }
    )


def float_window_source(cfg: Config):
    """A float32 async updater whose windows the test sends by hand."""
    from impala_frodo.rule.updater import Updater

    updater = Updater(cfg, OBS_SHAPE, NUM_ACTIONS)
    rng = np.random.default_rng(0)

    def window(index: int):
        batches = [_float32(random_batch(rng)) for _ in range(3)]
        for batch in batches[:2]:
            updater.schedule.record(batch, updater.params, updater.opt_state)
        updater.schedule.windows = index
        return updater.schedule.take_window(batches[2])

    return updater, window


def _float32(batch):
    import dataclasses

    return dataclasses.replace(
        batch,
        **{
            name: getattr(batch, name).float()
            for name in ("obs", "rewards", "continues", "behaviour_log_probs", "truncation_obs")
        },
    )


def ray_link(cfg: Config, updater) -> RayMetaLink:
    """A meta-learner actor started from ``updater``'s eta (as its schedule starts it)."""
    spec = MetaLearnerSpec.of(cfg, OBS_SHAPE, NUM_ACTIONS)
    link = RayMetaLink(
        spec, num_cpus=cfg.meta.learner_num_cpus, timeout_s=cfg.run.progress_timeout_s
    )
    link.load_state_dict(updater.schedule.meta_state())
    return link


def poll_until(link: RayMetaLink) -> EtaUpdate:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        update = link.poll()
        if update is not None:
            return update
        time.sleep(0.05)
    pytest.fail(f"no eta within {DEADLINE_S:g} s")


def test_windows_sent_while_it_is_busy_wait_newest_first(ray_local):
    cfg = tiny_cfg()
    updater, window = float_window_source(cfg)
    link = ray_link(cfg, updater)
    try:
        # The start-up load is the call in flight: each window sent meanwhile replaces
        # the one waiting, which counts as skipped.
        for index in range(3):
            link.send(window(index))
        assert link.skipped == 2
        update = poll_until(link)
        assert update.window == 2 and update.version == 1
        assert update.stats["meta/grad_norm"] > 0
        link.send(window(3))  # nothing in flight now: it starts at once
        assert link.skipped == 2
        assert poll_until(link).version == 2
    finally:
        link.close()


def test_a_dead_meta_learner_is_a_clear_error(ray_local):
    cfg = tiny_cfg()
    updater, window = float_window_source(cfg)
    link = ray_link(cfg, updater)
    try:
        link.send(window(0))
        poll_until(link)
        ray.kill(link.actor)
        link.send(window(1))
        with pytest.raises(MetaLearnerError, match="meta-learner process died"):
            poll_until(link)
    finally:
        link.close()


def test_a_meta_learner_the_cluster_cannot_place_is_a_config_error(ray_local):
    cfg = set_dotted(tiny_cfg(), {"meta.learner_num_cpus": 1.5, "run.num_actors": 2})
    with pytest.raises(ConfigError, match=r"need 2\.5 CPUs, but the cluster has 2"):
        check_resources(cfg)


def test_a_distributed_async_run_learns_eta_and_checkpoints_it(ray_local, tmp_path: Path):
    cfg = set_dotted(
        Config(),
        {
            "algo": "frodo",
            "meta.mode": "async",
            "meta.num_inner_steps": 3,
            "run.num_actors": 2,
            "run.envs_per_actor": 8,
            "run.unroll_length": 10,
            "run.total_env_steps": 8_000,
            "run.log_every_s": 0.2,
            "run.logdir": str(tmp_path / "runs"),
        },
    )
    result = train(cfg, TrainOptions(progress=False, handle_signals=False))
    assert result.exit_code == ExitCode.OK, result.message
    records = read_metrics(result.run_dir / "metrics.jsonl")
    lags = [r["meta/lag"] for r in records if "meta/lag" in r]
    assert lags and min(lags) >= 0
    assert any(r.get("perf/meta_updates_per_s", 0) > 0 for r in records)
    state = load_checkpoint(result.run_dir / "checkpoints" / "latest.pt")["updater"]
    assert state["num_meta_updates"] >= 1 and state["meta_optimizer"]["state"]
    # Every window is a meta step, or skipped, or was still in the meta-learner's hands.
    unaccounted = state["meta_windows"] - state["num_meta_updates"] - state["meta_skipped"]
    assert 0 <= unaccounted <= 2


def test_a_dead_meta_learner_ends_the_run_with_eta_kept_and_a_resume_goes_on(
    ray_local, tmp_path: Path
):
    cfg = set_dotted(
        Config(),
        {
            "algo": "frodo",
            "meta.mode": "async",
            "meta.num_inner_steps": 2,
            "meta.max_restarts": 0,  # not replaced: the run stops
            "run.num_actors": 2,
            "run.envs_per_actor": 8,
            "run.unroll_length": 10,
            "run.total_env_steps": 400_000,
            "run.logdir": str(tmp_path / "runs"),
        },
    )

    killed: list[bool] = []

    def kill_after_two_meta_steps(ctx) -> None:
        if ctx.learner.updater.num_meta_updates >= 2 and not killed:
            ray.kill(ctx.learner.updater.schedule.link.actor)
            killed.append(True)

    result = train(
        cfg, TrainOptions(progress=False, handle_signals=False, callback=kill_after_two_meta_steps)
    )
    assert result.reason == "meta" and result.exit_code == ExitCode.FAILED
    assert "meta-learner process died" in result.message
    assert result.env_steps < 400_000
    state = load_checkpoint(result.run_dir / "checkpoints" / "latest.pt")["updater"]
    versions = state["num_meta_updates"]
    assert versions >= 2 and state["meta_optimizer"]["state"]

    resumed_cfg = set_dotted(cfg, {"run.total_env_steps": result.env_steps + 4_000})
    resumed = train(
        resumed_cfg,
        TrainOptions(progress=False, handle_signals=False, resume_dir=result.run_dir),
    )
    assert resumed.exit_code == ExitCode.OK, resumed.message
    after = load_checkpoint(result.run_dir / "checkpoints" / "latest.pt")["updater"]
    assert after["num_meta_updates"] > versions  # the new meta-learner went on from there
    assert after["meta_windows"] > state["meta_windows"]


def test_a_meta_learner_that_does_not_start_ends_a_resumed_run_with_its_counters(
    ray_local, tmp_path: Path, monkeypatch
):
    """A meta-learner failing at start-up (here: never started) stops the run before its
    loop: reason ``meta``, exit 1, the error as the message, and the run's counters as the
    checkpoint left them (nothing added this session)."""
    cfg = set_dotted(
        tiny_cfg(),
        {"run.envs_per_actor": 4, "run.unroll_length": 5, "run.total_env_steps": 10_000},
    )
    run_dir = tmp_path / "run"
    spec = env_spec(cfg)
    learner = Learner(
        cfg,
        spec.observation_shape,
        spec.num_actions,
        checkpoints=CheckpointManager(run_dir / CHECKPOINT_DIR),
    )
    actor = RolloutActor(
        RolloutSpec.from_config(cfg, num_envs=4), param_layout(learner.updater.params), seed=0
    )
    learner.update([actor.unroll(*learner.behaviour_weights())])
    learner.checkpoint()

    def never_starts(self, should_stop) -> None:
        raise MetaLearnerError("the meta-learner has not started in 300 s")

    monkeypatch.setattr(RayMetaLink, "wait_started", never_starts)
    result = train(cfg, TrainOptions(progress=False, handle_signals=False, resume_dir=run_dir))
    assert result.reason == "meta" and result.exit_code == ExitCode.FAILED
    assert result.message == "the meta-learner has not started in 300 s"
    assert (result.env_steps, result.updates, result.session_env_steps) == (4 * 5, 1, 0)


def catch_async_cfg(tmp_path: Path, total_env_steps: int, **overrides: Any) -> Config:
    """A Catch FRODO run with the meta-learner in a process of its own."""
    return set_dotted(
        Config(),
        {
            "algo": "frodo",
            "meta.mode": "async",
            "meta.num_inner_steps": 2,
            "meta.every": 1,  # every window to the meta-learner: the kills follow its answers
            "run.num_actors": 2,
            "run.envs_per_actor": 8,
            "run.unroll_length": 10,
            "run.total_env_steps": total_env_steps,
            "run.log_every_s": 0.5,
            "run.logdir": str(tmp_path / "runs"),
            **overrides,
        },
    )


def _same(a: Any, b: Any) -> bool:
    """Equal to the bit, through nested dicts and lists of tensors."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if hasattr(a, "dtype") and hasattr(a, "shape"):
        return a.dtype == b.dtype and bool((a == b).all()) and a.shape == b.shape
    return a == b


class KillOnce:
    """A loop callback: SIGKILLs the meta-learner's process (by its pid) once eta has moved
    twice; at the first update after the restart, keeps the learner's eta and state and
    asks the new process for its own (its load is the only call it has had)."""

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}

    def __call__(self, ctx) -> None:
        schedule, seen = ctx.learner.updater.schedule, self.seen
        link = schedule.link
        if "killed_at" not in seen:
            if schedule.num_meta_updates >= 2 and link.pid is not None:
                seen["version_at_kill"] = schedule.num_meta_updates
                seen["killed_at"] = time.monotonic()
                os.kill(link.pid, signal.SIGKILL)
        elif link.restarts == 1 and "learner_state" not in seen:
            seen["learner_state"] = copy.deepcopy(schedule.meta_state())  # eta changes in place
            seen["new_state"] = ray.get(link.actor.state_dict.remote(), timeout=DEADLINE_S)
        elif "learner_state" in seen and link.pid is not None and "answered_at" not in seen:
            seen["answered_at"] = time.monotonic()


def test_a_sigkilled_meta_learner_is_replaced_and_the_run_reaches_its_budget(
    ray_local, tmp_path: Path
):
    cfg = catch_async_cfg(tmp_path, 60_000)
    kill = KillOnce()
    result = train(cfg, TrainOptions(progress=False, handle_signals=False, callback=kill))
    assert result.reason == "budget" and result.exit_code == ExitCode.OK, result.message
    assert result.meta_restarts == 1
    seen = kill.seen
    # The new process started from the learner's eta and Adam state at the restart, bitwise.
    learner_state, new_state = seen["learner_state"], seen["new_state"]
    assert _same(new_state["meta_net"], learner_state["meta_net"])
    assert _same(new_state["meta_optimizer"], learner_state["meta_optimizer"])
    assert new_state["version"] == learner_state["version"] >= seen["version_at_kill"]
    # Meta steps went on after it: eta moved again.
    state = load_checkpoint(result.run_dir / "checkpoints" / "latest.pt")["updater"]
    assert state["num_meta_updates"] > learner_state["version"]
    assert state["meta_dropped"] >= 0
    records = read_metrics(result.run_dir / "metrics.jsonl")
    restart_s = [r["perf/meta_restart_s"] for r in records if "perf/meta_restart_s" in r]
    assert len(restart_s) == 1 and records[-1]["perf/meta_restarts"] == 1.0
    print(
        f"meta restart: {restart_s[0]:.2f} s from the loss seen to the new answer; "
        f"{seen['answered_at'] - seen['killed_at']:.2f} s from the kill to the new answer "
        f"seen; mean return at the end {result.mean_return}"
    )
    assert result.mean_return is not None and result.mean_return >= 0.8  # Catch solved


class KillEvery:
    """A loop callback: SIGKILLs every meta-learner process once it has answered."""

    def __init__(self) -> None:
        self.killed: list[int] = []

    def __call__(self, ctx) -> None:
        link = ctx.learner.updater.schedule.link
        if link.pid is not None and link.pid not in self.killed:
            self.killed.append(link.pid)
            os.kill(link.pid, signal.SIGKILL)


def test_a_meta_learner_lost_again_and_again_stops_the_run_after_max_restarts(
    ray_local, tmp_path: Path
):
    # A budget the run must not reach: three starts and two replacements of the
    # meta-learner take 10-30 s here, and a quiet machine trains 400k steps in 10 s.
    budget = 20_000_000
    cfg = catch_async_cfg(tmp_path, budget, **{"meta.max_restarts": 2})
    kill = KillEvery()
    result = train(cfg, TrainOptions(progress=False, handle_signals=False, callback=kill))
    assert result.reason == "meta" and result.exit_code == ExitCode.FAILED
    assert "meta.max_restarts = 2" in result.message and "process died" in result.message
    assert len(kill.killed) == 3 and result.meta_restarts == 2
    assert result.env_steps < budget
    checkpoint = load_checkpoint(result.run_dir / "checkpoints" / "latest.pt")
    assert checkpoint["counters"]["env_steps"] == result.env_steps
    assert checkpoint["counters"]["meta_restarts"] == 2
