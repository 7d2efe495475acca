"""Before a run starts: a refused or stopped start leaves nothing behind.

:func:`removed_if_refused` removes a run directory this session made if the start is
refused (bad input found once Ray is up: a cluster out of reach, learners that cannot be
placed) or stopped (a signal while Ray starts) before anything but its ``config.json``
and ``run.lock`` was written.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from impala_frodo.config.checks import ConfigError
from impala_frodo.records.runlog import CONFIG_FILE, LOCK_FILE, RunDirError


@contextmanager
def removed_if_refused(run_dir: Path, made_here: bool) -> Iterator[None]:
    """Remove ``run_dir`` if this session made it and the start is refused or stopped
    before anything but its config and lock was written (see the module docstring)."""
    try:
        yield
    except (ConfigError, RunDirError, KeyboardInterrupt):
        if made_here:
            remove_unused_run_dir(run_dir)
        raise


def remove_unused_run_dir(run_dir: Path) -> bool:
    """Remove ``run_dir`` if it holds only a ``config.json`` and a ``run.lock``; True if it
    is gone. Never raises: a directory that cannot be removed stays."""
    with contextlib.suppress(OSError):
        names = set(os.listdir(run_dir))
        if names <= {CONFIG_FILE, LOCK_FILE}:
            for name in names:
                os.unlink(run_dir / name)
            os.rmdir(run_dir)
            return True
    return False
