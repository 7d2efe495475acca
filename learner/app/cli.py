"""Command line: ``impala-frodo`` / ``python -m learner``: the commands and the entry point.

Usage::

    impala-frodo                                                    # this help
    impala-frodo train --preset catch-frodo --num-actors 2
    impala-frodo --preset catch-impala --total-env-steps 100000     # options alone = train
    impala-frodo train --config my.toml --set meta.lr=3e-3 --set run.queue_size=4
    impala-frodo train --resume runs/frodo-catch-s0-20250101-120000 --total-env-steps 1000000
    impala-frodo presets
    impala-frodo eval runs/frodo-catch-s0-20250101-120000 --episodes 50 --video catch.gif
    impala-frodo sweep --preset catch-frodo --preset catch-impala --seeds 10 --plot fig3.png
    impala-frodo sweep --distributed --preset catch-frodo --seeds 10  # seeds via the actor-learner
    impala-frodo plot runs/sweep-catch-frodo-* runs/sweep-catch-impala-* --out fig3.png

The parser and the config it builds (precedence: defaults < ``--preset`` <
``--config FILE`` < flags < ``--set``) are :mod:`learner.app.args`'. The exit codes
are :class:`learner.control.exit_codes.ExitCode`, described in
:data:`learner.control.exit_codes.EXIT_CODES_HELP` (``impala-frodo train --help``).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from impala_frodo.config.checks import ConfigError
from impala_frodo.config.presets import folded_summary, listing, preset_summary
from impala_frodo.config.schema import Config
from impala_frodo.records.checkpoint import CheckpointError
from impala_frodo.records.runlog import RunDirError
from learner.app.args import (
    PROG,
    UsageError,
    build_parser,
    config_from_args,
    explicit_keys,
    normalise_argv,
    resume_paths,
)
from learner.app.checks import (
    check_device,
    check_paths,
    check_sweep_args,
    max_actor_restarts,
    progress_mode,
)
from learner.app.evaluate import cmd_eval
from learner.app.hints import option_hint
from learner.app.log_handler import setup_logging
from learner.control.exit_codes import ExitCode

#: The exceptions that are bad input: one line on stderr and ``ExitCode.USAGE``
#: (a cluster that cannot be reached is a ConfigError: ClusterConnectError).
BAD_INPUT = (ConfigError, CheckpointError, RunDirError, UsageError)


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Entry point of ``impala-frodo`` and ``python -m learner``; returns the exit code.

    Called with ``argv`` None (as the process's entry point: the command line is
    ``sys.argv``), it ends the process itself once the command is done
    (:func:`_exit_process`); with an ``argv`` (tests, other code) it returns.
    """
    if argv is None:
        _exit_process(_main(sys.argv[1:], prog))
    return _main(argv, prog)


def _exit_process(code: int) -> NoReturn:
    """Flush stdout and stderr, then ``os._exit(code)``.

    Every file of the run is written, fsync'ed and closed and the local Ray instance is
    shut down by the time a command returns; what is left is the interpreter's own
    finalisation of Ray's and torch's native libraries, which takes seconds for nothing
    (docs/results-distributed.md, "Measurements behind the code").
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe (``| head``)
            stream.flush()
    os._exit(code)


def _main(argv: Sequence[str], prog: str) -> int:
    parser = build_parser(prog)
    argv = normalise_argv(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse's --help (0)
        return int(e.code or 0)
    except UsageError as e:  # argparse's errors, one line (OneLineErrorParser)
        return _error(option_hint(parser, argv, str(e)))
    try:
        return _run_command(args)
    except BAD_INPUT as e:
        return _exit_now_if_stuck(_error(str(e)))
    except KeyboardInterrupt as e:
        print(f"[{PROG}] interrupted{f': {e}' if str(e) else ''}", file=sys.stderr)
        return _exit_now_if_stuck(ExitCode.INTERRUPTED)


def _run_command(args: argparse.Namespace) -> int:
    check_paths(args)
    if args.command == "presets":
        return cmd_presets(args.all)
    if args.command == "sweep":
        return cmd_sweep(args)
    if args.command == "plot":
        return cmd_plot(args)
    if args.command == "eval":
        return cmd_eval(args)
    return cmd_train(args)


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return ExitCode.USAGE


def _say(message: str) -> None:
    print(f"[{PROG}] {message}", file=sys.stderr)


def _same_file(a: Any, b: Any) -> bool:
    """Whether two streams write to one file or terminal (``> log 2>&1``, a shell)."""
    try:
        one, two = os.fstat(a.fileno()), os.fstat(b.fileno())
    except (OSError, ValueError, AttributeError):  # pytest's captured streams
        return False
    return (one.st_dev, one.st_ino) == (two.st_dev, two.st_ino)


def _exit_now_if_stuck(code: int) -> int:
    """End the process at once if Ray is still stuck connecting (it would block the exit)."""
    session = sys.modules.get("learner.cluster.session")
    if session is not None and session.connect_stuck():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


# ------------------------------------------------------------------ commands
def cmd_presets(full: bool = False) -> int:
    """The presets by family, each with its summary; Atari's one line per algorithm unless
    ``full``."""
    sections = listing(full=full)
    width = max(len(entry) for _, entries in sections for entry in entries)
    for title, entries in sections:
        print(f"{title}:")
        for entry in entries:
            summary = folded_summary(entry) if "<game>" in entry else preset_summary(entry)
            print(f"  {entry:<{width}}  {summary}")
    if not full:
        print(f"('{PROG} presets --all' lists every Atari game's presets)")
    return ExitCode.OK


def cmd_train(args: argparse.Namespace) -> int:
    """Train (or resume) one run; the exit code is its stop reason's."""
    from learner.app.driver import TrainOptions, describe_result, train

    cfg = config_from_args(args)
    check_device(cfg)
    if args.stop_at_return is not None and not math.isfinite(args.stop_at_return):
        raise UsageError(f"--stop-at-return must be a finite number, got {args.stop_at_return}")
    resume_dir, resume_checkpoint = resume_paths(args.resume) if args.resume else (None, None)
    options = TrainOptions(
        resume_dir=resume_dir,
        resume_checkpoint=resume_checkpoint,
        address=args.address,
        progress=progress_mode(args),
        stop_at_return=args.stop_at_return,
        explicit_keys=explicit_keys(args),
    )
    restarts = max_actor_restarts(args)
    if restarts is not None:
        options.max_actor_restarts = restarts
    setup_logging()
    result = train(cfg, options)
    summary = describe_result(result)
    print(summary)  # on stdout, for scripts; on stderr too where that is elsewhere
    if not _same_file(sys.stdout, sys.stderr):
        _say(summary)
    if result.message:
        _say(result.message)
    return result.exit_code


