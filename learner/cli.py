"""Command line: ``impala-frodo`` / ``python -m learner``.

Usage::

    impala-frodo                                                    # this help
    impala-frodo train --preset catch-frodo --num-actors 2
    impala-frodo --preset catch-impala --total-env-steps 100000     # options alone = train
    impala-frodo train --config my.toml --set meta.lr=3e-3 --set run.queue_size=4
    impala-frodo train --resume runs/frodo-catch-s0-20250101-120000 --total-env-steps 1000000
    impala-frodo presets
    impala-frodo sweep --preset catch-frodo --preset catch-impala --seeds 10 --plot fig3.png
    impala-frodo sweep --distributed --preset catch-frodo --seeds 10  # seeds via the actor-learner
    impala-frodo plot runs/sweep-catch-frodo-* runs/sweep-catch-impala-* --out fig3.png

Config precedence: defaults < ``--preset`` < ``--config FILE`` < flags (``--set``
last). With ``--resume RUN_DIR`` the run's saved ``config.json`` replaces
defaults and preset; flags (e.g. a larger ``--total-env-steps``) still apply.

Exit codes: 0 done; 1 training failed (non-finite loss, disk full or read-only
at a save, actors keep dying, no progress for run.progress_timeout_s); 2 bad input
(unknown env/preset/key, counts < 1, unreadable config or checkpoint, a run dir not
writable or in use, a cluster that cannot be reached); 130 stopped by Ctrl-C/SIGTERM
after a final checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from impala_frodo.checkpoint import CheckpointError
from impala_frodo.config import ALGOS, DEVICES, Config, ConfigError, load_file, merge
from impala_frodo.plotting import FORMATS as FIGURE_FORMATS
from impala_frodo.presets import load_preset, preset_names, preset_summary
from impala_frodo.runlog import RunDirError
from impala_frodo.utils import first_line

PROG = "impala-frodo"
SUBCOMMANDS = ("train", "sweep", "plot", "presets")

#: Flags that set one config field: (flag, dotted key, type, help).
FIELD_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    (
        "--env",
        "env.id",
        str,
        "Gymnasium env id (impala_frodo/Catch-v0, CartPole-v1, ...); ALE/<Game>-v5 alone "
        "starts from that Atari game's preset",
    ),
    ("--algo", "algo", str, f"learning rule: {', '.join(ALGOS)}"),
    ("--num-actors", "run.num_actors", int, "rollout actors"),
    ("--envs-per-actor", "run.envs_per_actor", int, "envs each actor steps together"),
    ("--unroll-length", "run.unroll_length", int, "T, steps per unroll"),
    ("--total-env-steps", "run.total_env_steps", int, "step budget of the run"),
    ("--seed", "run.seed", int, "run seed"),
    ("--logdir", "run.logdir", str, "parent folder of run directories (default runs/)"),
    ("--device", "run.device", str, f"learner device: {', '.join(DEVICES)}"),
    ("--queue-size", "run.queue_size", int, "max unrolls in flight/queued in total"),
    ("--batches-per-update", "run.batches_per_update", int, "actor batches per learner batch"),
    ("--broadcast-every", "run.broadcast_every", int, "updates between weight publications"),
    ("--actor-num-cpus", "run.actor_num_cpus", float, "Ray CPUs reserved per actor"),
    ("--checkpoint-every-s", "run.checkpoint_every_s", float, "seconds between checkpoints"),
    ("--log-every-s", "run.log_every_s", float, "seconds between log records (at most)"),
    ("--log-every-updates", "run.log_every_updates", int, "updates between log records (at most)"),
)


TRAIN_DESCRIPTION = """\
Train a run (or resume one) on a local Ray instance, or on a cluster with --address.

examples:
  impala-frodo train                                 FRODO on Catch 10 x 5, 500k env steps
  impala-frodo train --preset catch-impala --num-actors 4
  impala-frodo train --config my.toml --set meta.lr=3e-3 --set run.queue_size=4
  impala-frodo train --resume runs/frodo-catch-s0-20250101-120000 --total-env-steps 1000000

