"""A session's run directory: a new one, or a resumed one with its checkpoint.

:func:`claim_run_dir` holds it for the session, before Ray starts: locked (one session at a
time: :class:`~impala_frodo.records.runlog.RunLock`), checked to be writable, and a resumed
run's checkpoint loaded and checked, so that bad input is found before any process starts.
:func:`resume_count` says which session of the run this is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from impala_frodo.config.schema import Config
from impala_frodo.records.checkpoint import CheckpointManager, load_checkpoint
from impala_frodo.records.runlog import CHECKPOINT_DIR, RunLock, check_writable, create_run_dir
from learner.app.preflight import removed_if_refused
from learner.training.books import Counters
from learner.training.learner import check_resume_state


@contextmanager
def claim_run_dir(
    cfg: Config,
    *,
    resume_dir: Path | None = None,
    run_dir: Path | None = None,
    resume_checkpoint: Path | None = None,
) -> Iterator[tuple[Path, dict[str, Any] | None]]:
    """``(run directory, checkpoint to resume or None)``, held for this session.

    ``resume_dir``: continue that run, from ``resume_checkpoint`` (default: its latest);
    else ``run_dir``, a new run's directory already made (a sweep makes its seeds' up
    front), or a new one under ``run.logdir``.
    """
    made_here = resume_dir is None and run_dir is None
    if resume_dir is not None:
        run_dir = Path(resume_dir)
    elif run_dir is not None:
        run_dir = Path(run_dir)
    else:
        run_dir = create_run_dir(cfg, cfg.run.logdir)
    # A start refused or stopped before anything but config.json was written leaves nothing.
    with RunLock(run_dir), removed_if_refused(run_dir, made_here):
        check_writable(run_dir)
        state = None
        if resume_dir is not None:
            state = (
                load_checkpoint(resume_checkpoint)
                if resume_checkpoint is not None
                else CheckpointManager(run_dir / CHECKPOINT_DIR).load()
            )
            check_resume_state(state)  # a bad checkpoint is bad input: found before Ray starts
        yield run_dir, state


def resume_count(state: dict[str, Any] | None) -> int:
    """How many times the run was resumed before this session: 0 for a new run.

    It seeds the actors, so that a resumed run does not replay its first session's envs,
    and the learner's books count it (:meth:`~learner.training.books.Books.count_resume`).
    """
    return 0 if state is None else Counters.from_dict(state["counters"]).resumes + 1
