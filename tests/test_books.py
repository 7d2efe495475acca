"""The learner's books on their own: counters, history, the return window, the log and
checkpoint cadence, and a resume; fed hand-made trajectories, with a clock moved by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from impala_frodo.acting.trajectory import Trajectory
from impala_frodo.config.sections import RunConfig
from learner.training.books import VALUE_RMSE, Books, Counters
from learner.training.result import StopReason, TrainResult

T, B = 4, 2


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def trajectory(returns: list[float], actor_id: int = 0) -> Trajectory:
    """T x B steps from ``actor_id``, in which episodes with ``returns`` ended."""
    return Trajectory(
        obs=np.zeros((T + 1, B, 1), np.float32),
        actions=np.zeros((T, B), np.int64),
        rewards=np.zeros((T, B), np.float32),
        continues=np.ones((T, B), np.float32),
        behaviour_log_probs=np.zeros((T, B), np.float32),
        policy_version=0,
        episode_returns=list(returns),
        episode_lengths=[3] * len(returns),
        actor_id=actor_id,
    )


def make_books(clock: FakeClock, is_meta: bool = False, **run) -> Books:
    settings = {"log_every_updates": 3, "log_every_s": 10.0, "checkpoint_every_s": 30.0}
    return Books(RunConfig(**(settings | run)), is_meta=is_meta, clock=clock)


def test_an_update_is_counted_once_into_counters_windows_and_history():
    books = make_books(FakeClock(), returns_window=3)
    two_actors = [trajectory([1.0]), trajectory([2.0, 3.0], actor_id=1)]
    books.add_update(two_actors, {}, updates=1, meta_updates=0)
    books.add_update([trajectory([4.0])], {VALUE_RMSE: 0.5}, updates=2, meta_updates=1)
    c = books.counters
    assert (c.env_steps, c.trajectories, c.episodes) == (3 * T * B, 3, 4)
    assert (c.updates, c.meta_updates) == (2, 1)  # the rule's counts
    assert list(books.recent_returns) == [2.0, 3.0, 4.0]  # the window keeps the last 3
    assert books.mean_return() == pytest.approx(3.0)
    assert books.history.episode_returns == [1.0, 2.0, 3.0, 4.0]
    assert books.history.episode_end_steps == [T * B, 2 * T * B, 2 * T * B, 3 * T * B]
    assert books.history.value_rmse == [(3 * T * B, 0.5)]
    assert books.trajectories_by_actor == {0: 2, 1: 1}


def test_solved_needs_a_full_window_at_the_threshold_and_done_the_budget():
    books = make_books(FakeClock(), returns_window=2, total_env_steps=2 * T * B)
    assert books.mean_return() is None and not books.solved(0.0)
    books.add_update([trajectory([1.0])], {}, updates=1, meta_updates=0)
    assert not books.solved(0.0) and not books.done  # one episode of two; half the budget
    books.add_update([trajectory([0.5])], {}, updates=2, meta_updates=0)
    assert books.solved(0.75) and not books.solved(0.76) and books.done


def test_records_come_after_the_first_update_then_every_n_updates_or_seconds():
    clock = FakeClock()
    books = make_books(clock)
    logged = []
    assert not books.log_due()  # nothing happened yet
    for update in range(1, 9):
        books.add_update([trajectory([])], {}, updates=update, meta_updates=0)
        if update == 6:
            clock.now += 10.0  # a slow stretch: the time limit comes first
        if books.log_due():
            books.take_record()
            logged.append(update)
    assert logged == [1, 4, 6]
    assert books.has_unlogged_steps()  # updates 7 and 8


def test_a_record_holds_the_intervals_means_episodes_and_rates():
    clock = FakeClock()
    books = make_books(clock, is_meta=True)
    books.add_update([trajectory([1.0, 3.0])], {"loss/inner": 2.0}, updates=1, meta_updates=0)
    books.take_record()
    clock.now += 4.0
    books.add_update([trajectory([5.0])], {"loss/inner": 1.0}, updates=2, meta_updates=1)
    books.add_update([trajectory([])], {"loss/inner": 3.0}, updates=3, meta_updates=1)
    books.count_actor_failures(2)
    record = books.take_record({"perf/queue_size": 1.5})
    assert record["loss/inner"] == 2.0  # the mean since the last record
    assert record["episode/return"] == 5.0 and record["episode/count"] == 1.0
    assert record["episode/return_window"] == pytest.approx(3.0)  # every episode so far
    assert record["perf/env_steps_per_s"] == pytest.approx(2 * T * B / 4.0)
    assert record["perf/updates_per_s"] == pytest.approx(2 / 4.0)
    assert record["perf/meta_updates_per_s"] == pytest.approx(1 / 4.0)
    assert record["perf/meta_updates_per_1k_env_steps"] == pytest.approx(1000 / (2 * T * B))
    assert record["perf/actor_failures"] == 2.0 and record["perf/queue_size"] == 1.5
    assert (record["progress/updates"], record["progress/episodes"]) == (3.0, 3.0)
    assert not books.has_unlogged_steps()


def test_checkpoints_are_due_every_checkpoint_every_s_from_the_last_one():
    clock = FakeClock()
    books = make_books(clock)
    clock.now += 29.0
    assert not books.checkpoint_due()
    clock.now += 1.0
    assert books.checkpoint_due()
    books.checkpoint_taken()
    assert not books.checkpoint_due()
    clock.now += 30.0
    books.restart_intervals()  # e.g. when the first trajectory comes
    assert not books.checkpoint_due()


def test_a_resume_continues_counters_windows_wall_time_and_failures():
    clock = FakeClock()
    books = make_books(clock, returns_window=4)
    books.add_update([trajectory([1.0, 2.0])], {}, updates=1, meta_updates=0)
    books.count_actor_failures(3)
    clock.now += 12.0
    state = json.loads(json.dumps(books.state_dict()))  # as a checkpoint holds it
    assert set(state) == {"counters", "recent_returns", "recent_lengths"}
    assert state["counters"]["wall_time_s"] == pytest.approx(12.0)

    resumed = make_books(clock, returns_window=4)
    clock.now += 100.0  # the time between the sessions is not the run's
    resumed.load_state_dict(state, updates=1, meta_updates=0)
    resumed.count_resume()
    clock.now += 3.0
    assert resumed.wall_time_s() == pytest.approx(15.0)
    assert list(resumed.recent_returns) == [1.0, 2.0] and resumed.counters.resumes == 1
    assert resumed.session_env_steps == 0 and not resumed.has_unlogged_steps()
    resumed.count_actor_failures(1)  # this session's: the run's are the earlier 3 plus 1
    resumed.add_update([trajectory([4.0])], {}, updates=2, meta_updates=0)
    c = resumed.counters
    assert (c.env_steps, c.updates, c.episodes, c.actor_failures) == (2 * T * B, 2, 3, 4)
    assert resumed.session_env_steps == T * B and resumed.history.episode_returns == [4.0]
    assert resumed.log_due()  # the session's first record comes after its first update


def test_the_rules_counts_win_over_the_saved_ones_and_old_counters_still_load():
    books = make_books(FakeClock())
    saved = {"counters": {"env_steps": 80, "updates": 3, "unknown_counter": 1}}
    books.load_state_dict(saved, updates=5, meta_updates=2)
    assert books.counters == Counters(env_steps=80, updates=5, meta_updates=2)


def test_a_result_takes_the_run_from_the_books_and_the_session_from_its_caller(tmp_path):
    clock = FakeClock()
    books = make_books(clock, total_env_steps=1000, returns_window=2)
    books.load_state_dict({"counters": {"env_steps": 40, "episodes": 1}}, updates=1, meta_updates=0)
    books.add_update([trajectory([1.0, 2.0])], {}, updates=2, meta_updates=0)
    result = TrainResult.from_books(
        books, StopReason.SIGNAL, run_dir=tmp_path, wall_s=2.0, unrolls={"submitted": 1}
    )
    assert (result.env_steps, result.updates, result.episodes) == (40 + T * B, 2, 3)
    assert result.session_env_steps == T * B and result.env_steps_per_s == T * B / 2.0
    assert (result.budget, result.returns_window, result.mean_return) == (1000, 2, 1.5)
    assert result.reason == StopReason.SIGNAL and result.unrolls == {"submitted": 1}
    assert result.history.episode_returns == [1.0, 2.0] and result.last_log == {}
