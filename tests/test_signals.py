"""SIGINT/SIGTERM through the command line, in a real process: a second one aborts at once.

Each test runs ``python -m learner train`` in a subprocess (its own local Ray, 2 actors,
small unrolls) and signals it once training has started (the first metrics record).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from learner.control.exit_codes import ExitCode

#: Every wait on the subprocess has this deadline (seconds; a slow shared machine).
DEADLINE_S = 180.0


def start_training(tmp_path: Path) -> subprocess.Popen:
    """A run with a budget it never reaches, once its first metrics record is written."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    argv = ["--logdir", str(tmp_path), "--total-env-steps", "1000000000", "--no-progress"]
    small = ["--envs-per-actor", "8", "--unroll-length", "10", "--set", "run.log_every_s=0.2"]
    process = subprocess.Popen(
        [sys.executable, "-m", "learner", "train", *argv, *small],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline and process.poll() is None:
        metrics = list(tmp_path.glob("*/metrics.jsonl"))
        if metrics and metrics[0].stat().st_size:
            return process
        time.sleep(0.1)
    process.kill()
    _, err = process.communicate(timeout=60)
    pytest.fail(f"training did not start within {DEADLINE_S:g} s: {err[-2000:]}")


def finish(process: subprocess.Popen) -> str:
    try:
        _, err = process.communicate(timeout=DEADLINE_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=60)
    return err


@pytest.mark.ray
@pytest.mark.parametrize("gap_s", [0.005, 0.3], ids=["5ms-apart", "300ms-apart"])
def test_a_second_sigint_aborts_at_once_with_130(tmp_path, gap_s):
    process = start_training(tmp_path)
    process.send_signal(signal.SIGINT)
    time.sleep(gap_s)
    process.send_signal(signal.SIGINT)
    err = finish(process)
    assert process.returncode == ExitCode.INTERRUPTED, err
    assert "second SIGINT: aborted, without a final checkpoint" in err
    assert "Logging error" not in err and "Traceback" not in err, err


@pytest.mark.ray
def test_one_sigterm_stops_with_a_final_checkpoint_and_130(tmp_path):
    process = start_training(tmp_path)
    process.send_signal(signal.SIGTERM)
    err = finish(process)
    assert process.returncode == ExitCode.INTERRUPTED, err
    assert "SIGTERM: stopping after this update with a final checkpoint" in err
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
