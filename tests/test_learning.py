"""Learning with the synchronous trainer: the bar every change keeps (DESIGN section 7).

Catch 10 x 5, solved = mean return >= 0.8 over the last 500 episodes.
Runs stop as soon as the bar is reached, so a pass costs seconds.
"""

from __future__ import annotations

import numpy as np
import pytest

from impala_frodo.config.presets import load_preset
from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.reports.analysis import steps_to_threshold
from learner.training.sync import train_sync

SOLVED, WINDOW = 0.8, 500


def steps_to_solve(algo: str, seed: int, budget: int) -> int | None:
    cfg = set_dotted(Config(), {"algo": algo, "run.seed": seed, "run.total_env_steps": budget})
    assert cfg.env.id == "impala_frodo/Catch-v0" and cfg.env.kwargs == {}  # bsuite's 10 x 5
    result = train_sync(cfg, stop_at_return=SOLVED)
    return steps_to_threshold(
        result.history.episode_returns, result.history.episode_end_steps, SOLVED, WINDOW
    )


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_impala_solves_catch_within_100k_steps(seed):
    steps = steps_to_solve("impala", seed, 100_000)
    assert steps is not None and steps <= 100_000, f"seed {seed}: not solved in 100k steps"


@pytest.mark.slow
def test_frodo_solves_catch_within_500k_steps_on_two_of_three_seeds():
    steps = {seed: steps_to_solve("frodo", seed, 500_000) for seed in (0, 1, 2)}
    solved = [s for s in steps.values() if s is not None]
    assert len(solved) >= 2, f"steps to {SOLVED} per seed: {steps}"


@pytest.mark.slow
def test_fixed_target_tracks_the_random_walk_reward_switches():
    """The value error jumps at each reward switch and falls again before the next one."""
    cfg = set_dotted(load_preset("randomwalk-td"), {"run.total_env_steps": 960 * 8})
    result = train_sync(cfg)
    steps = np.array([s for s, _ in result.history.value_rmse])
    rmse = np.array([e for _, e in result.history.value_rmse])
    for k in range(2, 8):  # switches at k * 960 env steps
        after = rmse[(steps > k * 960) & (steps <= k * 960 + 64)]
        late = rmse[(steps > (k + 1) * 960 - 160) & (steps <= (k + 1) * 960)]
        assert after.size and late.size
        assert late.mean() < after.mean(), f"no recovery after switch {k}"


@pytest.mark.slow
def test_frodo_random_walk_error_falls_after_switches():
    cfg = set_dotted(load_preset("randomwalk-frodo"), {"run.total_env_steps": 960 * 20})
    result = train_sync(cfg)
    steps = np.array([s for s, _ in result.history.value_rmse])
    rmse = np.array([e for _, e in result.history.value_rmse])
    recovered = 0
    for k in range(10, 20):
        after = rmse[(steps > k * 960) & (steps <= k * 960 + 64)]
        late = rmse[(steps > (k + 1) * 960 - 160) & (steps <= (k + 1) * 960)]
        recovered += int(late.mean() < after.mean())
    assert recovered >= 8, f"FRODO: error fell after only {recovered} of 10 switches"
