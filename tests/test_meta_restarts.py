"""A lost async meta-learner is replaced from the learner's eta (issue 33, part B), without
Ray: :class:`RayMetaLink` over fake processes that run a :class:`MetaLearner` here, die or
hang on request, and a clock moved by hand. The Ray runs are in tests/test_meta_actor.py."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from impala_frodo.config.schema import Config
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.meta_learner import MetaLearner, MetaLearnerError, MetaLearnerLost
from impala_frodo.rule.updater import Updater
from learner.training.books import Books
from learner.training.meta_actor import MetaLearnerSpec, RayMetaLink, RestartBudget
from tests.test_metagrad import NUM_ACTIONS, OBS_SHAPE, random_batch

TIMEOUT_S = 300.0


def tiny_cfg(**meta: Any) -> Config:
    return Config.from_dict(
        {
            "algo": "frodo",
            "agent": {"hidden_sizes": [4]},
            # Every window to the meta-learner: the tests count windows and meta steps.
            "meta": {"num_inner_steps": 2, "hidden_size": 3, "mode": "async", "every": 1, **meta},
        }
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeCall:
    """A call that finished at once (its value or its error), or hangs until ``hung`` is
    cleared."""

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value, self.error, self.hung = value, error, False

    def wait(self, timeout: float) -> bool:
        return not self.hung

    def result(self, timeout: float) -> Any:
        assert not self.hung
        if self.error is not None:
            raise self.error
        return self.value


class FakeProcess:
    """A meta-learner 'process' in this one: ``dead`` (its calls fail as a lost process's),
    ``hang`` (its calls never finish), ``fail`` (a step raises, as a bug would)."""

    pids = iter(range(1000, 2000))

    def __init__(self, cfg: Config) -> None:
        self.meta_learner = MetaLearner.build(cfg, OBS_SHAPE, NUM_ACTIONS)
        self.pid = next(self.pids)
        self.dead = self.hang = self.fail = self.killed = False
        self.loaded: list[dict[str, Any]] = []

    def call(self, method: str, *args: Any) -> FakeCall:
        if self.dead:
            return FakeCall(error=MetaLearnerLost("the meta-learner process died (SIGKILL)"))
        if method == "step" and self.fail:
            return FakeCall(error=MetaLearnerError("the meta-learner failed: a bug"))
        call = FakeCall(value=self._run(method, *args))
        call.hung = self.hang
        return call

    def _run(self, method: str, *args: Any) -> Any:
        if method == "pid":
            return self.pid
        if method == "load_state_dict":
            self.loaded.append(args[0])
            self.meta_learner.load_state_dict(args[0])
            return self.pid
        return self.meta_learner.step(args[0])

    def kill(self) -> None:
        self.killed = True


class Rig:
    """An async updater whose link runs fake processes (``processes``, in start order)."""

    def __init__(self, max_restarts: int = 3, window_s: float = 600.0) -> None:
        self.cfg = tiny_cfg()
        self.clock = Clock()
        self.processes: list[FakeProcess] = []
        self.hang_next = False  # the next process started never answers
        self.link = RayMetaLink(
            MetaLearnerSpec.of(self.cfg, OBS_SHAPE, NUM_ACTIONS),
            num_cpus=1.0,
            timeout_s=TIMEOUT_S,
            max_restarts=max_restarts,
            restart_window_s=window_s,
            clock=self.clock,
            start=self._start,
        )
        self.link.wait_started()
        self.updater = Updater(self.cfg, OBS_SHAPE, NUM_ACTIONS, meta_link=self.link)
        self.rng = np.random.default_rng(0)

    def _start(self) -> FakeProcess:
        self.processes.append(FakeProcess(self.cfg))
        self.processes[-1].hang = self.hang_next
        return self.processes[-1]

    def lose(self, max_updates: int = 4) -> dict[str, float]:
        """Kill the process, and update until the loss is seen (a window sent to it)."""
        restarts, self.process.dead = self.link.restarts, True
        for _ in range(max_updates):
            metrics = self.update()
            if self.link.restarts > restarts:
                return metrics
        raise AssertionError("the loss was not seen")

    @property
    def process(self) -> FakeProcess:
        return self.processes[-1]

    def update(self, times: int = 1) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for _ in range(times):
            metrics = self.updater.update(_float32(random_batch(self.rng)))
        return metrics

    def eta(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.updater.schedule.meta_net.state_dict().items()}


def _float32(batch: Batch) -> Batch:
    floats = ("obs", "rewards", "continues", "behaviour_log_probs", "truncation_obs")
    return dataclasses.replace(batch, **{name: getattr(batch, name).float() for name in floats})


def test_a_dead_meta_learner_is_replaced_from_the_learners_eta_and_meta_steps_go_on():
    rig = Rig()
    rig.update(7)  # windows of M = 2 plus the held-out batch: a few meta steps
    version = rig.updater.num_meta_updates
    assert version >= 2
    first = rig.process
    metrics = rig.lose()  # seen when a window is sent to the dead process
    assert rig.link.restarts == 1 and first.killed and len(rig.processes) == 2
    # The new process starts from the learner's eta and Adam state, bitwise.
    loaded, eta = rig.process.loaded[0], rig.eta()
    assert set(loaded["meta_net"]) == set(eta)
    assert all(torch.equal(loaded["meta_net"][k], eta[k]) for k in eta)
    schedule_state = rig.updater.schedule.meta_state()
    assert loaded["meta_optimizer"] is schedule_state["meta_optimizer"]
    assert loaded["version"] == rig.updater.num_meta_updates == version
    assert metrics["perf/meta_restarts"] == 1.0
    assert metrics["meta/dropped_windows"] == rig.link.dropped == 1
    metrics = rig.update()  # the new one's answer comes: the restart's time is reported
    assert metrics["perf/meta_restart_s"] == 0.0 and rig.link.pid == rig.process.pid
    rig.update(6)
    assert rig.updater.num_meta_updates > version  # eta moves again, from where it was
    state = rig.updater.state_dict()
    assert state["meta_dropped"] == 1 and "perf/meta_restart_s" not in rig.update()


def test_a_stuck_meta_step_is_replaced_after_the_deadline_and_its_window_dropped():
    rig = Rig()
    rig.update(4)
    rig.process.hang = True
    rig.update(3)  # a window sent, never answered
    assert rig.link.restarts == 0
    rig.clock.now += TIMEOUT_S + 1
    metrics = rig.update()
    assert rig.link.restarts == 1 and rig.processes[0].killed
    assert metrics["meta/dropped_windows"] >= 1
    rig.clock.now += 2.5
    assert rig.update()["perf/meta_restart_s"] == 2.5


def test_a_meta_step_that_raises_stops_the_run_without_a_restart():
    rig = Rig()
    rig.update(3)
    rig.process.fail = True
    with pytest.raises(MetaLearnerError, match="a bug") as raised:
        rig.update(3)
    assert not isinstance(raised.value, MetaLearnerLost)
    assert rig.link.restarts == 0 and len(rig.processes) == 1


def test_a_replacement_that_never_starts_stops_the_run():
    rig = Rig()
    rig.update(3)
    rig.hang_next = True  # the replacement never answers (not placed)
    rig.lose()
    rig.clock.now += TIMEOUT_S + 1
    with pytest.raises(MetaLearnerError, match="has not started"):
        rig.update()


def test_losses_past_max_restarts_within_the_window_stop_the_run():
    rig = Rig(max_restarts=2, window_s=100.0)
    for restarts in (1, 2):
        rig.update(3)
        rig.lose()
        assert rig.link.restarts == restarts
        rig.clock.now += 10.0
    rig.update(3)
    with pytest.raises(MetaLearnerError, match=r"meta\.max_restarts = 2 times within"):
        rig.lose()
    assert len(rig.processes) == 3


def test_losses_further_apart_than_the_window_are_replaced_every_time():
    rig = Rig(max_restarts=1, window_s=100.0)
    for restarts in (1, 2, 3):
        rig.update(3)
        rig.lose()
        assert rig.link.restarts == restarts
        rig.clock.now += 101.0


def test_max_restarts_zero_stops_at_the_first_loss():
    rig = Rig(max_restarts=0)
    rig.update(3)
    with pytest.raises(MetaLearnerError, match=r"process died.*meta\.max_restarts = 0"):
        rig.lose()


def test_restart_budget_counts_within_a_sliding_window():
    clock = Clock()
    budget = RestartBudget(2, 10.0, clock)
    assert budget.take()
    clock.now = 5.0
    assert budget.take() and not budget.take()
    clock.now = 10.5  # the first has left the window, the second not
    assert budget.take() and not budget.take()


def test_books_count_the_runs_meta_restarts_over_sessions():
    from impala_frodo.config.sections import RunConfig

    books = Books(RunConfig(), is_meta=True)
    books.add_update([], {"perf/meta_restarts": 2.0}, updates=1, meta_updates=0)
    assert books.counters.meta_restarts == 2
    assert books.take_record()["perf/meta_restarts"] == 2.0
    resumed = Books(RunConfig(), is_meta=True)
    resumed.load_state_dict(books.state_dict(), updates=1, meta_updates=0)
    resumed.add_update([], {"perf/meta_restarts": 1.0}, updates=2, meta_updates=0)
    assert resumed.counters.meta_restarts == 3
    assert "perf/meta_restarts" not in Books(RunConfig(), is_meta=True).take_record()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"meta": {"max_restarts": -1}}, "meta.max_restarts"),
        ({"run": {"restart_window_s": 0.0}}, "run.restart_window_s"),
    ],
)
def test_restart_settings_are_checked(overrides: dict[str, Any], field: str):
    from impala_frodo.config.checks import ConfigError

    with pytest.raises(ConfigError, match=field):
        Config.from_dict(overrides)
