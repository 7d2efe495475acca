"""Checkpoints: atomic writes, clear errors for corrupt or missing files, the last good kept."""

from __future__ import annotations

import errno
import os
import random

import numpy as np
import pytest
import torch

from impala_frodo import utils as ckpt_utils
from impala_frodo.records import checkpoint as ckpt
from impala_frodo.records.checkpoint import (
    CheckpointError,
    CheckpointManager,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_atomic,
)


class _Arbitrary:
    pass


def _state(step: int) -> dict:
    return {
        "counters": {"env_steps": step, "updates": step // 10},
        "params": {"w": torch.full((3, 2), float(step)), "b": torch.zeros(2)},
        "optimizer": {"state": {0: {"step": torch.tensor(1.0)}}, "param_groups": [{"lr": 1e-3}]},
        "returns": [0.5, -1.0],
        "rng": capture_rng_state(),
    }


def test_save_and_load_round_trip(tmp_path):
    manager = CheckpointManager(tmp_path / "checkpoints")
    path = manager.save(_state(100))
    assert path == manager.latest and path.is_file()
    loaded = manager.load()
    assert loaded["counters"] == {"env_steps": 100, "updates": 10}
    assert torch.equal(loaded["params"]["w"], torch.full((3, 2), 100.0))
    assert loaded["optimizer"]["param_groups"][0]["lr"] == 1e-3
    assert loaded["format_version"] == ckpt.FORMAT_VERSION


def test_second_save_keeps_the_previous_one(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(_state(1))
    manager.save(_state(2))
    assert manager.load()["counters"]["env_steps"] == 2
    assert load_checkpoint(manager.previous)["counters"]["env_steps"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", "previous.pt"]


def test_a_failed_save_leaves_latest_untouched_and_no_temp_file(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path)
    manager.save(_state(1))
    before = manager.latest.read_bytes()

    def torn_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", torn_save)
    with pytest.raises(OSError, match="No space"):
        manager.save(_state(2))
    assert manager.latest.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]


def test_save_atomic_replaces_in_one_step(tmp_path):
    target = tmp_path / "x.pt"
    save_atomic({"a": torch.ones(2)}, target)
    save_atomic({"a": torch.zeros(2)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.zeros(2))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


def test_a_stray_temp_file_from_a_crash_is_ignored_and_cleaned(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(_state(1))
    (tmp_path / ".latest.pt.abc123.tmp").write_bytes(b"torn")
    assert manager.load()["counters"]["env_steps"] == 1
    manager.save(_state(2))
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    "damage", [b"", b"not a zip file at all", "truncate"], ids=["empty", "garbage", "truncated"]
)
def test_corrupt_latest_gives_a_clear_error_naming_the_previous(tmp_path, damage):
    manager = CheckpointManager(tmp_path)
    manager.save(_state(1))
    manager.save(_state(2))
    if damage == "truncate":
        data = manager.latest.read_bytes()
        manager.latest.write_bytes(data[: len(data) // 2])
    else:
        manager.latest.write_bytes(damage)
    with pytest.raises(CheckpointError) as info:
        manager.load()
    message = str(info.value)
    assert "corrupt or unreadable" in message and "latest.pt" in message
    assert "previous.pt" in message and "\n" not in message
    # The previous one is intact and loads.
    assert load_checkpoint(manager.previous)["counters"]["env_steps"] == 1


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match=r"no checkpoint at .*saved none yet"):
        CheckpointManager(tmp_path / "checkpoints").load()
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")


def test_foreign_files_are_rejected(tmp_path):
    torch.save(torch.ones(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match="not an impala_frodo checkpoint"):
        load_checkpoint(tmp_path / "tensor.pt")

    # An arbitrary class needs full unpickling: weights_only refuses it.
    torch.save({"format_version": ckpt.FORMAT_VERSION, "x": _Arbitrary()}, tmp_path / "obj.pt")
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        load_checkpoint(tmp_path / "obj.pt")


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in the legacy state
    manager = CheckpointManager(tmp_path)
    manager.save({"rng": capture_rng_state()})
    expected = (torch.rand(3), np.random.rand(3), random.random(), np.random.standard_normal())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    restore_rng_state(manager.load()["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random(), np.random.standard_normal())
    assert torch.equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1])
    assert got[2] == expected[2] and got[3] == expected[3]


def test_checkpoint_files_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(ckpt.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    CheckpointManager(tmp_path).save(_state(1))
    assert synced, "the checkpoint was not fsync'ed before os.replace"


@pytest.mark.parametrize("damage", [b"", b"garbage", "truncate"], ids=["empty", "garbage", "torn"])
def test_a_corrupt_latest_is_never_rotated_into_previous(tmp_path, damage):
    """The route the error message recommends: resume from previous.pt, then save."""
    manager = CheckpointManager(tmp_path)
    manager.save(_state(1))
    manager.save(_state(2))
    data = manager.latest.read_bytes()
    manager.latest.write_bytes(data[: len(data) // 2] if damage == "truncate" else damage)
    resumed = load_checkpoint(manager.previous)  # what --resume .../previous.pt loads
    manager.save(_state(resumed["counters"]["env_steps"] + 10))
    assert manager.load()["counters"]["env_steps"] == 11
    assert load_checkpoint(manager.previous)["counters"]["env_steps"] == 1, "good one lost"
    manager.save(_state(12))  # a good latest is rotated as before
    assert load_checkpoint(manager.previous)["counters"]["env_steps"] == 11


def test_the_refusal_of_foreign_objects_does_not_advise_an_unsafe_load(tmp_path):
    torch.save({"format_version": ckpt.FORMAT_VERSION, "x": _Arbitrary()}, tmp_path / "obj.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "obj.pt")
    message = str(info.value)
    assert "weights_only" not in message.replace("weights-only", "") and "\n" not in message
    assert "_Arbitrary" in message and "refuses" in message


#: What torch's zip writer raises over an OSError it met (ENOSPC) while writing a file.
ZIP_WRITER_ERROR = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"


@pytest.mark.parametrize("wrapped", [True, False], ids=["over-an-oserror", "alone"])
def test_a_save_torch_s_zip_writer_fails_is_an_oserror_and_keeps_latest(
    tmp_path, monkeypatch, wrapped
):
    manager = CheckpointManager(tmp_path)
    manager.save(_state(1))
    before = manager.latest.read_bytes()

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        if wrapped:
            try:
                raise OSError(28, "No space left on device")
            except OSError:
                raise RuntimeError(ZIP_WRITER_ERROR) from None  # as torch: context only
        raise RuntimeError(ZIP_WRITER_ERROR)

    monkeypatch.setattr(ckpt.torch, "save", failing_save)
    with pytest.raises(OSError) as failure:
        manager.save(_state(2))
    reason = failure.value.strerror
    assert reason == (
        "No space left on device" if wrapped else "torch.save failed (unexpected pos 576 vs 534)"
    )
    assert manager.latest.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]


@pytest.mark.parametrize("room", [0, 128 * 1024], ids=["full", "nearly-full"])
def test_a_save_onto_a_full_file_system_is_enospc_and_keeps_latest(small_tmpfs, fill_up, room):
    manager = CheckpointManager(small_tmpfs / "checkpoints")
    manager.save(_state(1))
    before = manager.latest.read_bytes()
    fill_up(small_tmpfs, leave=room)  # nearly full: torch's writer fails mid-file
    with pytest.raises(OSError) as failure:
        manager.save({"x": torch.zeros(100_000), **_state(2)})
    assert failure.value.errno == 28, failure.value  # not torch's RuntimeError
    assert manager.latest.read_bytes() == before
    assert load_checkpoint(manager.latest)["counters"] == _state(1)["counters"]
    assert sorted(p.name for p in manager.directory.iterdir()) == ["latest.pt"]


@pytest.mark.parametrize(
    "fault", [errno.EDQUOT, errno.EIO, errno.EROFS], ids=["quota", "io-error", "read-only"]
)
def test_a_save_the_file_system_refuses_late_is_an_oserror_and_keeps_latest(
    tmp_path, monkeypatch, fault
):
    """A quota or a file-system error often shows only at fsync (NFS, FUSE)."""
    manager = CheckpointManager(tmp_path)
    manager.save(_state(1))
    before = manager.latest.read_bytes()

    def fsync(fd):
        raise OSError(fault, os.strerror(fault))

    monkeypatch.setattr(ckpt_utils.os, "fsync", fsync)
    with pytest.raises(OSError) as failure:
        manager.save(_state(2))
    assert failure.value.errno == fault and failure.value.strerror == os.strerror(fault)
    assert manager.latest.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]