def cmd_sweep(args: argparse.Namespace) -> int:
    """One sweep per preset (or one of the plain config), then an optional plot of them all.

    ``ExitCode.FAILED`` if any seed failed (the others' run dirs are kept).
    """
    from learner.cluster.session import ray_session

    check_sweep_args(args)
    configs = [(name or "config", config_from_args(args, name)) for name in args.preset or [None]]
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    setup_logging()
    run_dirs: list[Path] = []
    failed = 0
    with ray_session(args.address, connect_timeout_s=configs[0][1].run.connect_timeout_s):
        for name, cfg in configs:
            done, failures = _sweep_one(args, name, cfg, seeds)
            run_dirs.extend(done)
            failed += failures
    if args.plot and run_dirs:
        from impala_frodo.reports.plotting import plot_runs

        _say(f"wrote {plot_runs(run_dirs, args.plot)}")
    return ExitCode.FAILED if failed else ExitCode.OK


def _sweep_one(
    args: argparse.Namespace, name: str, cfg: Config, seeds: range
) -> tuple[list[Path], int]:
    """Run and report one preset's sweep; returns its finished run dirs and failed seeds."""
    from learner.app.sweep import run_sweep

    result = run_sweep(
        cfg,
        seeds,
        cfg.run.logdir,
        name=name,
        cpus_per_seed=args.cpus_per_seed,
        progress=sys.stderr.isatty() if args.progress is None else args.progress,
        distributed=args.distributed,
        seed_timeout_s=args.seed_timeout,
    )
    done = [result.run_dirs[seed] for seed in sorted(result.summaries)]
    lag = result.mean_policy_lag()
    lag_text = "" if lag is None else f"; mean policy lag {lag:.2f} updates"
    _say(
        f"sweep {name}: {len(done)}/{len(seeds)} seeds done in "
        f"{result.wall_time_s:.0f} s, {cfg.run.total_env_steps:,} env steps each; "
        f"{_finals_text(cfg, done) or 'no finished seed'}{lag_text}; dir {result.sweep_dir}"
    )
    for seed, message in sorted(result.failures.items()):
        _say(f"sweep {name}: seed {seed} failed: {message}")
    return done, len(result.failures)


def _finals_text(cfg: Config, run_dirs: list[Path]) -> str:
    """The final value of the task's metric over the finished seeds, per curve label."""
    from impala_frodo.reports.plotting import (
        CONTROL_METRIC,
        PREDICTION_METRIC,
        final_values,
        load_runs,
    )

    if not run_dirs:
        return ""
    metric = PREDICTION_METRIC if cfg.task == "prediction" else CONTROL_METRIC
    return "; ".join(
        f"{label}: final {mean:.3f} +- {se:.3f} (s.e., {n} seeds)"
        for label, (mean, se, n) in final_values(load_runs(run_dirs), metric).items()
    )


def cmd_plot(args: argparse.Namespace) -> int:
    """Plot run (or sweep) directories into one figure; a line per curve on stdout."""
    from impala_frodo.reports.plotting import compare_runs, expand_run_dirs

    if args.dpi <= 0:
        raise UsageError(f"--dpi must be > 0, got {args.dpi}")
    run_dirs = expand_run_dirs(args.run_dirs)
    comparison = compare_runs(
        run_dirs,
        args.out,
        metric=args.metric,
        title=args.title,
        fmt=args.format,
        dpi=args.dpi,
        write_csv=args.csv,
    )
    for panel in comparison.panels:
        for run in panel.skipped:
            _say(f"warning: {run.path} has no {panel.metric!r}: left out")
    for line in comparison.lines():
        print(line)
    _say(f"wrote {comparison.figure}" + (f" and {comparison.csv}" if comparison.csv else ""))
    # Atari runs: median and mean human-normalised scores over games, and their figure.
    from impala_frodo.reports.atari_summary import report_atari

    for line in report_atari(run_dirs, comparison.figure):
        _say(line)
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
