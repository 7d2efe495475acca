"""A policy lag set on purpose: acting weights ``run.policy_lag`` versions old."""

from __future__ import annotations

import pytest
import torch

from actors.rollout import RolloutActor, RolloutSpec
from impala_frodo.config.checks import ConfigError
from impala_frodo.networks.weights import DelayedWeights, param_layout
from tests.test_learner import make_cfg, make_learner


def params(v: float) -> dict[str, torch.Tensor]:
    return {"w": torch.tensor([v])}


@pytest.mark.parametrize("lag", [0, 1, 3])
def test_delayed_weights_are_lag_versions_old(lag):
    delayed = DelayedWeights(lag)
    for version in range(10):
        got_version, got = delayed.push(version, params(version))
        expected = max(version - lag, 0)
        assert got_version == expected and got["w"].item() == expected


def test_delayed_weights_with_sparse_versions_take_the_newest_old_enough():
    delayed = DelayedWeights(4)
    for version in (0, 3, 6, 9):  # published every 3 versions
        got_version, _ = delayed.push(version, params(version))
    assert got_version == 3  # 9 - 4 = 5: the newest at or before it is 3


def test_delayed_weights_reject_bad_use():
    with pytest.raises(ValueError, match="lag"):
        DelayedWeights(-1)
    delayed = DelayedWeights(1)
    delayed.push(5, params(5))
    with pytest.raises(ValueError, match="decrease"):
        delayed.push(4, params(4))


def test_policy_lag_must_be_a_non_negative_integer():
    with pytest.raises(ConfigError, match=r"run\.policy_lag"):
        make_cfg(**{"run.policy_lag": -1})


def test_learner_publishes_weights_policy_lag_versions_old_and_measures_the_lag():
    cfg = make_cfg("impala", **{"run.policy_lag": 2})
    learner = make_learner(cfg)
    spec = RolloutSpec.from_config(cfg, num_envs=cfg.run.envs_per_actor)
    actor = RolloutActor(spec, param_layout(learner.behaviour_weights()[1]), seed=0)
    lags = []
    for _ in range(6):
        version, weights = learner.behaviour_weights()
        assert version == max(learner.version - 2, 0)
        actor.set_weights(version, weights)
        metrics = learner.update([actor.unroll()])
        lags.append(metrics["perf/policy_lag"])
    assert lags == [0.0, 1.0, 2.0, 2.0, 2.0, 2.0]
