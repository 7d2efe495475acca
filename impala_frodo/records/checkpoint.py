"""Checkpoints that survive crashes: atomic writes, safe loads, the last good one kept.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts
(so that ``torch.load(..., weights_only=True)`` can read it without running
pickled code). :class:`CheckpointManager` keeps ``latest.pt`` and the one
before it, ``previous.pt``, in a run's ``checkpoints/`` folder:

1. the new state goes to a temp file in the same folder, flushed and fsync'ed;
2. ``latest.pt`` is hard-linked (or copied) to ``previous.pt`` (atomically, via a temp
   name), but only if it loads: a corrupt ``latest.pt`` never replaces a good
   ``previous.pt`` (a run resumed from ``previous.pt`` after ``latest.pt`` went bad keeps it);
3. the temp file replaces ``latest.pt`` with ``os.replace`` (atomic on POSIX), and the
   folder is fsync'ed.

At every moment ``latest.pt`` is a complete checkpoint (a crash mid-save leaves
at most a stray ``*.tmp`` file, removed on the next save), and a failed or
refused save never touches it.

RNG states (torch, CUDA, numpy, python ``random``) are stored as tensors and
lists by :func:`capture_rng_state` and put back by :func:`restore_rng_state`.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import pickle
import random
import re
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from impala_frodo.utils import (
    TMP_SUFFIX,
    first_line,
    replace_durably,
    write_atomic,
    write_temp_beside,
)

FORMAT_VERSION = 1
LATEST = "latest.pt"
PREVIOUS = "previous.pt"

log = logging.getLogger("impala_frodo")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not fit this run; the message says which."""


# ------------------------------------------------------------------ RNG state
def capture_rng_state() -> dict[str, Any]:
    """The global RNG states as tensors/lists (``weights_only``-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Put back what :func:`capture_rng_state` captured (CUDA only where there is CUDA)."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):  # fewer devices now than at save time
            torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------- file level
#: The prefix of errors raised by torch's C++ zip writer (``[enforce fail at x.cc:1] . ``).
_ENFORCE_PREFIX = re.compile(r"^\[enforce fail at [^\]]*\]\s*\.?\s*")


def serialise(state: Any) -> bytes:
    """``torch.save`` of ``state`` into memory; a failure of torch's writer is an ``OSError``.

    The file is then written by plain ``write`` calls, so that a full disk, a quota or a
    file-system error is the kernel's ``OSError`` (errno and all), not torch's
    ``RuntimeError: [enforce fail at inline_container.cc] ...`` that its zip writer
    raises over the ``OSError`` it met. Should torch's writer fail anyway, that
    ``RuntimeError`` becomes an ``OSError`` too: the OSError it wraps if there is one,
    else ``EIO`` with torch's reason in one line.
    """
    buffer = io.BytesIO()
    try:
        torch.save(state, buffer)
    except RuntimeError as e:
        raise _as_os_error(e) from None
    return buffer.getvalue()


def _as_os_error(error: RuntimeError) -> OSError:
    """The ``OSError`` behind torch's writer error, or one made of its first line."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError):
            return cause
        cause = cause.__cause__ or cause.__context__
    reason = _ENFORCE_PREFIX.sub("", first_line(error)) or type(error).__name__
    return OSError(errno.EIO, f"torch.save failed ({reason})")


def _write_temp(state: Any, path: Path) -> Path:
    """``torch.save`` to a flushed and fsync'ed temp file beside ``path`` (removed on failure).

    Raises ``OSError`` whatever layer fails (:func:`serialise`).
    """
    data = serialise(state)
    return write_temp_beside(path, lambda f: f.write(data))


def save_atomic(state: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically (:func:`impala_frodo.utils.write_atomic`)."""
    data = serialise(state)
    return write_atomic(path, lambda f: f.write(data))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and sanity-check a checkpoint; :class:`CheckpointError` if missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or unreadable ({_unpickling_reason(e)})"
        ) from None
    except (
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        KeyError,
        IndexError,  # a legacy-format read of arbitrary bytes
        zipfile.BadZipFile,
    ) as e:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or unreadable ({first_line(e)})"
        ) from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} is not an impala_frodo checkpoint (format {FORMAT_VERSION})"
        )
    return state


def _unpickling_reason(error: pickle.UnpicklingError) -> str:
    """Why a weights-only load refused a file, without torch's advice to load it unsafely."""
    text = str(error)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if "Weights only load failed" in text:
        what = f" ({found.group(1)})" if found else ""
        return (
            f"it holds Python objects{what} that a safe weights-only load refuses; "
            "impala_frodo checkpoints hold only tensors, numbers and strings"
        )
    return first_line(error)


def _copy_aside(src: Path, dst: Path) -> None:
    """Make ``dst`` a copy of ``src`` atomically (a hard link where the filesystem allows)."""
    tmp = dst.with_name(f".{dst.name}{TMP_SUFFIX}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


class CheckpointManager:
    """``latest.pt`` + ``previous.pt`` in one folder, rotated on every save."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    @property
    def latest(self) -> Path:
        return self.directory / LATEST

    @property
    def previous(self) -> Path:
        return self.directory / PREVIOUS

    def exists(self) -> bool:
        return self.latest.is_file()

    def save(self, state: Mapping[str, Any]) -> Path:
        """Write ``state`` as the new ``latest.pt``; the old latest becomes ``previous.pt``."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for stray in self.directory.glob(f".*{TMP_SUFFIX}"):
            stray.unlink(missing_ok=True)
        payload = {"format_version": FORMAT_VERSION, **state}
        # Write the new one first: if this fails, latest.pt and previous.pt are untouched.
        tmp = _write_temp(payload, self.latest)
        try:
            if self.latest.is_file():
                self._rotate_latest()
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return replace_durably(tmp, self.latest)

    def _rotate_latest(self) -> None:
        """``latest.pt`` becomes ``previous.pt`` if it loads; a corrupt one is dropped instead."""
        try:
            load_checkpoint(self.latest)
        except CheckpointError as e:
            log.warning("%s: it is overwritten, and previous.pt is left as it is", e)
            return
        _copy_aside(self.latest, self.previous)

    def load(self, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """Load ``latest.pt``; on failure the message points at ``previous.pt`` if there is one."""
        if not self.latest.is_file():
            hint = (
                f"; the previous one is {str(self.previous)!r}"
                if self.previous.is_file()
                else " (the run saved none yet)"
            )
            raise CheckpointError(f"no checkpoint at {str(self.latest)!r}{hint}")
        try:
            return load_checkpoint(self.latest, map_location)
        except CheckpointError as e:
            if self.previous.is_file():
                raise CheckpointError(
                    f"{e}; the one before it is kept at {str(self.previous)!r}: "
                    f"resume from it with --resume {self.previous}"
                ) from None
            raise
