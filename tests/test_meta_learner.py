"""The async meta-learner without Ray (float64 updaters, and the synchronous trainer):
exact in lock-step, lagging when delayed; bad settings refused.

In lock-step (the learner installs each window's eta before its next inner step) the
async learner's first-order steps use the eta the meta-learner recomputes the window
with, so theta and eta must follow the chain schedule's to rounding error.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from impala_frodo.config.checks import ConfigError
from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.records.runlog import METRICS_FILE, read_metrics
from impala_frodo.rule.meta_learner import InProcessLink
from impala_frodo.rule.schedules import WindowSchedule
from impala_frodo.rule.updater import Updater
from learner.app.cli import main
from learner.cluster.session import check_local_cpus
from learner.control.exit_codes import ExitCode
from learner.training.sync import train_sync
from tests.test_metagrad import random_batch, tiny_updater

M = 2
WINDOWS = 3
#: Enough batches for WINDOWS meta steps and one inner step after the last.
NUM_BATCHES = WINDOWS * M + 1

CASES = [
    ("frodo", {}),
    ("frodo", {"target": "plain"}),
    ("frodo-ext", {"ext_beta_mode": "constant", "ext_b1": 0.3}),
    ("mgrl", {}),
]


def run(updater: Updater, seed: int, num_batches: int = NUM_BATCHES) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    return [updater.update(random_batch(rng)) for _ in range(num_batches)]


def assert_same_learning(a: Updater, b: Updater, tol: float = 1e-10) -> None:
    """theta, eta and Adam's moments on eta agree to ``tol``."""
    for name, value in a.params.items():
        torch.testing.assert_close(b.params[name], value, rtol=0, atol=tol, msg=f"theta {name}")
    for name, value in a.eta.items():
        torch.testing.assert_close(b.eta[name], value, rtol=0, atol=tol, msg=f"eta {name}")
    state_a = a.schedule.state_dict()["meta_optimizer"]["state"]
    state_b = b.schedule.state_dict()["meta_optimizer"]["state"]
    assert state_a.keys() == state_b.keys()
    for index, moments in state_a.items():
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(state_b[index][key], moments[key], rtol=0, atol=tol)


def pair(algo: str, **meta) -> tuple[Updater, Updater]:
    """An inline chain updater and an async one, both float64 with the same theta and eta."""
    common = {"optim": "rmsprop", "num_inner_steps": M} | meta
    chain = tiny_updater(algo, **common)
    lockstep = tiny_updater(algo, mode="async", **common)
    assert isinstance(lockstep.schedule, WindowSchedule)
    assert not lockstep.schedule.create_graph
    return chain, lockstep


@pytest.mark.parametrize(("algo", "meta"), CASES)
def test_lock_step_async_equals_the_chain_schedule(algo, meta):
    chain, lockstep = pair(algo, **meta)
    chain_metrics, async_metrics = run(chain, 0), run(lockstep, 0)
    assert chain.num_meta_updates == lockstep.num_meta_updates == WINDOWS
    assert lockstep.num_updates == chain.num_updates == NUM_BATCHES
    assert_same_learning(chain, lockstep)
    # The meta step's own numbers agree too, and the meta lag is 0.
    for step in range(M, NUM_BATCHES, M):
        assert async_metrics[step]["meta/lag"] == 0.0
        assert async_metrics[step]["meta/skipped_windows"] == 0.0
        assert async_metrics[step]["loss/outer"] == pytest.approx(
            chain_metrics[step]["loss/outer"], rel=1e-10
        )


class LateStartSchedule(WindowSchedule):
    """Hands out each window with theta one inner update after its real start."""

    def record(self, batch, params, opt_state):
        super().record(batch, params, opt_state)
        if len(self.pending) == 2:
            first, second = self.pending[0], self.pending[1]
            self.pending[0] = type(first)(first.batch, params, opt_state)
            self.pending[1] = second


@pytest.mark.parametrize(("algo", "meta"), CASES[:1] + CASES[-1:])
def test_the_comparison_fails_when_a_window_starts_one_update_late(algo, meta):
    chain, late = pair(algo, **meta)
    late.schedule = LateStartSchedule(M, late.meta_net, late.schedule.link)
    run(chain, 0)
    run(late, 0)
    assert late.num_meta_updates == WINDOWS
    with pytest.raises(AssertionError):
        assert_same_learning(chain, late)


def test_a_delayed_meta_learner_lags_and_departs_from_the_chain():
    chain, _ = pair("frodo")
    delayed = tiny_updater(
        "frodo", optim="rmsprop", num_inner_steps=M, mode="async", delay_windows=1
    )
    run(chain, 1, NUM_BATCHES + M)
    metrics = run(delayed, 1, NUM_BATCHES + M)
    lags = [m["meta/lag"] for m in metrics if "meta/lag" in m]
    assert lags == [1.0] * WINDOWS  # each eta one window late; the last still in flight
    assert delayed.num_meta_updates == WINDOWS and chain.num_meta_updates == WINDOWS + 1
    with pytest.raises(AssertionError):
        assert_same_learning(chain, delayed)


