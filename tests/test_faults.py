"""Faults never lose data: one session per run dir, disk errors, nothing good overwritten.

The Ray tests use small unrolls (8 envs x 10 steps) on a local Ray with 2 CPUs.
Disk faults are simulated by making the write raise the OSError the kernel would
(the suite may run as root, for whom a read-only mode bit does not stop a write).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray

from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.records import checkpoint as ckpt
from impala_frodo.records import runlog
from impala_frodo.records.checkpoint import CheckpointManager, load_checkpoint
from impala_frodo.records.runlog import RunDirError, RunLock, check_writable, create_run_dir
from learner.app.cli import main
from learner.app.driver import TrainOptions, train
from learner.control.exit_codes import ExitCode


def small_cfg(tmp_path: Path, **overrides) -> Config:
    base = {
        "algo": "impala",
        "run.num_actors": 2,
        "run.envs_per_actor": 8,
        "run.unroll_length": 10,
        "run.total_env_steps": 8_000,
        "run.queue_size": 4,
        "run.log_every_s": 0.2,
        "run.checkpoint_every_s": 0.2,
        "run.logdir": str(tmp_path / "runs"),
    }
    return set_dotted(Config(), base | overrides)


def options(**kwargs) -> TrainOptions:
    return TrainOptions(progress=False, handle_signals=False, **kwargs)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("impala-frodo: error: "), err
    return err[0]


# ------------------------------------------------------------------ the lock
def test_a_second_session_in_a_run_dir_is_refused(tmp_path, capsys):
    run_dir = create_run_dir(Config(), tmp_path)
    CheckpointManager(run_dir / "checkpoints").save({"counters": {"env_steps": 0}})
    with RunLock(run_dir):  # a session is training there
        assert main(["train", "--resume", str(run_dir), "--no-progress"]) == ExitCode.USAGE
        line = one_error_line(capsys)
        assert "in use by another training session" in line and f"pid {os.getpid()}" in line
    assert not (run_dir / "metrics.jsonl").exists()
    with RunLock(run_dir):  # released: the next session may go
        pass


def test_the_lock_goes_with_its_process_however_it_dies(tmp_path):
    code = (
        "import sys, time; from impala_frodo.records.runlog import RunLock; "
        f"RunLock({str(tmp_path)!r}).acquire(); print('locked', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match="in use"):
            RunLock(tmp_path).acquire()
        holder.kill()  # SIGKILL: no clean-up code runs
        holder.wait(timeout=60)
        RunLock(tmp_path).acquire().release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=60)


# ------------------------------------------------------------- disk, at start
def test_a_logdir_that_cannot_hold_a_run_exits_2(tmp_path, capsys):
    logdir = tmp_path / "a-file"
    logdir.write_text("not a folder")
    assert main(["train", "--logdir", str(logdir), "--no-progress"]) == ExitCode.USAGE
    assert "cannot create a run directory under logdir" in one_error_line(capsys)


@pytest.mark.parametrize("fault", [errno.EROFS, errno.ENOSPC], ids=["read-only", "full"])
def test_a_run_dir_that_cannot_be_written_exits_2_before_training(
    tmp_path, capsys, monkeypatch, fault
):
    run_dir = create_run_dir(Config(), tmp_path)
    CheckpointManager(run_dir / "checkpoints").save({"counters": {"env_steps": 0}})
    real_write = os.write

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1].startswith(".write-probe."):
            raise OSError(fault, os.strerror(fault))
        return real_write(fd, data)

    monkeypatch.setattr(runlog.os, "write", write)
    monkeypatch.setattr(ray, "init", _no_ray)
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == ExitCode.USAGE
    line = one_error_line(capsys)
    assert f"cannot write to {str(run_dir)!r}: {os.strerror(fault)}" in line
    assert not list(run_dir.rglob(".write-probe.*"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_checkpoints_folder_is_found_before_training(tmp_path):
    run_dir = create_run_dir(Config(), tmp_path)
    (run_dir / "checkpoints").mkdir()  # a run directory gets it with its first checkpoint
    (run_dir / "checkpoints").chmod(0o555)
    try:
        with pytest.raises(RunDirError, match="checkpoints"):
            check_writable(run_dir)
    finally:
        (run_dir / "checkpoints").chmod(0o755)


def _no_ray(*args, **kwargs):
    raise AssertionError("Ray was started for a run that should have stopped before it")


# --------------------------------------------------------- disk, at a later save
@pytest.mark.ray
def test_a_full_disk_at_a_later_save_stops_with_exit_1_and_keeps_the_last_checkpoint(
    ray_local, tmp_path, monkeypatch
):
    real_write_temp = ckpt._write_temp
    saves: list[int] = []

    def write_temp(obj, path):
        saves.append(obj["counters"]["env_steps"])
        if len(saves) > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_temp(obj, path)

    monkeypatch.setattr(ckpt, "_write_temp", write_temp)
    result = train(small_cfg(tmp_path, **{"run.total_env_steps": 10**9}), options())
    assert result.exit_code == ExitCode.FAILED and result.reason == "disk"
    assert "No space left on device" in result.message and "\n" not in result.message
    latest = result.run_dir / "checkpoints" / "latest.pt"
    assert f"the last good checkpoint is kept at {latest}" in result.message
    assert load_checkpoint(latest)["counters"]["env_steps"] == saves[2]
    assert len(saves) == 4, "a save was tried after the disk had failed"


#: What torch's zip writer raises over the ENOSPC it met (torch.save onto a file).
ZIP_WRITER_ERROR = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"


@pytest.mark.ray
def test_a_run_on_a_file_system_that_fills_up_exits_1_in_one_line(
    ray_local, tmp_path, small_tmpfs, fill_up
):
    """A real full disk (a 4 MiB tmpfs): whichever write meets it first, the run stops
    with exit 1, one line, and the last good checkpoint kept."""
    kept: list[bytes] = []

    def callback(ctx) -> None:
        if ctx.learner.books.counters.updates == 10:
            # A good checkpoint now, whatever the timer did (a loaded machine may not have
            # saved one in the first 10 updates), then the disk fills.
            kept.append(ctx.learner.checkpoint().read_bytes())
            fill_up(small_tmpfs, leave=64 * 1024)  # the next save fails inside torch's writer

    cfg = small_cfg(tmp_path, **{"run.logdir": str(small_tmpfs), "run.total_env_steps": 10**9})
    result = train(cfg, options(callback=callback))
    assert result.exit_code == ExitCode.FAILED and result.reason == "disk", result.message
    assert "No space left on device" in result.message and "\n" not in result.message
    latest = result.run_dir / "checkpoints" / "latest.pt"
    assert kept and latest.read_bytes() == kept[0], "latest.pt changed after the disk filled"
    assert f"the last good checkpoint is kept at {latest}" in result.message


@pytest.mark.ray
def test_a_final_checkpoint_torch_s_writer_fails_exits_1_in_one_line(
    ray_local, tmp_path, monkeypatch
):
    real_save = ckpt.torch.save
    failing: list[bool] = []

    def save(obj, f, *args, **kwargs):
        if failing:
            raise RuntimeError(ZIP_WRITER_ERROR)
        return real_save(obj, f, *args, **kwargs)

    def callback(ctx) -> None:
        if ctx.learner.books.counters.updates == 10:
            failing.append(True)
            ctx.stop.signum = signal.SIGTERM  # stop now: the final checkpoint fails

    monkeypatch.setattr(ckpt.torch, "save", save)
    cfg = small_cfg(tmp_path, **{"run.checkpoint_every_s": 1e6, "run.total_env_steps": 10**9})
    result = train(cfg, options(callback=callback))
    assert result.exit_code == ExitCode.FAILED and result.reason == "disk", result.message
    assert result.message.startswith("the final checkpoint failed: cannot save a checkpoint")
    assert "torch.save failed (unexpected pos 576 vs 534)" in result.message
    assert "\n" not in result.message and "enforce fail" not in result.message


@pytest.mark.ray
def test_a_resume_changes_config_json_only_with_its_first_checkpoint(ray_local, tmp_path):
    first = train(small_cfg(tmp_path), options())
    assert first.exit_code == ExitCode.OK
    run_dir = first.run_dir
    config = run_dir / "config.json"
    budget = lambda: json.loads(config.read_text())["run"]["total_env_steps"]  # noqa: E731
    seen: list[int] = []
    cfg = small_cfg(tmp_path, **{"run.total_env_steps": 16_000, "run.checkpoint_every_s": 1e6})
    second = train(cfg, options(resume_dir=run_dir, callback=lambda ctx: seen.append(budget())))
    assert second.exit_code == ExitCode.OK and seen
    assert set(seen) == {8_000}, "config.json changed before the session had a checkpoint"
    assert budget() == 16_000  # with the final checkpoint


@pytest.mark.ray
def test_a_resume_that_adds_no_steps_overwrites_nothing(ray_local, tmp_path):
    first = train(small_cfg(tmp_path), options())
    files = [first.run_dir / "config.json", *(first.run_dir / "checkpoints").iterdir()]
    assert len(files) == 3  # config.json, latest.pt, previous.pt
    before = {p: p.read_bytes() for p in files}
    for budget in (8_000, 4_000):  # the budget already reached; a lower one
        cfg = small_cfg(tmp_path, **{"run.total_env_steps": budget})
        again = train(cfg, options(resume_dir=first.run_dir))
        assert again.exit_code == ExitCode.OK and again.session_env_steps == 0
        assert {p: p.read_bytes() for p in files} == before


# ------------------------------------------------------------- no run ever hangs
@pytest.mark.ray
def test_an_actor_ray_gave_up_on_is_replaced_however_few_deaths_the_driver_saw(ray_local, tmp_path):
    """Ray gives up on an actor while the driver believes restarts are left (in the
    field: the same actor killed again while Ray restarts it; here, deterministically,
    a kill Ray may not restart from): its ActorDiedError is final, the actor replaced."""
    seen_after: list[int] = []
    throttle_until = time.monotonic() + 600

    def callback(ctx) -> None:
        if ctx.learner.books.counters.updates == 20:
            ray.kill(ctx.pool.slots[0].handle, no_restart=True)
        elif ctx.pool.slots[0].replacements:
            seen_after.append(ctx.learner.books.trajectories_by_actor[0])
            # Hold the budget back until the new actor delivered: on a fast machine the
            # surviving actor alone could finish the run while the new one starts up.
            if seen_after[-1] == seen_after[0] and time.monotonic() < throttle_until:
                time.sleep(0.05)

    cfg = small_cfg(tmp_path, **{"run.total_env_steps": 24_000, "run.progress_timeout_s": 120})
    result = train(cfg, options(callback=callback, max_actor_restarts=3))
    assert result.exit_code == ExitCode.OK and result.env_steps >= 24_000, result.message
    assert result.actor_failures == 1
    assert seen_after and seen_after[-1] > seen_after[0], "the new actor 0 never delivered"
    u = result.unrolls
    assert u["submitted"] == u["collected"] + u["lost"] + u["abandoned"], u


@pytest.mark.ray
def test_an_actor_that_fails_at_start_up_stops_the_run_at_once(ray_local, tmp_path):
    import gymnasium

    # Registered in this (driver) process only: the actors' processes cannot make it.
    gymnasium.register("DriverOnly-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv")
    try:
        cfg = small_cfg(tmp_path, **{"env.id": "DriverOnly-v0", "run.progress_timeout_s": 120})
        result = train(cfg, options())
    finally:
        gymnasium.registry.pop("DriverOnly-v0")
    assert result.exit_code == ExitCode.FAILED and result.reason == "actors"
    assert "failed at start-up" in result.message and "DriverOnly" in result.message
    assert "\n" not in result.message


@pytest.mark.ray
def test_no_progress_for_progress_timeout_s_exits_1_saying_what_waited(ray_local, tmp_path):
    # 3 CPUs an actor on a 2-CPU Ray: no actor is ever placed.
    cfg = small_cfg(tmp_path, **{"run.actor_num_cpus": 3.0, "run.progress_timeout_s": 3.0})
    result = train(cfg, options())
    assert result.exit_code == ExitCode.FAILED and result.reason == "actors"
    message = result.message
    assert "no progress for" in message and "run.progress_timeout_s" in message
    assert "actor 0: 2 unroll call(s) in flight" in message  # queue_size 4 / 2 actors
    assert "actor 1: 2 unroll call(s) in flight" in message
    assert "no unroll since it was created" in message


def _cli(*argv: str, **popen) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    command = [sys.executable, "-m", "learner", *argv, "--no-progress"]
    return subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, **popen)


def test_a_cluster_address_that_refuses_exits_2_at_once(tmp_path):
    process = _cli("--address", "127.0.0.1:1", "--logdir", str(tmp_path))
    _, err = process.communicate(timeout=120)
    assert process.returncode == ExitCode.USAGE, err
    assert err.strip().splitlines() == [
        "impala-frodo: error: cannot reach the Ray cluster at '127.0.0.1:1': Connection refused"
    ]
    assert not any(tmp_path.iterdir()), "a refused run left its run directory behind"


@pytest.fixture
def silent_endpoint():
    """A TCP port that accepts connections and never says a word (not a Ray GCS)."""
    import socket

    server = socket.create_server(("127.0.0.1", 0))
    yield f"127.0.0.1:{server.getsockname()[1]}"
    server.close()


def test_a_cluster_that_does_not_answer_exits_2_after_connect_timeout_s(tmp_path, silent_endpoint):
    argv = ["--address", silent_endpoint, "--set", "run.connect_timeout_s=3"]
    process = _cli(*argv, "--logdir", str(tmp_path))
    _, err = process.communicate(timeout=120)
    assert process.returncode == ExitCode.USAGE, err
    assert f"no Ray cluster answered at {silent_endpoint!r} within 3 s" in err
    assert "Traceback" not in err


def test_a_signal_while_connecting_stops_the_run(tmp_path, silent_endpoint):
    process = _cli("--address", silent_endpoint, "--logdir", str(tmp_path))
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("*/run.lock")) and time.monotonic() < deadline:
            time.sleep(0.1)  # the run dir is claimed just before connecting
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)  # Ray alone would retry for minutes
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=60)
    assert process.returncode == ExitCode.INTERRUPTED, err
    assert "interrupted: stopped while connecting" in err and "Traceback" not in err, err
    assert not any(tmp_path.iterdir()), "a run stopped before it started left its directory"
