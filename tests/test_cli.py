"""The command line: bad input exits 2 with one line on stderr; flags reach the config."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from impala_frodo.config.checks import ConfigError
from impala_frodo.config.presets import preset_names
from impala_frodo.config.schema import Config, parse_value, set_dotted
from impala_frodo.records.checkpoint import CheckpointManager
from impala_frodo.records.runlog import create_run_dir, read_metrics
from learner.app.args import build_parser, config_from_args, normalise_argv
from learner.app.cli import main
from learner.control.exit_codes import ExitCode


def parse(*argv: str):
    return build_parser().parse_args(normalise_argv(argv))


def assert_usage_error(capsys, argv: list[str], *fragments: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("impala-frodo: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------- bad input
def test_unknown_env_id(capsys):
    assert_usage_error(capsys, ["train", "--env", "NoSuchEnv-v9"], "unknown env id", "NoSuchEnv")


def test_unknown_preset(capsys):
    assert_usage_error(capsys, ["--preset", "nope"], "unknown preset 'nope'", "catch-frodo")


@pytest.mark.parametrize(
    "flag", ["--num-actors", "--envs-per-actor", "--unroll-length", "--total-env-steps"]
)
def test_counts_below_one(capsys, flag):
    assert_usage_error(capsys, ["train", flag, "0"], "must be an integer >= 1", "got 0")


def test_unknown_algo_and_device(capsys):
    assert_usage_error(capsys, ["train", "--algo", "ppo"], "algo must be one of")
    assert_usage_error(capsys, ["train", "--device", "tpu"], "run.device must be one of")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(capsys):
    assert_usage_error(capsys, ["train", "--device", "cuda"], "no CUDA device")


def test_missing_and_invalid_config_files(capsys, tmp_path):
    assert_usage_error(
        capsys, ["train", "--config", str(tmp_path / "none.toml")], "cannot read config file"
    )
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nseed = 1\n")
    assert_usage_error(capsys, ["train", "--config", str(bad)], "is not valid toml")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"run": {"sed": 1}}))
    assert_usage_error(capsys, ["train", "--config", str(wrong)], "unknown key(s) ['sed']")


def test_bad_set_overrides(capsys):
    assert_usage_error(capsys, ["train", "--set", "run.seed"], "--set expects KEY=VALUE")
    assert_usage_error(capsys, ["train", "--set", "run.nope=1"], "unknown key(s) ['nope']")
    assert_usage_error(capsys, ["train", "--set", "meta.lr=-1"], "meta.lr must be a number")


def test_resume_errors(capsys, tmp_path):
    assert_usage_error(capsys, ["train", "--resume", str(tmp_path / "gone")], "does not exist")
    run_dir = create_run_dir(Config(), tmp_path)
    assert_usage_error(capsys, ["train", "--resume", str(run_dir)], "no checkpoint", "none yet")
    latest = CheckpointManager(run_dir / "checkpoints").latest
    latest.parent.mkdir()  # a run directory gets checkpoints/ with its first checkpoint
    latest.write_bytes(b"garbage")
    assert_usage_error(
        capsys, ["train", "--resume", str(run_dir)], "corrupt or unreadable", "latest.pt"
    )
    assert_usage_error(
        capsys,
        ["train", "--resume", str(run_dir), "--preset", "catch-frodo"],
        "--preset cannot be combined with --resume",
    )
    assert not (run_dir / "metrics.jsonl").exists()  # nothing written on a failed resume


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


def _run_dir_with(tmp_path, state: dict) -> str:
    run_dir = create_run_dir(Config(), tmp_path / "runs")
    CheckpointManager(run_dir / "checkpoints").save(state)
    return str(run_dir)


def _write(tmp_path, name: str, data: bytes) -> str:
    (tmp_path / name).write_bytes(data)
    return str(tmp_path / name)


NO_BOX2D = None if _missing("Box2D") else "Box2D is installed here"
TOO_MANY_CPUS = str(min(64, (os.cpu_count() or 1) + 1))  # 64: the config's own limit
#: Actors of the default 0.5 CPU: one more than the local instance (os.cpu_count()) places.
#: One actor more than the machine's CPUs hold at 0.05 CPU each (the least share fitted).
ONE_ACTOR_TOO_MANY = str(20 * (os.cpu_count() or 1) + 1)

#: (id, argv builder, fragments of the one-line message, skip reason or None): the bad
#: inputs that once crashed or hung (issue 13), each an exit code 2 with one line now.
BAD_INPUTS = [
    ("hidden-sizes-number", lambda t: ["--set", "agent.hidden_sizes=32"],
     ["agent.hidden_sizes must be a list"], None),
    ("logdir-number", lambda t: ["--set", "run.logdir=3"], ["run.logdir must be"], None),
    ("logdir-not-utf8", lambda t: ["--logdir", str(t / "runs-\udcff")],
     ["run.logdir must be", "UTF-8"], None),
    ("seed-2**32", lambda t: ["--seed", str(2**32)], ["run.seed must be an integer in"], None),
    ("config-not-utf8", lambda t: ["--config", _write(t, "c.toml", b"[run]\nseed = 1 # \xff\n")],
     ["is not UTF-8"], None),
    ("config-json-number", lambda t: ["--config", _write(t, "c.json", b"3")],
     ["must hold a JSON object"], None),
    ("env-needs-box2d", lambda t: ["--env", "LunarLander-v3"],
     ["cannot build env 'LunarLander-v3'", "Box2D"], NO_BOX2D),
    ("env-needs-box2d-car", lambda t: ["--env", "CarRacing-v3"],
     ["cannot build env 'CarRacing-v3'"], NO_BOX2D),
    ("actor-cpus-above-local", lambda t: ["--actor-num-cpus", TOO_MANY_CPUS],
     ["actor_num_cpus"], None),
    ("checkpoint-without-counters",
     lambda t: ["--resume", _run_dir_with(t, {})], ["no valid counters"], None),
    # Issue 23: argparse's type errors in one line; non-finite and over-long numbers.
    ("seed-not-a-number", lambda t: ["--seed", "abc"],
     ["argument --seed", "invalid int value: 'abc'"], None),
    ("num-actors-float", lambda t: ["--num-actors", "1e12"],
     ["argument --num-actors", "invalid int value"], None),
    ("stop-at-return-nan", lambda t: ["--stop-at-return", "nan"],
     ["--stop-at-return must be a finite number"], None),
    ("lr-5000-digits", lambda t: ["--set", "optim.lr=" + "9" * 5000],
     ["optim.lr must be a number"], None),
    # Issue 23: more actors than a local instance could ever place (it hung); names too
    # long for the file system (tracebacks); a --resume that is not a run directory.
    # Since: shares are fitted to the machine, down to 0.05 CPU a process.
    ("num-actors-10**12", lambda t: ["--num-actors", str(10**12)],
     ["1,000,000,000,000 actors would get under 0.05 CPU each", "--num-actors", "--address"],
     None),
    ("num-actors-one-beyond-local", lambda t: ["--num-actors", ONE_ACTOR_TOO_MANY,
                                               "--total-env-steps", "2000"],
     [f"{ONE_ACTOR_TOO_MANY} actors would get under 0.05 CPU each", "lower --num-actors"], None),
    ("preset-10000-chars", lambda t: ["--preset", "x" * 10_000],
     ["unknown preset 'xxxx", "(10,000 characters)", "catch-frodo"], None),
    ("config-path-too-long", lambda t: ["--config", str(t / ("x" * 300))],
     ["--config '", "too long for the file system", "has 300 bytes", "at most 255"], None),
    ("config-path-10000-chars", lambda t: ["--config", "x" * 10_000],
     ["--config 'xxxx", "(10,000 characters)", "at most 4,095"], None),
    ("logdir-too-long", lambda t: ["--logdir", str(t / ("x" * 300))],
     ["--logdir", "too long for the file system"], None),
    ("logdir-too-long-by-set", lambda t: ["--set", f"run.logdir={'x/' * 3000}"],
     ["run.logdir 'x/x/", "too long for the file system", "at most 4,095"], None),
    ("resume-too-long", lambda t: ["--resume", "x" * 10_000],
     ["--resume 'xxxx", "too long for the file system"], None),
    ("resume-a-text-file", lambda t: ["--resume", _write(t, "notes.txt", b"some notes\n")],
     ["notes.txt' is not a run directory but a file"], None),
    ("resume-a-folder-without-config", lambda t: ["--resume", str(t)],
     ["--resume '{t}' is not a run directory: it has no config.json"], None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("build", "fragments"),
    [
        pytest.param(build, fragments, id=name, marks=[pytest.mark.skip(reason=skip)] * bool(skip))
        for name, build, fragments, skip in BAD_INPUTS
    ],
)
def test_bad_inputs_exit_2_with_one_line(capsys, tmp_path, monkeypatch, build, fragments):
    import ray

    # As from a shell: no cluster to join, so a run would start its own local Ray.
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    argv = ["train", "--logdir", str(tmp_path / "runs"), *build(tmp_path), "--no-progress"]
    assert_usage_error(capsys, argv, *(f.replace("{t}", str(tmp_path)) for f in fragments))


def test_plot_refuses_a_metrics_file_that_is_not_utf8(capsys, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(Config().to_dict()))
    (run_dir / "metrics.jsonl").write_bytes(b'{"env_steps": 1}\n\xff\xfe\n')
    assert_usage_error(
        capsys, ["plot", str(run_dir), "--out", str(tmp_path / "f.png")], "is not UTF-8 text"
    )


def test_module_entry_point_reports_bad_input_without_traceback():
    done = subprocess.run(
        [sys.executable, "-m", "learner", "--env", "NoSuchEnv-v9"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == ExitCode.USAGE
    assert done.stderr.strip().startswith("impala-frodo: error: unknown env id")
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- parsing
def test_options_without_a_subcommand_mean_train():
    args = parse("--preset", "catch-frodo", "--num-actors", "2")
    assert args.command == "train" and args.preset == "catch-frodo"
    assert normalise_argv([]) == ["--help"]
    assert parse("presets").command == "presets"


def test_precedence_defaults_preset_file_flags_set(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[run]\nseed = 5\nnum_actors = 3\n[env]\nid = "CartPole-v1"\n')
    cfg = config_from_args(
        parse(
            "--preset", "catch-impala", "--config", str(config), "--num-actors", "4",
            "--set", "meta.lr=3e-3", "--set", "agent.hidden_sizes=[32, 32]",
            "--set", "env.id=impala_frodo/Catch-v0", "--set", "env.kwargs.rows=7",
        )
    )  # fmt: skip
    assert cfg.algo == "impala"  # preset
    assert cfg.run.seed == 5  # file over defaults
    assert cfg.run.num_actors == 4  # flag over file
    assert cfg.meta.lr == 3e-3 and cfg.agent.hidden_sizes == (32, 32)
    assert cfg.env.id == "impala_frodo/Catch-v0"  # --set over file
    # merged into the preset's kwargs
    assert cfg.env.kwargs == {"rows": 7, "columns": 6, "random_start_row": True}


def test_parse_value():
    assert parse_value("3") == 3 and parse_value("1e-3") == 1e-3
    assert parse_value("true") is True and parse_value("[1, 2]") == [1, 2]
    assert parse_value("CartPole-v1") == "CartPole-v1"
    assert parse_value('"quoted"') == "quoted"


def test_dotted_keys_are_read_alike_by_set_dotted_and_the_cli():
    base = set_dotted(Config(), {"env.kwargs": {"rows": 11, "columns": 6}})
    cfg = set_dotted(base, {"env.kwargs.rows": 7, "run.seed": 3, "algo": "impala"})
    assert cfg.env.kwargs == {"rows": 7, "columns": 6}  # merged, not replaced
    assert cfg.run.seed == 3 and cfg.algo == "impala"
    with pytest.raises(ConfigError, match=r"unknown config key 'run\.seed\.x'"):
        set_dotted(cfg, {"run.seed.x": 1})


def test_presets_lists_every_preset_with_its_summary(capsys):
    assert main(["presets", "--all"]) == ExitCode.OK
    out = capsys.readouterr().out
    for name in preset_names():
        assert f"  {name} " in out
    assert "IMPALA baseline" in out


def test_presets_come_by_family_with_atari_folded(capsys):
    assert main(["presets"]) == ExitCode.OK
    lines = capsys.readouterr().out.splitlines()
    families = [line for line in lines if line.endswith(":")]
    assert families == ["Catch:", "Random walk:", "Gymnasium:", "MinAtar:", "Atari:"]
    atari = [line.split()[0] for line in lines if line.startswith("  atari-")]
    assert atari == ["atari-<game>-frodo", "atari-<game>-impala"]
    assert "57 games" in lines[-2] and "--all" in lines[-1] and len(lines) < 40


def test_help_exits_zero(capsys):
    assert main(["--help"]) == ExitCode.OK
    assert "train" in capsys.readouterr().out


def test_bare_command_prints_help_and_trains_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([]) == ExitCode.OK
    out = capsys.readouterr().out
    assert out.startswith("usage: impala-frodo") and "{train,eval,sweep,plot,presets}" in out
    assert list(tmp_path.iterdir()) == []  # no runs/ directory: nothing started


def test_python_m_learner_names_itself_in_usage():
    done = subprocess.run(
        [sys.executable, "-m", "learner", "train", "--help"], capture_output=True, text=True
    )
    assert done.returncode == ExitCode.OK
    assert done.stdout.startswith("usage: python -m learner train")


def test_train_help_is_plain_text(capsys):
    assert main(["train", "--help"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "``" not in out and "::" not in out and ":class:" not in out
    assert "impala-frodo train --resume" in out and "exit codes" in out


def test_preset_descriptions_are_whole_sentences(capsys):
    assert main(["presets", "--all"]) == ExitCode.OK
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert len(lines) == len(preset_names())
    for line in lines:
        assert line.rstrip().endswith("."), line


def test_a_typo_gets_a_did_you_mean(capsys):
    line = assert_usage_error(capsys, ["--preset", "catch-frdo"], "did you mean 'catch-frodo'")
    assert len(line) < 300 and "atari-alien" not in line
    assert_usage_error(
        capsys, ["train", "--num-actros", "3"], "--num-actros: did you mean --num-actors"
    )
    assert_usage_error(capsys, ["train", "--set", "meta.lrr=3"], "did you mean meta.lr?")


def test_step_budgets_take_float_notation(capsys):
    cfg = config_from_args(parse("train", "--total-env-steps", "1e5"))
    assert cfg.run.total_env_steps == 100_000
    assert config_from_args(parse("--total-env-steps", "2.5e5")).run.total_env_steps == 250_000
    assert_usage_error(capsys, ["train", "--total-env-steps", "1.5"], "not a whole number")


def test_train_help_is_short_and_leaves_the_presets_to_presets(capsys):
    assert main(["train", "--help"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert len(out.splitlines()) < 100 and "atari-alien" not in out
    assert "impala-frodo presets" in out


@pytest.mark.skipif(_missing("minatar"), reason="needs the minatar extra")
def test_a_worker_process_does_not_repeat_minatars_note():
    code = (
        "from impala_frodo.envs import make_batched_env; make_batched_env('MinAtar/Breakout-v0', 2)"
    )
    counts = []
    for worker in ("0", "1"):
        env = {**os.environ, "IMPALA_FRODO_WORKER": worker}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        counts.append(done.stderr.count("is out of date"))
    assert counts == [1, 0]


def test_importing_the_package_registers_the_env_ids():
    code = (
        "import gymnasium, impala_frodo; "
        "assert 'impala_frodo/Catch-v0' in gymnasium.registry; "
        "gymnasium.make('impala_frodo/RandomWalk-v0')"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- a real run
@pytest.mark.ray
def test_train_then_resume_through_the_cli(ray_local, tmp_path, capsys):
    logdir = tmp_path / "runs"
    common = ["--envs-per-actor", "8", "--unroll-length", "10", "--no-progress"]
    argv = ["--preset", "catch-impala", "--total-env-steps", "4000", "--logdir", str(logdir)]
    assert main([*argv, *common]) == ExitCode.OK
    (run_dir,) = logdir.iterdir()
    out, err = capsys.readouterr()
    assert "done: reached the budget of 4,000 env steps. " in err
    assert out.startswith("done: reached the budget") and str(run_dir) in out  # for scripts
    config = json.loads((run_dir / "config.json").read_text())
    assert config["algo"] == "impala"
    assert config["env"]["kwargs"] == {"rows": 11, "columns": 6, "random_start_row": True}
    first = read_metrics(run_dir / "metrics.jsonl")[-1]["env_steps"]

    resume = ["train", "--resume", str(run_dir), "--total-env-steps", "8000", *common]
    assert main(resume) == ExitCode.OK
    records = read_metrics(run_dir / "metrics.jsonl")
    assert records[-1]["env_steps"] >= 8000 > first
    assert json.loads((run_dir / "config.json").read_text())["run"]["total_env_steps"] == 8000


def test_sweep_and_plot_bad_input(capsys, tmp_path):
    assert_usage_error(capsys, ["sweep", "--seeds", "0"], "--seeds must be >= 1")
    assert_usage_error(capsys, ["sweep", "--preset", "nope"], "unknown preset 'nope'")
    assert_usage_error(capsys, ["plot", str(tmp_path), "--out", "x.png"], "not a run directory")


@pytest.mark.ray
def test_sweep_two_presets_then_plot_their_directories(ray_local, tmp_path, capsys):
    logdir = tmp_path / "runs"
    argv = ["sweep", "--preset", "catch-impala", "--preset", "catch-frodo", "--seeds", "2"]
    budget = ["--total-env-steps", "3200", "--set", "run.num_envs=16", "--no-progress"]
    out = tmp_path / "fig.png"
    assert main([*argv, *budget, "--cpus-per-seed", "0.5", "--logdir", str(logdir)]) == ExitCode.OK
    err = capsys.readouterr().err
    assert err.count("2/2 seeds done") == 2 and "final" in err
    sweeps = sorted(logdir.iterdir())
    assert [p.name.split("-2")[0] for p in sweeps] == ["sweep-catch-frodo", "sweep-catch-impala"]
    for sweep in sweeps:
        seeds = sorted(
            json.loads((d / "config.json").read_text())["run"]["seed"]
            for d in sweep.iterdir()
            if d.is_dir()
        )
        assert seeds == [0, 1]
        assert json.loads((sweep / "sweep.json").read_text())["seeds"] == [0, 1]

    assert main(["plot", *map(str, sweeps), "--out", str(out)]) == ExitCode.OK
    assert out.read_bytes().startswith(b"\x89PNG")
