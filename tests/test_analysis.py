"""Per-seed summaries behind docs/results.md."""

from __future__ import annotations

import numpy as np
import pytest

from impala_frodo.envs import BatchedRandomWalk
from impala_frodo.reports.analysis import (
    catch_summary,
    curve,
    random_walk_summary,
    solved_cell,
    steps_to_threshold,
    value_error_metrics,
)


def test_steps_to_threshold_is_the_first_window_at_or_above():
    returns = [-1.0] * 4 + [1.0] * 6
    end_steps = list(range(10, 110, 10))
    # Windows of 4: the mean first reaches 0.5 with three 1s in the window (episode 6, 70).
    assert steps_to_threshold(returns, end_steps, 0.5, 4) == 70
    assert steps_to_threshold(returns, end_steps, 1.5, 4) is None
    assert steps_to_threshold(returns[:3], end_steps[:3], 0.0, 4) is None


def test_catch_summary_final_return_uses_the_last_tenth_of_the_budget():
    returns = [0.0] * 90 + [1.0] * 10
    end_steps = list(range(1, 101))
    summary = catch_summary(returns, end_steps, total_steps=100, window=5)
    assert summary["final_return"] == 1.0
    assert summary["steps_to_0.8"] == 94  # four 1s in the last five episodes


def test_random_walk_summary_separates_the_steps_after_switches():
    switch_every, total = 100, 400
    points = [(s, 1.0 if 0 < s % switch_every <= 20 else 0.0) for s in range(10, total + 1, 10)]
    summary = random_walk_summary(points, switch_every, total, after=20)
    assert summary["rmse_after_switch"] == 1.0  # only steps 110, 120, 210, 220, 310, 320
    assert summary["rmse_all"] == pytest.approx(8 / 40)  # 10 and 20 count in "all" only
    assert summary["rmse_second_half"] == pytest.approx(4 / 20)


def test_curve_bins_by_step_and_leaves_empty_bins_empty():
    assert curve([(0, 1.0), (10, 3.0), (60, 5.0)], total_steps=100, bins=4) == [
        2.0,
        None,
        5.0,
        None,
    ]
    assert curve([], 100, 2) == [None, None]


def test_solved_cell():
    assert solved_cell([1000, None, 3000]) == "2/3 (2k)"
    assert solved_cell([None]) == "0/1"


def test_value_error_after_a_switch_is_logged_only_in_its_window():
    predicted, true = np.zeros(5), np.full(5, 0.5)
    assert value_error_metrics(predicted, true, None) == {"eval/value_rmse": 0.5}
    assert value_error_metrics(predicted, true, -1) == {"eval/value_rmse": 0.5}  # no switch yet
    assert "eval/value_rmse_after_switch" not in value_error_metrics(predicted, true, 0)
    assert value_error_metrics(predicted, true, 100)["eval/value_rmse_after_switch"] == 0.5
    assert "eval/value_rmse_after_switch" not in value_error_metrics(predicted, true, 101)


def test_random_walk_counts_steps_since_its_reward_switched():
    env = BatchedRandomWalk(2, switch_every=10, seed=0)
    env.reset()
    seen = []
    for _ in range(25):
        env.step(np.zeros(2, np.int64))
        seen.append(int(env.steps_since_switch()[0]))
    assert seen[:9] == [-1] * 9 and seen[9:12] == [0, 1, 2] and seen[19] == 0
