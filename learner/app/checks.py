"""Checks of the command line's values that no parser makes: paths the file system can
hold, a device that exists, counts and times in range; :class:`UsageError` (exit 2) if not.
"""

from __future__ import annotations

import argparse
import sys

from impala_frodo.config.checks import ConfigError
from impala_frodo.config.schema import Config
from impala_frodo.utils import path_too_long, resolve_device, shorten
from learner.app.args import UsageError
from learner.control.progress import Mode

#: The options that name files or folders: ``(flag, attribute)``.
PATH_OPTIONS = (
    ("--config", "config"),
    ("--logdir", "run.logdir"),
    ("--resume", "resume"),
    ("--out", "out"),
    ("--plot", "plot"),
    ("DIR", "run_dirs"),
    ("RUN_DIR", "run_dir"),
    ("--checkpoint", "checkpoint"),
    ("--video", "video"),
)


def check_paths(args: argparse.Namespace) -> None:
    """Every path given on the command line fits the file system's limits.

    :class:`UsageError` (one line) for one that is too long, before it is used anywhere.
    """
    for flag, attribute in PATH_OPTIONS:
        value = getattr(args, attribute, None)
        for path in value if isinstance(value, list) else [value]:
            if path is None:
                continue
            too_long = path_too_long(path)
            if too_long is not None:
                raise UsageError(
                    f"{flag} {shorten(path)} is too long for the file system ({too_long})"
                )


def check_device(cfg: Config) -> None:
    """The learner's device exists here (``cuda`` without one is bad input)."""
    try:
        resolve_device(cfg.run.device)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def progress_mode(args: argparse.Namespace) -> Mode:
    """``--progress``/``--no-progress``; by default a bar on a terminal, lines in a log file."""
    if args.progress is None:
        return "bar" if sys.stderr.isatty() else "lines"
    return "bar" if args.progress else "off"


def max_actor_restarts(args: argparse.Namespace) -> int | None:
    """``--max-actor-restarts`` (None: the default), checked to be >= 0."""
    if args.max_actor_restarts is not None and args.max_actor_restarts < 0:
        raise UsageError(f"--max-actor-restarts must be >= 0, got {args.max_actor_restarts}")
    return args.max_actor_restarts


def check_sweep_args(args: argparse.Namespace) -> None:
    """``sweep``'s counts and times are positive; :class:`UsageError` if not."""
    if args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    if args.cpus_per_seed <= 0:
        raise UsageError(f"--cpus-per-seed must be > 0, got {args.cpus_per_seed}")
    if args.seed_timeout <= 0:
        raise UsageError(f"--seed-timeout must be > 0, got {args.seed_timeout}")
