"""Ray CPU shares fitted to the machine a local run starts on, said in one line; the
shares the user set kept, and refused in one line where they cannot fit."""

from __future__ import annotations

import logging

import pytest

from impala_frodo.config.checks import ConfigError
from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.records.runlog import create_run_dir
from learner.app.args import build_parser, config_from_args, explicit_keys, normalise_argv
from learner.app.cli import main
from learner.cluster import resources
from learner.cluster.resources import fit_local_cpus
from learner.control.exit_codes import ExitCode


@pytest.fixture
def two_cpus(monkeypatch):
    monkeypatch.setattr(resources.os, "cpu_count", lambda: 2)


def parse(*argv: str):
    return build_parser().parse_args(normalise_argv(argv))


def test_shares_that_fit_are_left_alone(two_cpus, caplog):
    cfg = set_dotted(Config(), {"run.num_actors": 4})  # 4 x 0.5 = 2
    assert fit_local_cpus(cfg) is cfg and not caplog.records


def test_the_readmes_scaling_examples_fit_two_cores(two_cpus, caplog):
    caplog.set_level(logging.WARNING, logger="impala_frodo")
    cfg = fit_local_cpus(set_dotted(Config(), {"run.num_actors": 8}))
    assert cfg.run.actor_num_cpus == 0.25 and cfg.run.num_actors == 8
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == (
        "8 actors x 0.5 CPU reserve 4 CPUs but this machine has 2: fitted to 0.25 per actor "
        "(--actor-num-cpus)"
    )
    caplog.clear()
    both = {"run.num_actors": 4, "run.num_learners": 2, "eval.every_s": 30.0}
    cfg = fit_local_cpus(set_dotted(Config(), both))  # 2 + 2 + 0.5 CPUs
    assert (cfg.run.actor_num_cpus, cfg.run.learner_num_cpus, cfg.eval.num_cpus) == (
        0.22,
        0.44,
        0.22,
    )
    assert "--set run.learner_num_cpus=C" in caplog.records[0].getMessage()


def test_too_many_processes_for_the_machine_are_refused_naming_the_flag(two_cpus):
    with pytest.raises(ConfigError, match=r"^41 actors would get under 0\.05 CPU .*--num-actors"):
        fit_local_cpus(set_dotted(Config(), {"run.num_actors": 41}))
    assert fit_local_cpus(set_dotted(Config(), {"run.num_actors": 40})).run.actor_num_cpus == 0.05


# Issue 30: shares the user set win; only the others are fitted, into what those leave.
LEARNERS = {"run.num_learners": 2}  # 2 actors x 0.5 and 2 learners x 1: 3 CPUs


def test_default_shares_are_fitted_around_an_explicit_actor_share(two_cpus, caplog):
    caplog.set_level(logging.WARNING, logger="impala_frodo")
    cfg = set_dotted(Config(), LEARNERS)
    fitted = fit_local_cpus(cfg, frozenset(LEARNERS))  # a count set, no share: both fitted
    assert (fitted.run.actor_num_cpus, fitted.run.learner_num_cpus) == (0.33, 0.66)
    caplog.clear()
    fitted = fit_local_cpus(cfg, frozenset({*LEARNERS, "run.actor_num_cpus"}))
    assert (fitted.run.actor_num_cpus, fitted.run.learner_num_cpus) == (0.5, 0.5)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == (
        "2 actors x 0.5 and 2 learners x 1 CPU reserve 3 CPUs but this machine has 2: fitted "
        "to 0.5 per learner (--set run.learner_num_cpus=C) beside 0.5 per actor as set"
    )


def test_explicit_shares_that_cannot_fit_are_refused_naming_the_flags(two_cpus):
    both = set_dotted(Config(), {**LEARNERS, "run.actor_num_cpus": 1.0})
    with pytest.raises(ConfigError) as refused:
        fit_local_cpus(both, frozenset({"run.actor_num_cpus", "run.learner_num_cpus"}))
    assert str(refused.value) == (
        "2 actors x 1 and 2 learners x 1 CPU, as set, reserve 4 CPUs but this machine has 2: "
        "lower --actor-num-cpus, --set run.learner_num_cpus=C, --num-actors or "
        "--num-learners, or join a cluster with --address"
    )
    learners = set_dotted(Config(), LEARNERS)  # 2 learners x 1, as set, leave the actors 0
    with pytest.raises(ConfigError) as refused:
        fit_local_cpus(learners, frozenset({"run.learner_num_cpus"}))
    assert str(refused.value) == (
        "2 actors would get under 0.05 CPU each on the 2 CPUs here beside the 2 CPUs set for "
        "2 learners x 1: lower --num-actors, --set run.learner_num_cpus=C or --num-learners, "
        "or join a cluster with --address"
    )


def test_explicit_keys_are_the_flags_set_and_config_file_not_preset_or_resume(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[eval]\nnum_cpus = 0.25\n")
    sets = ["--set", "run.learner_num_cpus=0.5", "--set", "meta={learner_num_cpus=2}"]
    args = parse(
        "--preset", "catch-impala", "--config", str(config), "--actor-num-cpus", "1", *sets
    )
    config_from_args(args)
    shares = {
        "run.actor_num_cpus",
        "run.learner_num_cpus",
        "eval.num_cpus",
        "meta.learner_num_cpus",
    }
    assert explicit_keys(args) == shares  # not the preset's algo, env, ...
    run_dir = create_run_dir(set_dotted(Config(), {"run.actor_num_cpus": 0.25}), tmp_path / "r")
    resumed = parse("--resume", str(run_dir), "--total-env-steps", "1000")
    assert explicit_keys(resumed) == {"run.total_env_steps"}  # the saved shares may be fitted


class _Started(Exception):
    """Raised where a run would go on to start Ray, its config fitted and accepted."""


@pytest.fixture
def local_two_cpus(two_cpus, monkeypatch):
    """``impala-frodo train`` on a 2-CPU machine with no cluster to join, stopped with the
    config it would run (:class:`_Started`) just before its checks of memory and Ray."""
    import ray

    from learner.app import driver

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    runs: list[Config] = []

    def started(cfg, spec, local):
        runs.append(cfg)
        raise _Started

    monkeypatch.setattr(driver, "check_memory", started)
    return runs


def test_the_cli_fits_default_shares_and_refuses_explicit_ones_in_one_line(
    local_two_cpus, capsys, tmp_path
):
    argv = ["train", "--num-learners", "2", "--total-env-steps", "2000", "--no-progress"]
    argv += ["--logdir", str(tmp_path)]
    for flags, shares in (([], (0.33, 0.66)), (["--actor-num-cpus", "0.5"], (0.5, 0.5))):
        with pytest.raises(_Started):
            main([*argv, *flags])
        cfg = local_two_cpus.pop()
        assert (cfg.run.actor_num_cpus, cfg.run.learner_num_cpus) == shares
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert "but this machine has 2: fitted to " in line
    code = main([*argv, "--actor-num-cpus", "1", "--set", "run.learner_num_cpus=1"])
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE and not local_two_cpus
    (line,) = err.strip().splitlines()
    assert line.startswith("impala-frodo: error: 2 actors x 1 and 2 learners x 1 CPU, as set")
    assert "lower --actor-num-cpus, --set run.learner_num_cpus=C" in line
