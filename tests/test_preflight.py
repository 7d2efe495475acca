"""Sizes that cannot fit are refused up front (issue 31, item 1): the estimate
(:mod:`impala_frodo.sizing.memory`, :mod:`impala_frodo.networks.sizes`) and the check
against the machine or the cluster (:mod:`learner.app.preflight`)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest

from actors.rollout import EnvSpec
from impala_frodo.config.checks import ConfigError
from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.networks.agent import AgentNet
from impala_frodo.networks.meta import MetaNet
from impala_frodo.sizing.memory import STEP_BYTES, chain_length, run_memory, unroll_bytes
from impala_frodo.sizing.parameters import agent_parameters, meta_parameters
from learner.app import preflight
from learner.app.preflight import Machine, Part, check_fits, format_bytes, this_machine
from learner.control.exit_codes import ExitCode

GIB = 1024**3
CATCH = EnvSpec(observation_shape=(10, 5), num_actions=3)


# ------------------------------------------------------------------------ the estimate
@pytest.mark.parametrize(
    ("obs_shape", "hidden"),
    [((10, 5), [64, 64]), ((10, 10, 4), [128]), ((40, 36, 4), [256]), ((6,), [])],
    ids=["mlp", "conv", "resnet", "linear"],
)
def test_parameter_counts_are_the_networks_own(obs_shape, hidden):
    cfg = set_dotted(Config(), {"agent.hidden_sizes": hidden})
    built = AgentNet.from_config(obs_shape, 5, cfg.agent)
    assert agent_parameters(obs_shape, 5, cfg.agent) == sum(p.numel() for p in built.parameters())
    meta = MetaNet(obs_shape, cfg.meta.hidden_size, embed_size=cfg.meta.embed_size)
    assert meta_parameters(cfg, obs_shape, 5) == sum(p.numel() for p in meta.parameters())
    assert meta_parameters(set_dotted(cfg, {"algo": "mgrl"}), obs_shape, 5) == 2
    assert meta_parameters(set_dotted(cfg, {"algo": "impala"}), obs_shape, 5) == 0


def test_an_absurd_width_is_counted_without_memory():
    agent = set_dotted(Config(), {"agent.hidden_sizes": [10**9, 10**9]}).agent
    assert agent_parameters((10, 5), 3, agent) == 50 * 10**9 + 10**18 + 4 * 10**9 + 2 * 10**9 + 4


def test_an_unroll_is_its_observations_and_four_arrays():
    # [T + 1, B] observations of 10 x 5 float32, and [T, B] int64 actions and 3 float32s.
    assert unroll_bytes(20, 32, (10, 5), 4) == 21 * 32 * 50 * 4 + 20 * 32 * (8 + 4 + 4 + 4)
    assert STEP_BYTES == 20
    assert unroll_bytes(20, 32, (84, 84, 4), 1) == 21 * 32 * 84 * 84 * 4 + 20 * 32 * 20  # uint8


def test_the_estimate_grows_with_each_size_it_counts():
    base = run_memory(Config(), CATCH.observation_shape, 4, 3)
    for key, value, part in [
        ("run.envs_per_actor", 64, "actor"),
        ("run.unroll_length", 40, "actor"),
        ("run.queue_size", 16, "queue"),
        ("run.batches_per_update", 2, "learner"),
        ("agent.hidden_sizes", [256, 256], "learner"),
        ("meta.num_inner_steps", 10, "learner"),
    ]:
        bigger = run_memory(set_dotted(Config(), {key: value}), CATCH.observation_shape, 4, 3)
        assert getattr(bigger, part) > getattr(base, part), key


def test_an_inline_meta_gradient_keeps_its_chain_and_the_async_meta_learner_holds_it():
    frodo, impala = Config(), set_dotted(Config(), {"algo": "impala"})
    asynchronous = set_dotted(Config(), {"meta.mode": "async"})
    assert chain_length(frodo) == frodo.meta.num_inner_steps + 1 and chain_length(impala) == 1
    assert chain_length(asynchronous) == 1
    assert chain_length(asynchronous, meta_learner=True) == frodo.meta.num_inner_steps + 1
    inline = run_memory(frodo, CATCH.observation_shape, 4, 3)
    split = run_memory(asynchronous, CATCH.observation_shape, 4, 3)
    assert split.meta_learner == inline.learner > split.learner and inline.meta_learner == 0


def test_several_learners_each_hold_a_share_and_the_driver_the_global_batch():
    one = run_memory(Config(), CATCH.observation_shape, 4, 3)
    two = run_memory(set_dotted(Config(), {"run.num_learners": 2}), CATCH.observation_shape, 4, 3)
    assert two.learner == one.learner and one.global_batch == 0 < two.global_batch
    assert two.on_one_machine(set_dotted(Config(), {"run.num_learners": 2})) > (
        one.on_one_machine(Config()) + one.learner
    )


# ------------------------------------------------------------------- against a machine
def test_this_machine_is_read_from_the_system():
    machine = this_machine()
    assert 0 < machine.available <= machine.total


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(7.28 * 1024**4) == "7.28 TiB"
    assert format_bytes(3 * 1024**7) == "3.07e+03 EiB"


MACHINE = Machine("this machine", 16 * GIB, 12 * GIB)


def test_a_size_that_cannot_fit_is_one_line_naming_what_to_lower():
    parts = [Part("2 actors of a lot", 20 * GIB, "--envs-per-actor"), Part("a learner", GIB, "x")]
    with pytest.raises(ConfigError) as raised:
        check_fits(parts, MACHINE)
    message = str(raised.value)
    assert "\n" not in message
    assert message == (
        "this run needs at least 21 GiB of memory (2 actors of a lot: 20 GiB), more than this "
        "machine holds (16 GiB): lower --envs-per-actor"
    )


@pytest.mark.parametrize(
    ("need", "warned"),
    [(GIB, False), (5 * GIB, True), (13 * GIB, True)],
    ids=["small", "over-a-quarter", "over-what-is-free"],
)
def test_a_large_size_that_fits_is_one_warning_line(caplog, need, warned):
    with caplog.at_level(logging.WARNING, logger="impala_frodo"):
        check_fits([Part("the learner", need, "x")], MACHINE)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == int(warned), lines
    if warned:
        assert "\n" not in lines[0] and lines[0].startswith(
            f"this run needs at least {format_bytes(need)} of memory (an estimate; the learner"
        )
        assert ("free now" in lines[0]) == (need > MACHINE.available)


def test_the_default_run_is_neither_refused_nor_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger="impala_frodo"):
        preflight.check_memory(Config(), CATCH, local=True)
    assert not caplog.records


def test_with_an_address_this_machine_holds_only_the_driver():
    cfg = set_dotted(Config(), {"run.num_actors": 1000, "run.num_learners": 2})
    memory = run_memory(cfg, CATCH.observation_shape, 4, 3)
    local = sum(p.bytes for p in preflight.parts(cfg, memory, local=True))
    joined = sum(p.bytes for p in preflight.parts(cfg, memory, local=False))
    assert local == memory.on_one_machine(cfg)
    assert joined == memory.global_batch  # the learners are ranks on the cluster's nodes


def test_a_process_larger_than_the_clusters_largest_node_is_refused(monkeypatch):
    node = Machine("the cluster's largest node", GIB, GIB)
    monkeypatch.setattr(preflight, "largest_node", lambda: node)
    cfg = set_dotted(Config(), {"meta.mode": "async", "meta.num_inner_steps": 200})
    big = set_dotted(cfg, {"run.envs_per_actor": 4096})
    preflight.check_cluster_memory(cfg, CATCH)  # ~50 MiB: fits
    refused = (
        r"^the async meta-learner needs at least .* more than the cluster's largest node "
        r"holds \(1 GiB\): lower meta.num_inner_steps"
    )
    with pytest.raises(ConfigError, match=refused):
        preflight.check_cluster_memory(big, CATCH)


def test_a_start_refused_after_its_run_dir_was_made_removes_it(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")
    (run_dir / "run.lock").write_text("")
    with pytest.raises(ConfigError), preflight.removed_if_refused(run_dir, made_here=True):
        raise ConfigError("no")
    assert not run_dir.exists()
    kept = tmp_path / "resumed"
    kept.mkdir()
    with pytest.raises(KeyboardInterrupt), preflight.removed_if_refused(kept, made_here=False):
        raise KeyboardInterrupt
    assert kept.exists()
    (kept / "metrics.jsonl").write_text("")  # something of a run: never removed
    assert not preflight.remove_unused_run_dir(kept) and kept.exists()


# ------------------------------------------------------------------- the command line
@pytest.mark.parametrize(
    "argv",
    [
        ["--envs-per-actor", "1000000000000"],
        ["--unroll-length", "100000000"],
        ["--set", "agent.hidden_sizes=[100000,100000]"],
    ],
    ids=["envs-per-actor", "unroll-length", "hidden-sizes"],
)
def test_sizes_that_cannot_fit_are_exit_2_in_one_line_with_nothing_written(tmp_path, argv):
    logdir = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "learner", "train", *argv, "--logdir", str(logdir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == ExitCode.USAGE, done.stderr
    assert len(lines) == 1 and lines[0].startswith("impala-frodo: error: this run needs"), lines
    assert "more than this machine holds" in lines[0]
    assert not logdir.exists(), "a refused run wrote files"
    assert time.monotonic() - start < 60  # no Ray start, no actor


@pytest.mark.ray
def test_a_refusal_after_joining_leaves_no_run_directory(ray_local, tmp_path, monkeypatch):
    """With Ray already up (as with --address), the nodes are checked once joined, and the
    run directory made just before is removed."""
    from learner.app.driver import TrainOptions, train

    monkeypatch.setattr(preflight, "largest_node", lambda: Machine("the node", GIB, GIB))
    over = {"meta.mode": "async", "meta.num_inner_steps": 200, "run.envs_per_actor": 4096}
    cfg = set_dotted(Config(), over | {"run.logdir": str(tmp_path / "runs")})
    with pytest.raises(ConfigError, match="the async meta-learner needs at least"):
        train(cfg, TrainOptions(progress=False, handle_signals=False))
    assert not any((tmp_path / "runs").iterdir())
