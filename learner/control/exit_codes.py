"""The exit codes of ``impala-frodo`` (and of :func:`learner.app.driver.train`'s result), once.

:data:`EXIT_CODES_HELP` is their description for users: the ``train --help`` text
shows it, and the other modules refer to it rather than repeat it.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a command's exit status says."""

    OK = 0  #: done: the budget (or the return target) reached; a sweep with no failed seed
    FAILED = 1  #: training failed (or a sweep's seed did); the message says why
    USAGE = 2  #: bad input, found before anything was trained
    INTERRUPTED = 130  #: stopped by SIGINT/SIGTERM (after a final checkpoint, unless aborted)


_HELP_TEMPLATE = """\
exit codes: {OK} done; {FAILED} training failed (non-finite loss, disk full or read-only at a save,
actors keep dying, a learner process or the async meta-learner failed, no progress for
run.progress_timeout_s); {USAGE} bad input (unknown env, preset or key, counts < 1, more
actors or learners than a local Ray can place, a path too long, a --resume that is not a run
dir, unreadable config or checkpoint, a run dir not writable or in use, a cluster that cannot
be reached); {INTERRUPTED} stopped by Ctrl-C or SIGTERM after a final checkpoint.
"""

#: The exit codes for users (``impala-frodo train --help``).
EXIT_CODES_HELP = _HELP_TEMPLATE.format(**{code.name: int(code) for code in ExitCode})