Config precedence: defaults < --preset < --config FILE < flags < --set. With --resume
RUN_DIR the run's saved config.json replaces defaults and preset; flags (e.g. a larger
--total-env-steps) still apply.

exit codes: 0 done; 1 training failed (non-finite loss, disk full or read-only at a save,
actors keep dying, no progress for run.progress_timeout_s); 2 bad input (unknown env,
preset or key, counts < 1, unreadable config or checkpoint, a run dir not writable or in
use, a cluster that cannot be reached); 130 stopped by Ctrl-C or SIGTERM after a final
checkpoint.
"""


#: ``sweep --seed-timeout`` default: far above a Catch seed (minutes), below forever.
DEFAULT_SEED_TIMEOUT_S = 4 * 3600.0


class UsageError(Exception):
    """Bad command-line input; exit code 2 with this one-line message."""


# ------------------------------------------------------------------ parser
def _add_config_args(parser: argparse.ArgumentParser, *, many_presets: bool) -> None:
    """The options that build a Config (shared by ``train`` and ``sweep``)."""
    if many_presets:
        parser.add_argument(
            "--preset",
            action="append",
            default=[],
            help=f"a named preset, repeatable: one sweep each ({', '.join(preset_names())})",
        )
    else:
        parser.add_argument("--preset", help=f"a named preset ({', '.join(preset_names())})")
    parser.add_argument("--config", metavar="FILE", help="a TOML or JSON config file")
    for flag, key, kind, text in FIELD_FLAGS:
        parser.add_argument(
            flag,
            type=kind,
            dest=key,
            metavar=key.rsplit(".", 1)[-1].upper(),
            help=f"{text} ({key})",
        )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config field, e.g. meta.lr=3e-3, agent.hidden_sizes=[32,32], "
        "env.kwargs.rows=6 (TOML values; repeatable)",
    )
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, or local)")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar; default: a bar when stderr is a terminal, else a plain line every 10 s",
    )


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="FRODO meta-gradient RL on an IMPALA-style Ray actor-learner.",
        epilog="With options but no subcommand, the options are those of 'train'. "
        f"'{prog} COMMAND --help' tells more.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{train,sweep,plot,presets}")
    train = sub.add_parser(
        "train",
        help="train (or resume) a run",
        description=TRAIN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_args(train, many_presets=False)
    train.add_argument(
        "--resume", metavar="RUN_DIR", help="continue this run (or this checkpoint .pt inside it)"
    )
    train.add_argument(
        "--stop-at-return",
        type=float,
        metavar="R",
        help="stop once the mean return of the last run.returns_window episodes reaches R",
    )
    train.add_argument(
        "--max-actor-restarts",
        type=int,
        default=None,
        metavar="N",
        help="Ray restarts of a dead actor before it is replaced (default 3)",
    )

    sweep = sub.add_parser(
        "sweep",
        help="run seeds of one or more presets in parallel (synchronous trainer per seed, "
        "or the actor-learner with --distributed)",
        description="Run --seeds seeds of each --preset as parallel Ray tasks, each seed its "
        "own run directory under LOGDIR/sweep-<name>-<time>/. A failed seed is reported and "
        "the others go on (exit code 1 at the end). With --distributed each seed runs "
        "the Ray actor-learner of 'train' and logs its measured policy lag.",
    )
    _add_config_args(sweep, many_presets=True)
    sweep.add_argument("--seeds", type=int, default=10, metavar="N", help="seeds per preset")
    sweep.add_argument("--first-seed", type=int, default=0, metavar="S", help="seeds S..S+N-1")
    sweep.add_argument(
        "--cpus-per-seed", type=float, default=1.0, metavar="C", help="Ray CPUs per seed task"
    )
    sweep.add_argument(
        "--distributed",
        action="store_true",
        help="train each seed on the Ray actor-learner (a learner of --cpus-per-seed CPUs and "
        "run.num_actors actors; seeds run side by side only as far as the CPUs hold whole "
        "seeds) instead of the synchronous trainer",
    )
    sweep.add_argument(
        "--seed-timeout",
        type=float,
        default=DEFAULT_SEED_TIMEOUT_S,
        metavar="S",
        help="a seed still running S seconds after it started is stopped and counted failed "
        f"(default {DEFAULT_SEED_TIMEOUT_S:g})",
    )
    sweep.add_argument("--plot", metavar="OUT.png", help="plot all the sweeps' runs into OUT.png")

    plot = sub.add_parser(
        "plot",
        help="mean +- s.e. over seeds from run (or sweep) directories",
        description="One panel per env (id and kwargs), one curve per preset (a sweep's "
        "name) or algorithm: the mean over distinct seeds against env steps, with a band of "
        "+- 1 standard error over seeds (return for control, value RMSE for the random "
        "walk, reward switches marked). A directory that is not a run directory stands for "
        "every run below it, sweeps included (e.g. `impala-frodo plot runs --out fig.png`).",
    )
    plot.add_argument(
        "run_dirs", nargs="+", metavar="DIR", help="run directories, or directories of runs"
    )
    plot.add_argument("--out", required=True, metavar="FILE", help="the figure to write")
    plot.add_argument(
        "--format",
        choices=FIGURE_FORMATS,
        help="figure format (default: the suffix of --out, else png)",
    )
    plot.add_argument("--dpi", type=float, default=110.0, help="resolution (default 110)")
    plot.add_argument("--metric", help="metrics.jsonl key (default by task)")
    plot.add_argument("--title", help="figure title")
    sub.add_parser("presets", help="list the presets")
    return parser


def _normalise_argv(argv: Sequence[str]) -> list[str]:
    """Options without a subcommand are train's: ``--preset x`` -> ``train --preset x``.

    Nothing at all is a request for help, as with most command-line tools.
    """
    argv = list(argv)
    if not argv:
        return ["--help"]
    if argv[0] in SUBCOMMANDS or argv[0] in ("-h", "--help"):
        return argv
    return ["train", *argv]


# ------------------------------------------------------------------ config
def parse_value(text: str) -> Any:
    """A TOML literal (``3``, ``1e-3``, ``true``, ``[32, 32]``, ``{ rows = 6 }``), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _nested(dotted: dict[str, Any], base: Config) -> dict[str, Any]:
    """``{"run.seed": 1, "env.kwargs.rows": 6}`` -> nested overrides for ``merge``."""
    nested: dict[str, Any] = {}
    for key, value in dotted.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[:2] == ["env", "kwargs"]:
            kwargs = nested.setdefault("env", {}).setdefault("kwargs", dict(base.env.kwargs))
            kwargs[parts[2]] = value
        elif len(parts) == 2:
            nested.setdefault(parts[0], {})[parts[1]] = value
        elif len(parts) == 1:
            nested[parts[0]] = value
        else:
            raise ConfigError(f"unknown config key {key!r} (use section.field, e.g. run.seed)")
    return nested


