"""The command line's arguments: the parser, and the Config and options they build.

Config precedence: defaults < ``--preset`` < ``--config FILE`` < flags (``--set``
last). With ``--resume RUN_DIR`` the run's saved ``config.json`` replaces
defaults and preset; flags (e.g. a larger ``--total-env-steps``) still apply.
Dotted keys (flags, ``--set``) are read by :func:`impala_frodo.config.schema.set_dotted`,
values by :func:`impala_frodo.config.schema.parse_value`, as everywhere else.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from impala_frodo.config.checks import ALGOS, DEVICES, META_MODES, ConfigError
from impala_frodo.config.presets import load_preset
from impala_frodo.config.schema import Config, load_file, merge, parse_value, set_dotted
from impala_frodo.records.checkpoint import CheckpointError
from impala_frodo.records.runlog import CONFIG_FILE, read_config
from impala_frodo.reports.plotting import FORMATS as FIGURE_FORMATS
from learner.app.env_check import check_env
from learner.app.evaluate import add_eval_parser
from learner.control.exit_codes import EXIT_CODES_HELP

PROG = "impala-frodo"
SUBCOMMANDS = ("train", "eval", "sweep", "plot", "presets")


def whole(text: str) -> int:
    """A whole number, also in float notation (``1e6``, ``2.5e5``): a step budget reads
    as one."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(value)


#: Flags that set one config field: (flag, dotted key, type, help).
FIELD_FLAGS: tuple[tuple[str, str, Callable[[str], Any], str], ...] = (
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
    ("--total-env-steps", "run.total_env_steps", whole, "step budget of the run (1e6 works)"),
    ("--seed", "run.seed", int, "run seed"),
    ("--logdir", "run.logdir", str, "parent folder of run directories (default runs/)"),
    ("--device", "run.device", str, f"learner device: {', '.join(DEVICES)}"),
    (
        "--meta-mode",
        "meta.mode",
        str,
        f"where the meta step runs: {', '.join(META_MODES)} (async: a meta-learner process)",
    ),
    ("--queue-size", "run.queue_size", int, "max unrolls in flight/queued in total"),
    ("--batches-per-update", "run.batches_per_update", int, "actor batches per learner batch"),
    ("--num-learners", "run.num_learners", int, "data-parallel learner processes (Ray actors)"),
    ("--broadcast-every", "run.broadcast_every", int, "updates between weight publications"),
    ("--actor-num-cpus", "run.actor_num_cpus", float, "Ray CPUs reserved per actor"),
    (
        "--eval-every-s",
        "eval.every_s",
        float,
        "evaluate the current weights every S seconds on fresh seeds (eval/return)",
    ),
    ("--checkpoint-every-s", "run.checkpoint_every_s", float, "seconds between checkpoints"),
    ("--log-every-s", "run.log_every_s", float, "seconds between log records (at most)"),
    (
        "--log-every-updates",
        "run.log_every_updates",
        int,
        "updates between log records (at most)",
    ),
)


TRAIN_DESCRIPTION = f"""\
Train a run (or resume one) on a local Ray instance, or on a cluster with --address.

examples:
  impala-frodo train                                 FRODO on Catch 10 x 5, 500k env steps
  impala-frodo train --preset catch-impala --num-actors 4
  impala-frodo train --config my.toml --set meta.lr=3e-3 --set run.queue_size=4
  impala-frodo train --resume runs/frodo-catch-s0-20250101-120000 --total-env-steps 1000000

Config precedence: defaults < --preset < --config FILE < flags < --set. With --resume
RUN_DIR the run's saved config.json replaces defaults and preset; flags (e.g. a larger
--total-env-steps) still apply.

{EXIT_CODES_HELP}"""

SWEEP_DESCRIPTION = (
    "Run --seeds seeds of each --preset as parallel Ray tasks, each seed its "
    "own run directory under LOGDIR/sweep-<name>-<time>/. A failed seed is reported and "
    "the others go on (exit code 1 at the end). With --distributed each seed runs "
    "the Ray actor-learner of 'train' and logs its measured policy lag."
)

PLOT_DESCRIPTION = (
    "One panel per env (id and kwargs), one curve per setting: runs whose configs differ "
    "only in seed, budget or logging are seeds of one curve, named by its preset and the "
    "settings that differ between the curves. A curve is the mean over distinct seeds "
    "against env steps with a band of +- 1 standard error (return for control, value "
    "RMSE for the random walk). Prints one line per curve: its label, seeds and final value. "
    "A run without the metric is left out with a warning. A directory that is not a run "
    "directory stands for every run below it (e.g. `impala-frodo plot runs --out fig.png`)."
)

#: ``sweep --seed-timeout`` default: far above a Catch seed (minutes), below forever.
DEFAULT_SEED_TIMEOUT_S = 4 * 3600.0


class UsageError(Exception):
    """Bad command-line input; exit code 2 (``ExitCode.USAGE``) with this one-line message."""


