"""Ray CPU shares fitted to the machine a local run starts on, said in one line."""

from __future__ import annotations

import logging

import pytest

from impala_frodo.config.checks import ConfigError
from impala_frodo.config.schema import Config, set_dotted
from learner.cluster import resources
from learner.cluster.resources import fit_local_cpus


@pytest.fixture
def two_cpus(monkeypatch):
    monkeypatch.setattr(resources.os, "cpu_count", lambda: 2)


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
