"""A lost data-parallel learner rank is replaced and training goes on (issue 33, part A).

On a local Ray (2 CPUs): a rank killed mid-update leaves every rank, the replacement and
the survivor that had applied part of that update alike, at the state of the last
completed update, to the bit; a rank SIGKILLed during a Catch run is replaced and the run
reaches its budget with the ranks equal; a rank killed after every restart stops the run
once ``run.max_learner_restarts`` are spent, with a final checkpoint of a survivor's
clean state.
"""

from __future__ import annotations

import os
import signal
import time
from functools import partial

import pytest
import ray
import torch
import torch.distributed as dist

from actors.rollout import env_spec
from impala_frodo.config.checks import ConfigError
from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.records.checkpoint import load_checkpoint
from impala_frodo.records.runlog import read_metrics
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.updater import Updater
from learner.app.driver import TrainResult, train
from learner.control.exit_codes import ExitCode
from learner.training.group import LearnerGroup
from learner.training.learner import UpdateDropped, _all_finite
from learner.training.restarts import RestartBudget
from learner.training.result import describe_result
from tests.test_data_out_of_driver import RefOnly, two_learners, unrolls
from tests.test_learner_group import group_cfg, options


class DiesInItsFirstMetaUpdate(Updater):
    """An updater whose rank 1 SIGKILLs its own process in the inner step of the first
    update that took a meta step (after the meta step's collectives: its peer has
    applied that step), once: while ``flag`` exists, which it removes."""

    def __init__(self, *args, flag: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.flag = flag
        self._meta_at_start = 0

    def update(self, batch: Batch) -> dict[str, float]:
        self._meta_at_start = self.num_meta_updates
        return super().update(batch)

    def _inner_step(self, batch: Batch):
        stepped = self.num_meta_updates > self._meta_at_start
        if stepped and dist.get_rank() == 1 and os.path.exists(self.flag):
            os.remove(self.flag)
            os.kill(os.getpid(), signal.SIGKILL)
        return super()._inner_step(batch)


def rank_states(group: LearnerGroup) -> list[dict]:
    return ray.get([rank.state_dict.remote() for rank in group.ranks], timeout=60)


def assert_same_state(a: dict, b: dict, where: str = "") -> None:
    """Two updater states equal to the bit: every tensor, every count."""
    assert a.keys() == b.keys(), where
    for key, value in a.items():
        if isinstance(value, dict):
            assert_same_state(value, b[key], f"{where}.{key}")
        elif isinstance(value, torch.Tensor):
            assert torch.equal(value, b[key]), f"{where}.{key}"
        else:
            assert value == b[key], f"{where}.{key}: {value!r} != {b[key]!r}"


# ------------------------------------------------------------------ no Ray
def test_the_restart_budget_counts_restarts_within_the_window():
    now = [0.0]
    budget = RestartBudget(2, 10.0, clock=lambda: now[0])
    assert not budget.spent()
    budget.record()
    now[0] = 5.0
    budget.record()
    assert budget.spent()
    now[0] = 10.5  # the first has left the window
    assert not budget.spent()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("run.max_learner_restarts", -1, "run.max_learner_restarts must be an integer >= 0"),
        ("run.max_learner_restarts", 1.5, "run.max_learner_restarts must be an integer >= 0"),
        ("run.restart_window_s", 0.0, "run.restart_window_s"),
    ],
)
def test_restart_settings_are_checked(key, value, message):
    with pytest.raises(ConfigError, match=message):
        set_dotted(Config(), {key: value})


# ----------------------------------------------------------------- Ray
@pytest.mark.ray
def test_a_rank_lost_mid_update_leaves_every_rank_at_the_last_completed_update(ray_local, tmp_path):
    """Rank 1 dies after the meta step of update 3 (M = 2), when rank 0 has applied it:
    the update is dropped, and both ranks (rank 1 a new process) hold rank 0's state at
    the end of update 2, to the bit; later updates keep them equal."""
    cfg = two_learners("catch-frodo", **{"run.envs_per_actor": 8, "run.unroll_length": 10})
    spec = env_spec(cfg)
    flag = tmp_path / "die"
    flag.touch()
    make = partial(
        DiesInItsFirstMetaUpdate, cfg, spec.observation_shape, spec.num_actions, flag=str(flag)
    )
    data = unrolls(cfg, updates=6)
    group = LearnerGroup(cfg.run, make)
    try:
        for batch in data[:2]:
            group.update([RefOnly(t) for t in batch], truth=None, publish=False)
        before = group.state_dict()
        old_pid = ray.get(group.ranks[1].pid.remote(), timeout=60)
        with pytest.raises(UpdateDropped) as dropped:
            group.update([RefOnly(t) for t in data[2]], truth=None, publish=False)
        assert not flag.exists(), "rank 1 did not die in the meta update"
        assert dropped.value.unrolls == 4 and dropped.value.restart_s > 0
        assert ray.get(group.ranks[1].pid.remote(), timeout=60) != old_pid
        assert group.restarts == 1 and group.num_updates == 2
        for state in rank_states(group):
            assert_same_state(state, before)
        for batch in data[2:]:
            group.update([RefOnly(t) for t in batch], truth=None, publish=False)
            first, second = rank_states(group)
            assert_same_state(first, second)
        # The chain in progress restarts from the restored theta (as after a resume): the
        # meta step dropped with update 3 comes after updates 3 and 4 again.
        assert group.num_updates == 6 and group.num_meta_updates == 1
    finally:
        group.shutdown()