# ------------------------------------------------------------------ parser
class OneLineErrorParser(argparse.ArgumentParser):
    """argparse with its errors as :class:`UsageError` (one line, exit code 2), not the
    usage block: ``--seed abc`` reads like every other bad input. ``--help`` is unchanged.
    Subcommand parsers are of the same class (``add_subparsers`` uses the parent's)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The ``impala-frodo`` parser: ``train``, ``eval``, ``sweep``, ``plot`` and ``presets``."""
    parser = OneLineErrorParser(
        prog=prog,
        description="FRODO meta-gradient RL on an IMPALA-style Ray actor-learner.",
        epilog="With options but no subcommand, the options are those of 'train'. "
        f"'{prog} COMMAND --help' tells more.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{train,eval,sweep,plot,presets}")
    _add_train_parser(sub)
    add_eval_parser(sub)
    _add_sweep_parser(sub)
    _add_plot_parser(sub)
    presets = sub.add_parser("presets", help="list the presets")
    presets.add_argument("--all", action="store_true", help="every Atari game's presets too")
    return parser


def _add_config_args(parser: argparse.ArgumentParser, *, many_presets: bool) -> None:
    """The options that build a Config (shared by ``train`` and ``sweep``)."""
    if many_presets:
        parser.add_argument(
            "--preset",
            action="append",
            default=[],
            help="a named preset, repeatable: one sweep each ('impala-frodo presets' lists them)",
        )
    else:
        parser.add_argument("--preset", help="a named preset ('impala-frodo presets' lists them)")
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


def _add_train_parser(sub: Any) -> None:
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


def _add_sweep_parser(sub: Any) -> None:
    sweep = sub.add_parser(
        "sweep",
        help="run seeds of one or more presets in parallel (synchronous trainer per seed, "
        "or the actor-learner with --distributed)",
        description=SWEEP_DESCRIPTION,
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


def _add_plot_parser(sub: Any) -> None:
    plot = sub.add_parser(
        "plot",
        help="mean +- s.e. over seeds from run (or sweep) directories",
        description=PLOT_DESCRIPTION,
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
    plot.add_argument(
        "--csv", action="store_true", help="also write the plotted curves beside the figure (.csv)"
    )
    plot.add_argument("--title", help="figure title")


def normalise_argv(argv: Sequence[str]) -> list[str]:
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
def config_from_args(args: argparse.Namespace, preset: str | None = None) -> Config:
    """defaults < preset < config file < flags < --set (--resume: the run's config is the base).

    ``preset`` overrides ``args.preset`` (a sweep builds one config per preset). The env
    is checked too (:func:`learner.app.env_check.check_env`): a bad one is bad input.
    """
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
        from impala_frodo.config.presets.atari import atari_defaults

        cfg = atari_defaults(getattr(args, "env.id", None), getattr(args, "algo", None))
        cfg = cfg or Config()
    if args.config:
        cfg = merge(cfg, load_file(args.config))
    cfg = set_dotted(cfg, _flag_overrides(args))
    cfg = set_dotted(cfg, _set_overrides(args.set))
    check_env(cfg)
    return cfg


def explicit_keys(args: argparse.Namespace) -> frozenset[str]:
    """The dotted keys this command line sets: by flag, ``--set`` or ``--config FILE``.

    What the user asked for in so many words; a local run keeps these CPU shares and fits
    only the others to the machine (:func:`learner.cluster.resources.fit_local_cpus`).
    A preset's values and a resumed run's saved ``config.json`` are not in it: a preset is
    written for any machine, and a saved share may be one fitted to the machine the run
    last ran on, which a resume on another machine should fit again, not insist on.
    Call after :func:`config_from_args`, which has checked the file and the ``--set`` items.
    """
    nested = [_flag_overrides(args), _set_overrides(args.set)]
    if args.config:
        nested.append(load_file(args.config))
    return frozenset(key for overrides in nested for key in _dotted_keys(overrides))


def _dotted_keys(overrides: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """``{"run": {"seed": 1}, "meta.lr": 3e-3}`` -> ``run.seed``, ``meta.lr``: every leaf."""
    for key, value in overrides.items():
        if isinstance(value, Mapping) and value:
            yield from _dotted_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _set_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items -> ``{KEY: value}`` (values read as TOML literals)."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = parse_value(value.strip())
    return overrides


def _flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The :data:`FIELD_FLAGS` given, as ``{dotted key: value}``."""
    return {
        key: getattr(args, key) for _, key, _, _ in FIELD_FLAGS if getattr(args, key) is not None
    }


def resume_paths(resume: str) -> tuple[Path, Path | None]:
    """``RUN_DIR`` -> (RUN_DIR, None); ``RUN_DIR/checkpoints/x.pt`` -> (RUN_DIR, that file).

    :class:`ConfigError` naming the path if it is not a run directory (a file, or a
    folder without ``config.json``).
    """
    path = Path(resume)
    if path.suffix == ".pt":
        if not path.is_file():
            raise CheckpointError(f"no checkpoint at {str(path)!r}")
        run_dir = path.parent.parent
        if not (run_dir / CONFIG_FILE).is_file():
            raise ConfigError(
                f"--resume {str(path)!r}: a checkpoint is resumed inside its run directory "
                f"(RUN_DIR/checkpoints/x.pt), and {str(run_dir)!r} has no {CONFIG_FILE}"
            )
        return run_dir, path
    if not path.exists():
        raise ConfigError(f"run directory {str(path)!r} does not exist")
    if not path.is_dir():
        raise ConfigError(
            f"--resume {str(path)!r} is not a run directory but a file; give the folder "
            f"of a run (or a checkpoint .pt in its checkpoints/)"
        )
    if not (path / CONFIG_FILE).is_file():
        raise ConfigError(
            f"--resume {str(path)!r} is not a run directory: it has no {CONFIG_FILE} "
            f"(a run directory is made by 'train' under run.logdir)"
        )
    return path, None
