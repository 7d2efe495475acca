"""No process of a local Ray instance outlives its driver: after a normal exit, and after
the driver is SIGKILLed (:mod:`learner.cluster.reaper`). Each test runs ``python -m learner
train`` in a subprocess and follows its process tree from /proc while it runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from learner.cluster.reaper import _stat, descendants
from learner.control.exit_codes import ExitCode
from tests.test_signals import DEADLINE_S, finish, start_training

#: Seconds the instance's processes may take to go after the driver: the reaper looks
#: every 0.5 s and kills at once when the driver's pipe closes; the rest is margin.
GONE_WITHIN_S = 10.0


def alive(known: dict[int, int]) -> list[str]:
    """The processes of ``known`` still running (same start time, not zombies), by name."""
    names = []
    for pid, start in known.items():
        info = _stat(pid)
        if info is not None and info[1] == start and info[2] != "Z":
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            names.append(f"{pid} {cmdline.decode(errors='replace').strip()[:80]}")
    return names


def wait_gone(known: dict[int, int]) -> list[str]:
    """What of ``known`` is still alive ``GONE_WITHIN_S`` s from now (empty as soon as all go)."""
    deadline = time.monotonic() + GONE_WITHIN_S
    while (left := alive(known)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def follow(process: subprocess.Popen, known: dict[int, int], seconds: float) -> None:
    """Record ``process``'s descendants for ``seconds`` (or until it exits)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        descendants([process.pid], known)
        time.sleep(0.1)


def _agents(known: dict[int, int]) -> list[str]:
    return [name for name in alive(known) if "Agent" in name]


@pytest.mark.ray
def test_no_process_of_the_local_instance_is_left_after_a_normal_exit(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    argv = ["--logdir", str(tmp_path), "--total-env-steps", "20000", "--no-progress"]
    small = ["--envs-per-actor", "8", "--unroll-length", "10"]
    process = subprocess.Popen(
        [sys.executable, "-m", "learner", "train", *argv, *small],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    known: dict[int, int] = {}
    try:
        follow(process, known, DEADLINE_S)
        err = finish(process)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == ExitCode.OK, err
    assert len(known) > 3, f"the instance's processes were not seen: {known}"
    assert wait_gone(known) == []


@pytest.mark.ray
def test_no_process_of_the_local_instance_is_left_after_the_driver_is_sigkilled(tmp_path):
    process = start_training(tmp_path)
    known: dict[int, int] = {}
    follow(process, known, 3.0)
    assert _agents(known), f"Ray's agents were not seen: {alive(known)}"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    process.stderr.close()
    assert wait_gone(known) == []