def test_the_state_dict_carries_eta_its_adam_state_and_the_meta_learner_progress():
    _, trained = pair("frodo")
    run(trained, 2)
    state = trained.state_dict()
    assert state["meta_windows"] == WINDOWS and state["num_meta_updates"] == WINDOWS
    _, restored = pair("frodo")
    restored.load_state_dict(state)
    assert_same_learning(trained, restored)
    assert restored.schedule.windows == WINDOWS and restored.num_meta_updates == WINDOWS
    # The restored learner's meta-learner starts from the restored eta and Adam state: from
    # a fresh window on both sides (a restore drops the window in progress), both go on to
    # learn the same from the same batches (a window, its meta step, one more inner step).
    assert isinstance(restored.schedule.link, InProcessLink)
    trained.schedule.clear()
    run(trained, 5, M + 1)
    run(restored, 5, M + 1)
    assert restored.num_meta_updates == trained.num_meta_updates == WINDOWS + 1
    assert_same_learning(trained, restored, tol=0.0)


def test_a_window_holds_its_start_its_batches_and_the_held_out_batch():
    _, lockstep = pair("frodo")
    sent = []
    link = lockstep.schedule.link
    original_send = link.send
    link.send = lambda window: (sent.append(window), original_send(window))[1]
    rng = np.random.default_rng(3)
    batches = [random_batch(rng) for _ in range(M + 1)]
    start = {k: v.clone() for k, v in lockstep.params.items()}
    for batch in batches:
        lockstep.update(batch)
    (window,) = sent
    assert window.index == 0 and window.held_out is batches[-1]
    assert window.batches == batches[:M]
    for name, value in start.items():
        assert torch.equal(window.params[name], value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"algo": "impala", "meta": {"mode": "async"}}, "needs an algorithm with meta-param"),
        ({"meta": {"mode": "async", "schedule": "sliding"}}, "meta.schedule = 'chain'"),
        ({"meta": {"mode": "later"}}, "meta.mode must be one of inline, async"),
        ({"meta": {"delay_windows": -1}}, "meta.delay_windows"),
        ({"meta": {"learner_num_cpus": 0}}, "meta.learner_num_cpus"),
        (
            {"meta": {"mode": "async"}, "run": {"num_learners": 2, "num_actors": 2}},
            "runs one learner beside its meta-learner",
        ),
    ],
)
def test_bad_async_settings_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_dict(overrides)


def sync_cfg(**overrides) -> Config:
    base = {
        "algo": "frodo",
        "run.num_envs": 8,
        "run.unroll_length": 10,
        "run.total_env_steps": 2_400,
        "meta.num_inner_steps": 3,
        "meta.every": 1,  # every window: the lock-step and meta-step counts are per window
        "run.device": "cpu",
    }
    return set_dotted(Config(), base | overrides)


def test_the_sync_trainer_in_lock_step_async_learns_as_inline():
    """The synchronous trainer's in-process meta-learner is lock-step: the same run."""
    seen: list[dict[str, float]] = []
    inline = train_sync(sync_cfg())
    lockstep = train_sync(
        sync_cfg(**{"meta.mode": "async"}), on_update=lambda learner, m: seen.append(m)
    )
    assert lockstep.updates == inline.updates == 30
    assert lockstep.history.episode_returns == inline.history.episode_returns
    lags = [m["meta/lag"] for m in seen if "meta/lag" in m]
    assert lags == [0.0] * ((30 - 1) // 3)


def test_the_sync_trainer_logs_meta_lag_and_meta_steps_per_env_steps(tmp_path):
    result = train_sync(
        sync_cfg(**{"meta.mode": "async", "meta.delay_windows": 2}), run_dir=tmp_path
    )
    records = read_metrics(tmp_path / METRICS_FILE)
    lags = [r["meta/lag"] for r in records if "meta/lag" in r]
    assert lags and all(lag == 2.0 for lag in lags)
    # Each record's meta steps per 1,000 env steps, times its env steps, add up to the
    # etas installed: 9 windows (one per M = 3 of the 30 updates), the last 2 in flight.
    steps = np.diff([0] + [r["env_steps"] for r in records])
    rates = [r["perf/meta_updates_per_1k_env_steps"] for r in records]
    assert sum(rate * n / 1000 for rate, n in zip(rates, steps, strict=True)) == pytest.approx(7)
    assert result.reason == "budget"


@pytest.mark.parametrize("mode_args", [["--set", "meta.mode=async"], ["--meta-mode", "async"]])
def test_async_impala_exits_2_with_one_line(capsys, mode_args):
    code = main(["train", "--algo", "impala", *mode_args])
    err = capsys.readouterr().err.strip()
    assert code == ExitCode.USAGE
    assert len(err.splitlines()) == 1 and "needs an algorithm with meta-parameters" in err


def test_a_meta_learner_that_cannot_be_placed_is_refused_up_front():
    cfg = sync_cfg(**{"meta.mode": "async", "meta.learner_num_cpus": 64.0})
    with pytest.raises(ConfigError, match="async meta-learner"):
        check_local_cpus(cfg)
    check_local_cpus(sync_cfg(**{"meta.learner_num_cpus": 64.0}))  # inline: no meta-learner
