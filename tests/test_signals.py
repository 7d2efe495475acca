"""SIGINT/SIGTERM, in real processes: one request stops a run with a final checkpoint, a
second aborts at once, and a process-group broadcast (``timeout -s INT``) is one request.

Most tests run ``python -m learner train`` in a subprocess (its own local Ray, 2 actors,
small unrolls) and signal it once training has started (the first metrics record), or
while its Ray instance starts; the rule that groups signals into requests is tested on a
small process that only installs the handlers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from learner.cluster.reaper import _stat, descendants
from learner.control.exit_codes import ExitCode
from learner.control.signals import COALESCE_S, StopRequests

#: Every wait on the subprocess has this deadline (seconds; a slow shared machine).
DEADLINE_S = 180.0


def start_training(
    tmp_path: Path, *extra: str, wrapper: Sequence[str] = (), new_session: bool = False
) -> subprocess.Popen:
    """A run with a budget it never reaches, once its first metrics record is written
    (``extra``: more arguments; ``wrapper``: a command it runs under, as ``timeout``)."""
    process = launch(tmp_path, *extra, wrapper=wrapper, new_session=new_session)
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline and process.poll() is None:
        metrics = list(tmp_path.glob("*/metrics.jsonl"))
        if metrics and metrics[0].stat().st_size:
            return process
        time.sleep(0.1)
    process.kill()
    _, err = process.communicate(timeout=60)
    pytest.fail(f"training did not start within {DEADLINE_S:g} s: {err[-2000:]}")


def launch(
    tmp_path: Path, *extra: str, wrapper: Sequence[str] = (), new_session: bool = False
) -> subprocess.Popen:
    """``python -m learner train`` with small unrolls and a budget it never reaches."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    argv = ["--logdir", str(tmp_path), "--total-env-steps", "1000000000", "--no-progress"]
    small = ["--envs-per-actor", "8", "--unroll-length", "10", "--set", "run.log_every_s=0.2"]
    return subprocess.Popen(
        [*wrapper, sys.executable, "-m", "learner", "train", *argv, *small, *extra],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=new_session,
    )


def finish(process: subprocess.Popen) -> str:
    try:
        _, err = process.communicate(timeout=DEADLINE_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=60)
    return err


@pytest.mark.ray
@pytest.mark.parametrize(
    ("second", "gap_s"),
    [(signal.SIGTERM, 0.005), (signal.SIGINT, 0.3)],
    ids=["sigterm-5ms-after", "sigint-300ms-after"],
)
def test_a_second_request_aborts_at_once_with_130(tmp_path, second, gap_s):
    """Another signal, or the same one later than a process-group broadcast's burst."""
    process = start_training(tmp_path)
    process.send_signal(signal.SIGINT)
    time.sleep(gap_s)
    process.send_signal(second)
    err = finish(process)
    assert process.returncode == ExitCode.INTERRUPTED, err
    assert f"second {signal.Signals(second).name}: aborted, without a final checkpoint" in err
    assert "Logging error" not in err and "Traceback" not in err, err


@pytest.mark.ray
def test_one_sigterm_stops_with_a_final_checkpoint_and_130(tmp_path):
    process = start_training(tmp_path)
    process.send_signal(signal.SIGTERM)
    err = finish(process)
    assert process.returncode == ExitCode.INTERRUPTED, err
    assert "SIGTERM: stopping (again to abort)" in err
    assert "final checkpoint: " in err and "stopped by a signal." in err
    assert "Logging error" not in err and "Traceback" not in err, err


#: A main thread stuck for good in native code with the GIL released (as in a Ray call
#: that never returns): a second lock of a default pthread mutex never returns, and no
#: Python signal handler can run in that thread.
STUCK_IN_NATIVE_CODE = """
import ctypes, sys
from learner.control.signals import StopSignal
StopSignal().install()
libc = ctypes.CDLL(None)
mutex = ctypes.create_string_buffer(64)  # zeroed: PTHREAD_MUTEX_INITIALIZER
libc.pthread_mutex_lock(mutex)
print("stuck", flush=True)
libc.pthread_mutex_lock(mutex)
"""