def _set_overrides(items: Sequence[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_value(value.strip())
    return out


def _flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        key: getattr(args, key) for _, key, _, _ in FIELD_FLAGS if getattr(args, key) is not None
    }


def resume_paths(resume: str) -> tuple[Path, Path | None]:
    """``RUN_DIR`` -> (RUN_DIR, None); ``RUN_DIR/checkpoints/x.pt`` -> (RUN_DIR, that file)."""
    path = Path(resume)
    if path.suffix == ".pt":
        if not path.is_file():
            raise CheckpointError(f"no checkpoint at {str(path)!r}")
        return path.parent.parent, path
    if not path.is_dir():
        raise ConfigError(f"run directory {str(path)!r} does not exist")
    return path, None


def config_from_args(args: argparse.Namespace, preset: str | None = None) -> Config:
    """defaults < preset < config file < flags < --set (--resume: the run's config is the base).

    ``preset`` overrides ``args.preset`` (a sweep builds one config per preset).
    """
    from impala_frodo.runlog import read_config

    preset = preset if preset is not None else args.preset
    resume = getattr(args, "resume", None)
    if resume:
        if preset:
            raise UsageError("--preset cannot be combined with --resume (the run has its config)")
        cfg = read_config(resume_paths(resume)[0])
    elif preset:
        cfg = load_preset(preset)
    else:
        # Atari's short form: --env ALE/<Game>-v5 starts from that game's preset.
        from impala_frodo.atari_presets import atari_defaults

        cfg = atari_defaults(getattr(args, "env.id", None), getattr(args, "algo", None))
        cfg = cfg or Config()
    if args.config:
        cfg = merge(cfg, load_file(args.config))
    cfg = merge(cfg, _nested(_flag_overrides(args), cfg))
    cfg = merge(cfg, _nested(_set_overrides(args.set), cfg))
    check_env(cfg)
    return cfg


def check_env_id(env_id: str) -> None:
    import gymnasium

    import impala_frodo.envs  # noqa: F401 (registers our ids)
    from impala_frodo.envs import atari, minatar_envs

    if minatar_envs.is_minatar_id(env_id):
        try:
            minatar_envs.register_minatar_envs()  # on first use; says how to install minatar
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if atari.is_atari_id(env_id):  # not in gymnasium's registry: our ALE vector env
        try:
            atari.check_atari_id(env_id)  # a known game; says how to install ale-py
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return
    if env_id not in gymnasium.registry:
        ours = [k for k in gymnasium.registry if k.startswith("impala_frodo/")]
        raise ConfigError(
            f"unknown env id {env_id!r}: not registered with gymnasium "
            f"(ours: {', '.join(sorted(ours))}; any registered id with discrete actions works)"
        )


def check_env(cfg: Config) -> None:
    """The env id is registered and one env can be built (extra dependencies installed,
    kwargs accepted, discrete actions); :class:`ConfigError` otherwise."""
    import gymnasium

    from actors.rollout import env_spec

    check_env_id(cfg.env.id)
    try:
        env_spec(cfg)
    except (ValueError, TypeError, ImportError, gymnasium.error.Error) as e:
        raise ConfigError(
            f"cannot build env {cfg.env.id!r} with {cfg.env.kwargs}: {first_line(e)}"
        ) from None


# ------------------------------------------------------------------ logging
class _TqdmHandler(logging.Handler):
    """Log lines that do not tear the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # never let logging kill a run
            self.handleError(record)


def setup_logging(level: int = logging.INFO) -> None:
    logger = logging.getLogger("impala_frodo")
    if not any(isinstance(h, _TqdmHandler) for h in logger.handlers):
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter(f"[{PROG}] %(levelname)s %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


# ------------------------------------------------------------------ commands
def cmd_presets() -> int:
    names = preset_names()
    width = max(map(len, names), default=0)
    for name in names:
        print(f"{name:<{width}}  {preset_summary(name)}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from impala_frodo.utils import resolve_device
    from learner.driver import TrainOptions, describe_result, train

    cfg = config_from_args(args)
    try:
        resolve_device(cfg.run.device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    resume_dir, resume_ckpt = resume_paths(args.resume) if args.resume else (None, None)
    if args.progress is None:  # a bar on a terminal, plain lines in a log file
        progress = "bar" if sys.stderr.isatty() else "lines"
    else:
        progress = "bar" if args.progress else "off"
    options = TrainOptions(
        resume_dir=resume_dir,
        resume_checkpoint=resume_ckpt,
        address=args.address,
        progress=progress,
        stop_at_return=args.stop_at_return,
    )
    if args.max_actor_restarts is not None:
        if args.max_actor_restarts < 0:
            raise UsageError(f"--max-actor-restarts must be >= 0, got {args.max_actor_restarts}")
        options.max_actor_restarts = args.max_actor_restarts
    setup_logging()
    result = train(cfg, options)
    print(f"[{PROG}] {describe_result(result)}", file=sys.stderr)
    if result.message:
        print(f"[{PROG}] {result.message}", file=sys.stderr)
    return result.exit_code


def cmd_sweep(args: argparse.Namespace) -> int:
    """One sweep per preset (or one of the plain config), then an optional plot of them all."""
    from impala_frodo.plotting import final_values, load_runs, plot_runs
    from learner.ray_session import ray_session
    from learner.sweep import run_sweep

    if args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    if args.cpus_per_seed <= 0:
        raise UsageError(f"--cpus-per-seed must be > 0, got {args.cpus_per_seed}")
    if args.seed_timeout <= 0:
        raise UsageError(f"--seed-timeout must be > 0, got {args.seed_timeout}")
    presets = args.preset or [None]
    configs = [(name or "config", config_from_args(args, name)) for name in presets]
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    setup_logging()
    run_dirs: list[Path] = []
    failed = 0
    with ray_session(args.address, connect_timeout_s=configs[0][1].run.connect_timeout_s):
        for name, cfg in configs:
            result = run_sweep(
                cfg,
                seeds,
                cfg.run.logdir,
                name=name,
                cpus_per_seed=args.cpus_per_seed,
                progress=progress,
                distributed=args.distributed,
                seed_timeout_s=args.seed_timeout,
            )
            done = [result.run_dirs[s] for s in sorted(result.summaries)]
            run_dirs.extend(done)
            failed += len(result.failures)
            finals = final_values(load_runs(done), _metric_of(cfg)) if done else {}
            final_text = "; ".join(
                f"{label}: final {mean:.3f} +- {se:.3f} (s.e., {n} seeds)"
                for label, (mean, se, n) in finals.items()
            )
            lag = result.mean_policy_lag()
            lag_text = "" if lag is None else f"; mean policy lag {lag:.2f} updates"
            print(
                f"[{PROG}] sweep {name}: {len(done)}/{len(seeds)} seeds done in "
                f"{result.wall_time_s:.0f} s, {cfg.run.total_env_steps:,} env steps each; "
                f"{final_text or 'no finished seed'}{lag_text}; dir {result.sweep_dir}",
                file=sys.stderr,
            )
            for seed, message in sorted(result.failures.items()):
                print(f"[{PROG}] sweep {name}: seed {seed} failed: {message}", file=sys.stderr)
    if args.plot and run_dirs:
        out = plot_runs(run_dirs, args.plot)
        print(f"[{PROG}] wrote {out}", file=sys.stderr)
    return EXIT_FAILED_SEEDS if failed else 0


#: ``sweep`` exit code when at least one seed failed (the others' run dirs are kept).
EXIT_FAILED_SEEDS = 1


def _metric_of(cfg: Config) -> str:
    from impala_frodo.plotting import CONTROL_METRIC, PREDICTION_METRIC

    return PREDICTION_METRIC if cfg.task == "prediction" else CONTROL_METRIC


def cmd_plot(args: argparse.Namespace) -> int:
    from impala_frodo.plotting import expand_run_dirs, plot_runs

    if args.dpi <= 0:
        raise UsageError(f"--dpi must be > 0, got {args.dpi}")
    run_dirs = expand_run_dirs(args.run_dirs)
    out = plot_runs(
        run_dirs,
        args.out,
        metric=args.metric,
        title=args.title,
        fmt=args.format,
        dpi=args.dpi,
    )
    print(f"[{PROG}] wrote {out}", file=sys.stderr)
    # Atari runs: median and mean human-normalised scores over games, and their figure.
    from impala_frodo.atari_summary import report_atari

    for line in report_atari(run_dirs, out):
        print(f"[{PROG}] {line}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Entry point of ``impala-frodo`` and ``python -m learner``; returns the exit code."""
    parser = build_parser(prog)
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parser.parse_args(_normalise_argv(argv))
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return int(e.code or 0)
    try:
        if args.command == "presets":
            return cmd_presets()
        if args.command == "sweep":
            return cmd_sweep(args)
        if args.command == "plot":
            return cmd_plot(args)
        return cmd_train(args)
    except (ConfigError, CheckpointError, RunDirError, UsageError) as e:
        # (a cluster that cannot be reached is a ConfigError: ClusterConnectError)
        return _exit_now_if_stuck(_error(str(e)))
    except KeyboardInterrupt:
        print(f"[{PROG}] interrupted", file=sys.stderr)
        return _exit_now_if_stuck(130)


def _exit_now_if_stuck(code: int) -> int:
    """End the process at once if Ray is still stuck connecting (it would block the exit)."""
    session = sys.modules.get("learner.ray_session")
    if session is not None and session.connect_stuck():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