def _kill_rank(ctx, index: int = 1) -> float:
    """SIGKILL learner rank ``index``'s process (by its pid); returns when."""
    pid = ray.get(ctx.learner.updater.ranks[index].pid.remote(), timeout=60)
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


@pytest.mark.ray
def test_a_killed_rank_is_replaced_and_the_run_reaches_its_budget(ray_local, tmp_path):
    seen: dict = {"equal_after": []}

    def callback(ctx) -> None:
        learner = ctx.learner
        counters = learner.books.counters
        if counters.updates == 6 and "killed_at" not in seen:
            seen["killed_at"], seen["killed_updates"] = _kill_rank(ctx), counters.updates
        elif "killed_at" in seen and counters.updates > seen["killed_updates"]:
            seen.setdefault("training_again_s", time.monotonic() - seen["killed_at"])
            if len(seen["equal_after"]) < 4:  # the ranks stay equal, update after update
                first, second = rank_states(learner.updater)
                assert_same_state(first, second)
                seen["equal_after"].append(counters.updates)

    cfg = group_cfg(tmp_path, **{"run.total_env_steps": 6_000, "run.progress_timeout_s": 60.0})
    result = train_with(cfg, callback)
    assert result.exit_code == ExitCode.OK and result.reason == "budget", result.message
    assert result.learner_restarts == 1 and "1 learner restart(s)" in describe_result(result)
    assert len(seen["equal_after"]) == 4, seen
    print(f"from the kill to training again: {seen['training_again_s']:.2f} s")
    assert seen["training_again_s"] < 30.0, seen  # the goal, 10 s, on an unloaded machine
    records = read_metrics(result.run_dir / "metrics.jsonl")
    assert records[-1]["perf/learner_restarts"] == 1.0
    assert records[-1]["perf/dropped_unrolls"] == 2.0  # one unroll per learner
    restart_s = [r["perf/learner_restart_s"] for r in records if "perf/learner_restart_s" in r]
    assert len(restart_s) == 1 and 0 < restart_s[0] < seen["training_again_s"], restart_s
    saved = load_checkpoint(result.run_dir / "checkpoints" / "latest.pt")
    assert saved["counters"]["learner_restarts"] == 1


@pytest.mark.ray
def test_a_frozen_rank_is_replaced_once_its_update_times_out(ray_local, tmp_path):
    """SIGSTOP: the rank's sockets stay open, so its peer's collective only times out. After
    ``run.progress_timeout_s`` the group pings the ranks, kills the one that does not
    answer, and replaces it."""
    seen: dict = {}

    def callback(ctx) -> None:
        counters = ctx.learner.books.counters
        if counters.updates == 6 and "pid" not in seen:
            seen["pid"] = ray.get(ctx.learner.updater.ranks[1].pid.remote(), timeout=60)
            os.kill(seen["pid"], signal.SIGSTOP)
            seen["stopped_at"] = time.monotonic()
        elif "pid" in seen and counters.updates > 6 and "training_again_s" not in seen:
            seen["training_again_s"] = time.monotonic() - seen["stopped_at"]

    timeout_s = 20.0  # far above a normal call here, even under load
    cfg = group_cfg(
        tmp_path,
        "impala",
        **{"run.total_env_steps": 4_000, "run.progress_timeout_s": timeout_s},
    )
    try:
        result = train_with(cfg, callback)
    finally:
        if "pid" in seen and _alive(seen["pid"], 0.0):  # not replaced: leave none stopped
            os.kill(seen["pid"], signal.SIGKILL)
    assert result.exit_code == ExitCode.OK and result.reason == "budget", result.message
    assert result.learner_restarts == 1
    assert not _alive(seen["pid"]), "the frozen rank was not killed"
    print(f"from the SIGSTOP to training again: {seen['training_again_s']:.1f} s")
    assert timeout_s < seen["training_again_s"] < timeout_s + 60.0, seen


def _alive(pid: int, within_s: float = 5.0) -> bool:
    """``pid`` is still a live process (not a zombie) after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while _running(pid):
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.1)
    return False


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.ray
def test_a_rank_killed_after_every_restart_stops_the_run_with_a_final_checkpoint(
    ray_local, tmp_path
):
    kills: list[int] = []

    def callback(ctx) -> None:
        counters = ctx.learner.books.counters
        trained_since = counters.updates > (kills[-1] if kills else 3)
        if trained_since and counters.learner_restarts == len(kills):
            _kill_rank(ctx, index=len(kills) % 2)  # rank 0, then rank 1, then rank 0
            kills.append(counters.updates)

    cfg = group_cfg(
        tmp_path,
        "impala",
        **{
            "run.total_env_steps": 10**6,
            "run.max_learner_restarts": 2,
            "run.checkpoint_every_s": 1000.0,  # the final checkpoint is the one saved
            "run.progress_timeout_s": 60.0,
        },
    )
    result = train_with(cfg, callback)
    assert result.reason == "learners" and result.exit_code == ExitCode.FAILED, result.message
    assert "learner rank 0 (dead) lost; learner restarts spent" in result.message, result.message
    assert len(kills) == 3 and result.learner_restarts == 2
    saved = load_checkpoint(result.run_dir / "checkpoints" / "latest.pt")
    assert _all_finite(saved["updater"])
    assert saved["counters"]["learner_restarts"] == 2
    assert saved["counters"]["updates"] == saved["updater"]["num_updates"] == kills[-1]
    assert saved["counters"]["dropped_unrolls"] == 2 * 2  # the last loss ended the run


def train_with(cfg: Config, callback) -> TrainResult:
    return train(cfg, options(callback=callback))
