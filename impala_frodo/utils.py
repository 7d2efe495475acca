"""Small helpers shared by the core and the application: devices, seeding, errors, files.

Importing this module does not import torch (``impala_frodo.config.schema`` uses it, and the
actors, which never import torch, read configs): the torch helpers import it when called.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

if TYPE_CHECKING:
    import torch

#: Suffix of the temp files of :func:`write_atomic` (a crash may leave one behind).
TMP_SUFFIX = ".tmp"


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU. Asking for CUDA without one is an error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' was asked for but torch sees no CUDA device; use 'auto' or 'cpu'"
        )
    return torch.device(name)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def os_error_reason(error: OSError) -> str:
    """Why an OS call failed, in one line: ``No space left on device`` rather than the
    ``[Errno 28] ...: '/path'`` of ``str(error)`` (messages name the path themselves)."""
    return error.strerror or first_line(error)


#: Linux's limits on a file name (one path component) and a whole path, in bytes.
NAME_MAX = 255
PATH_MAX = 4096


def shorten(text: str, limit: int = 60) -> str:
    """``repr(text)``, or that of its first ``limit`` characters and its length (messages)."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


def path_too_long(path: str) -> str | None:
    """Why ``path`` is too long for the file system (``NAME_MAX``, ``PATH_MAX``), else None.

    Checked up front, so that such a path is bad input in one line, not an
    ``OSError: File name too long`` from wherever it is first used.
    """
    data = os.fsencode(path)
    if len(data) >= PATH_MAX:
        return f"{len(data):,} bytes, the file system takes at most {PATH_MAX - 1:,}"
    longest = max(data.split(b"/"), key=len)
    if len(longest) > NAME_MAX:
        return f"a name in it has {len(longest):,} bytes, the file system takes at most {NAME_MAX}"
    return None


# ------------------------------------------------------------------ atomic writes
def fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (where the filesystem lets a folder open)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_temp_beside(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """A new temp file in ``path``'s folder holding what ``write`` wrote, flushed and fsync'ed.

    The temp file is removed if writing fails. It has the permissions ``open`` would give
    a new file (the umask applies), as the file it will replace had.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def replace_durably(tmp: Path, path: Path) -> Path:
    """``os.replace`` ``tmp`` onto ``path`` (atomic on POSIX), then fsync the folder."""
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write a file so that it is at every moment either the old one or the whole new one.

    Temp file beside ``path``, fsync, rename onto ``path``, fsync of the folder: after a
    crash or power loss the file is complete (old or new), never torn. Parent folders are
    made if missing. Raises the ``OSError`` of a failed write, with nothing left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return replace_durably(write_temp_beside(path, write), path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """:func:`write_atomic` of UTF-8 text."""
    data = text.encode("utf-8")
    return write_atomic(path, lambda f: f.write(data))


def map_tensors(fn: Callable[[torch.Tensor], Any], obj: Any) -> Any:
    """``obj`` with ``fn`` applied to every tensor in its nested mappings, lists and tuples
    (mappings come back as dicts); anything else as it is. The one walker of tensor trees
    (states to move between devices, or to check)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, Mapping):
        return {k: map_tensors(fn, v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(map_tensors(fn, v) for v in obj)
    return obj