def test_a_second_signal_aborts_a_main_thread_stuck_in_native_code():
    process = subprocess.Popen(
        [sys.executable, "-c", STUCK_IN_NATIVE_CODE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline().strip() == "stuck"
        process.send_signal(signal.SIGINT)
        time.sleep(0.005)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=60)
    assert process.returncode == ExitCode.INTERRUPTED, err
    assert "second SIGTERM: aborted, without a final checkpoint" in err


# ------------------------------------------------- a process-group broadcast is one request
def test_the_same_signal_within_the_window_is_one_request():
    requests = StopRequests()
    assert requests.add(signal.SIGINT, 10.0)
    assert not requests.add(signal.SIGINT, 10.0)  # read together
    assert not requests.add(signal.SIGINT, 10.0 + COALESCE_S)  # the burst of a broadcast
    assert requests.add(signal.SIGINT, 10.0 + 3 * COALESCE_S)  # a person's second Ctrl-C
    assert requests.count == 2


def test_another_signal_is_another_request_at_once():
    requests = StopRequests()
    assert requests.add(signal.SIGINT, 0.0)
    assert requests.add(signal.SIGTERM, 0.001)
    assert requests.count == 2


#: A main thread busy in Python (so Python runs each handler at once), which says how its
#: stop request ended: it prints "graceful" if a second request did not abort it meanwhile.
BUSY_UNTIL_STOPPED = """
import time
from learner.control.signals import StopSignal
stop = StopSignal()
stop.install()
print("ready", flush=True)
while not stop.requested:
    pass
time.sleep(0.5)  # a second request would abort meanwhile
print("graceful", flush=True)
"""


@pytest.mark.parametrize("gap_s", [0.0, 0.01], ids=["back-to-back", "10ms-apart"])
def test_a_signal_sent_to_the_process_and_to_its_group_is_one_request(gap_s):
    """As ``timeout -s INT`` sends it: to its child, then to the child's process group."""
    process = subprocess.Popen(
        [sys.executable, "-c", BUSY_UNTIL_STOPPED],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout.readline().strip() == "ready"
        os.kill(process.pid, signal.SIGINT)
        time.sleep(gap_s)
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=60)
    assert process.returncode == 0 and "graceful" in out, err
    assert err.count("SIGINT: stopping (again to abort)") == 1, err


def run_dir_of(tmp_path: Path) -> Path:
    (run_dir,) = tmp_path.iterdir()
    return run_dir


@pytest.mark.ray
def test_timeout_s_int_stops_the_run_with_a_final_checkpoint(tmp_path):
    """``timeout -s INT``: its timer runs out (SIGALRM, sent here once training has
    started), and it sends SIGINT to the driver and then to the driver's process group."""
    timeout = shutil.which("timeout")
    if timeout is None:
        pytest.skip("coreutils timeout is not installed")
    wrapper = [timeout, "--preserve-status", "-s", "INT", "3600"]
    process = start_training(tmp_path, wrapper=wrapper)
    process.send_signal(signal.SIGALRM)
    err = finish(process)
    assert process.returncode == ExitCode.INTERRUPTED, err  # the driver's, preserved
    assert err.count("SIGINT: stopping") == 1 and "second" not in err, err
    assert "stopped by a signal." in err and "final checkpoint: " in err, err
    assert (run_dir_of(tmp_path) / "checkpoints" / "latest.pt").is_file()


@pytest.mark.ray
def test_a_group_sigint_stops_two_learners_with_a_final_checkpoint(tmp_path):
    """Two data-parallel learners (Ray actors in process groups of their own), and SIGINT
    to the driver and, 5 ms later, to its process group."""
    learners = ["--num-learners", "2", "--set", "run.learner_num_cpus=0.5", "--algo", "impala"]
    process = start_training(tmp_path, *learners, new_session=True)
    os.kill(process.pid, signal.SIGINT)
    time.sleep(0.005)
    os.killpg(process.pid, signal.SIGINT)
    err = finish(process)
    assert process.returncode == ExitCode.INTERRUPTED, err
    assert err.count("SIGINT: stopping") == 1 and "second" not in err, err
    assert "stopped by a signal." in err and "final checkpoint: " in err, err
    assert (run_dir_of(tmp_path) / "checkpoints" / "latest.pt").is_file()


# ------------------------------------------------------------- a signal while Ray starts
#: The command must end this soon after a signal while Ray starts (the issue's bound; the
#: driver looks every 0.1 s).
START_STOP_S = 1.0


def wait_for_ray_start(process: subprocess.Popen, known: dict[int, int]) -> None:
    """Until the driver has started Ray's GCS (the local instance is starting)."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline and process.poll() is None:
        for pid in descendants([process.pid], known):
            with contextlib.suppress(OSError):
                if b"gcs_server" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return
        time.sleep(0.02)
    pytest.fail(f"Ray did not start within {DEADLINE_S:g} s: {finish(process)[-2000:]}")


@pytest.mark.ray
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_ray_starts_ends_the_command_within_a_second(tmp_path, signum):
    process = launch(tmp_path / "runs")
    known: dict[int, int] = {}
    wait_for_ray_start(process, known)
    sent = time.monotonic()
    process.send_signal(signum)
    try:
        process.wait(timeout=DEADLINE_S)
    finally:
        took = time.monotonic() - sent
        err = finish(process)
    assert process.returncode == ExitCode.INTERRUPTED, err
    assert took < START_STOP_S, f"the command ended {took:.2f} s after the signal: {err}"
    assert "interrupted: stopped while starting the local Ray instance" in err, err
    assert "Traceback" not in err, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    deadline = time.monotonic() + 10.0  # nothing of the instance is left
    while (left := still_alive(known, process.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"processes of the instance left: {left}"


def still_alive(known: dict[int, int], driver: int) -> list[int]:
    """The processes of ``known`` (but the driver) still alive: same start time, no zombie."""
    left = []
    for pid, start in known.items():
        info = _stat(pid)
        if pid != driver and info is not None and info[1] == start and info[2] != "Z":
            left.append(pid)
    return left


#: A group SIGTERM must end the command this soon (measured 0.18 s; Ray's own shutdown
#: waited 7 s on the GCS the signal had reached).
GROUP_SIGTERM_EXIT_S = 4.0


@pytest.mark.ray
def test_a_group_sigterm_stops_with_a_final_checkpoint_without_waiting_on_ray(tmp_path):
    """SIGTERM to the process group (``timeout N``, ``kill -TERM -- -PGID``) reaches the
    local Ray instance's head processes too, which share the driver's group."""
    process = start_training(tmp_path, new_session=True)
    sent = time.monotonic()
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=DEADLINE_S)
    finally:
        took = time.monotonic() - sent
        err = finish(process)
    assert process.returncode == ExitCode.INTERRUPTED, err
    assert "stopped by a signal." in err and "final checkpoint: " in err, err
    assert (run_dir_of(tmp_path) / "checkpoints" / "latest.pt").is_file()
    assert took < GROUP_SIGTERM_EXIT_S, f"the command ended {took:.2f} s after the signal"
