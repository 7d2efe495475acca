"""The driver's parts without Ray: stop reasons and their exit codes, the stall watchdog."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from impala_frodo.records.runlog import StorageError
from impala_frodo.rule.meta_learner import MetaLearnerError
from impala_frodo.rule.updater import NonFiniteLossError
from learner.cluster.actor_pool import TrainingError
from learner.control.exit_codes import EXIT_CODES_HELP, ExitCode
from learner.training.group import LearnerFailure
from learner.training.loop import StallWatchdog
from learner.training.result import StopReason, TrainResult, describe_result, failure_of


def test_every_stop_reason_is_its_string_and_carries_its_exit_code():
    assert StopReason("budget") is StopReason.BUDGET and StopReason.NAN == "nan"
    assert f"{StopReason.DISK}: x" == "disk: x"
    codes = {reason.value: reason.exit_code for reason in StopReason}
    assert codes == {
        "budget": ExitCode.OK,
        "return": ExitCode.OK,
        "signal": ExitCode.INTERRUPTED,
        "nan": ExitCode.FAILED,
        "disk": ExitCode.FAILED,
        "actors": ExitCode.FAILED,
        "meta": ExitCode.FAILED,
        "learners": ExitCode.FAILED,
    }
    result = TrainResult(Path("runs/x"), reason=StopReason.SIGNAL)
    assert result.exit_code == 130 and describe_result(result).startswith("stopped by a signal. ")


def test_the_exceptions_that_end_a_loop_map_to_their_reasons():
    assert failure_of(NonFiniteLossError("loss")).reason is StopReason.NAN
    assert failure_of(StorageError("disk")).reason is StopReason.DISK
    assert failure_of(TrainingError("actors")).final_checkpoint  # the learner is fine
    meta = failure_of(MetaLearnerError("gone"))
    assert meta.reason is StopReason.META and meta.final_checkpoint  # eta as last received
    # Data-parallel learners may be stuck in a collective: no state to save.
    learners = failure_of(LearnerFailure("rank 1 died"))
    assert learners.reason is StopReason.LEARNERS and not learners.final_checkpoint
    aborted = failure_of(KeyboardInterrupt())
    assert aborted.reason is StopReason.SIGNAL and not aborted.final_checkpoint


def test_the_exit_codes_help_names_every_code():
    for code in ExitCode:
        assert f"{int(code)} " in EXIT_CODES_HELP


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_stall_watchdog_warns_then_stops_and_progress_resets_it(caplog):
    clock = _Clock()
    watchdog = StallWatchdog(timeout_s=100.0, warn_every_s=30.0, clock=clock)
    clock.now = 31.0
    watchdog.check(lambda: "actor 0")
    assert "no trajectories for 31 s" in caplog.text
    clock.now = 99.0
    watchdog.progressed()
    clock.now = 150.0
    watchdog.check(lambda: "actor 0")  # 51 s since the last trajectory
    clock.now = 200.0
    with pytest.raises(TrainingError, match=r"no progress for 101 s .* from actor 0"):
        watchdog.check(lambda: "actor 0")


def test_the_ray_session_does_not_import_the_driver():
    code = "import sys, learner.cluster.session; assert 'learner.app.driver' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unrolls_finished_before_a_blocked_driver_looked_do_not_restart_the_deadline():
    """The raylet SIGKILLed: the driver blocks 13 s in a Ray call, then takes the unrolls
    finished before the kill. The deadline still counts from then, not from the take."""
    clock = _Clock()
    watchdog = StallWatchdog(timeout_s=30.0, clock=clock)
    clock.now = 10.0
    watchdog.progressed()  # the last unroll before the kill, taken as it finished
    watchdog.looked()
    clock.now = 23.0  # the driver was blocked from 10 s to 23 s
    watchdog.progressed(waiting_already=True)  # finished by 10 s: it was waiting
    watchdog.looked()
    clock.now = 39.0
    watchdog.check(lambda: "actor 0")  # 29 s since the last unroll finished
    clock.now = 41.0
    with pytest.raises(TrainingError, match=r"no progress for 31 s"):
        watchdog.check(lambda: "actor 0")


def test_an_unroll_that_finished_during_the_wait_restarts_the_deadline_then():
    clock = _Clock()
    watchdog = StallWatchdog(timeout_s=30.0, clock=clock)
    clock.now = 25.0
    watchdog.progressed(waiting_already=False)
    watchdog.looked()
    clock.now = 50.0
    watchdog.check(lambda: "actor 0")  # 25 s since it came


def test_a_dead_raylet_is_named():
    from types import SimpleNamespace

    from learner.cluster.local_instance import head_failure

    process = subprocess.Popen(["sleep", "60"])
    processes = {"raylet": [SimpleNamespace(process=process)]}
    try:
        assert head_failure(processes) is None
        process.kill()
        process.wait(timeout=60)
        assert head_failure(processes) == (
            f"the local Ray node is lost: its raylet (pid {process.pid}) died (killed by SIGKILL)"
        )
    finally:
        if process.poll() is None:
            process.kill()
    assert head_failure({}) is None
