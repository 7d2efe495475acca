"""A real two-node Ray cluster on loopback: the worker node is lost mid-run.

``ray start --head`` and ``ray start --address=...`` run as separate process groups,
each with its own temp dir and a custom resource (``head``, ``worker``). A ballast
actor holds the head's CPUs at first, so the run's rollout actors are placed on the
worker node. Mid-run every process of the worker node gets SIGKILL (a machine lost,
as cluster users meet it) and the ballast goes: the actors must come back on the
surviving head node, and the run must finish its budget with every unroll counted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from impala_frodo.config import Config, set_dotted
from learner.driver import EXIT_OK, TrainOptions, train
from tests.test_deploy import _clean_env, _free_ports, _our_processes

pytestmark = pytest.mark.ray

RAY = str(Path(sys.executable).with_name("ray"))
#: The head declares a node dead after this many missed 0.5 s health checks.
SYSTEM_CONFIG = {"health_check_period_ms": 500, "health_check_failure_threshold": 4}


class RayNode:
    """One ``ray start --block`` on loopback with a private temp dir, in its own session."""

    def __init__(self, temp_dir: Path, auth: dict[str, str], head_address: str | None = None):
        self.temp_dir = temp_dir
        self.auth = auth
        gcs, *ports = _free_ports(8)
        self.address = head_address or f"127.0.0.1:{gcs}"
        self.argv = [
            RAY, "start", "--block", f"--temp-dir={temp_dir}", "--node-ip-address=127.0.0.1",
            "--num-cpus=2", "--num-gpus=0", f"--object-store-memory={128 * 1024**2}",
            "--disable-usage-stats", f"--dashboard-agent-listen-port={ports[0]}",
            f"--dashboard-agent-grpc-port={ports[1]}", f"--runtime-env-agent-port={ports[2]}",
            f"--metrics-export-port={ports[3]}", f"--node-manager-port={ports[4]}",
            f"--object-manager-port={ports[5]}",
        ]  # fmt: skip
        if head_address is None:
            self.argv += [
                "--head", f"--port={gcs}", "--include-dashboard=false",
                f"--ray-client-server-port={ports[6]}", '--resources={"head": 1}',
                f"--system-config={json.dumps(SYSTEM_CONFIG)}",
            ]  # fmt: skip
        else:
            self.argv += [f"--address={head_address}", '--resources={"worker": 1}']
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        env = _clean_env(RAY_USAGE_STATS_ENABLED="0", **self.auth)
        with open(self.temp_dir / "ray-start.log", "wb") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def kill(self) -> list[int]:
        """SIGKILL every process of this node (no clean-up code runs); returns survivors."""
        if self.proc is None:
            return []
        for _ in range(3):  # a process may start another while we kill
            for pid in _our_processes(self.proc.pid, [str(self.temp_dir)]):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        deadline = time.monotonic() + 10
        while (left := _our_processes(self.proc.pid, [str(self.temp_dir)])) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.2)
        return left

    def stop(self) -> list[int]:
        """SIGINT first (``ray start`` stops what it started), then :meth:`kill`."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        return self.kill()


@pytest.fixture
def two_nodes(tmp_path_factory, monkeypatch):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    base = tmp_path_factory.mktemp("nodes")
    # Token auth pinned off: this process's Ray read its auth mode at import (off in tests),
    # and `ray start` would turn it on by itself where ~/.ray/auth_token exists.
    auth = {"RAY_AUTH_MODE": "disabled"}
    head = RayNode(base / "head", auth)
    worker = RayNode(base / "worker", auth, head_address=head.address)
    try:
        head.start()
        for name, value in auth.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        deadline = time.monotonic() + 120
        while True:  # the head's GCS takes a few seconds to listen
            try:
                ray.init(address=head.address, logging_level="WARNING")
                break
            except Exception:
                if time.monotonic() > deadline or head.proc.poll() is not None:
                    raise
                time.sleep(1.0)
        worker.start()
        while sum(n["Alive"] for n in ray.nodes()) < 2:
            assert time.monotonic() < deadline, "the worker node never joined"
            time.sleep(0.5)
        yield head, worker
    finally:
        ray.shutdown()
        left = worker.stop() + head.stop()
        assert not left, f"processes left behind: {left}"


def _node_of(handle) -> str:
    from ray._private.state import state

    return state.actor_table(handle._actor_id.hex())["Address"]["NodeID"]


def test_losing_the_worker_node_mid_run_loses_no_unroll_and_the_run_finishes(two_nodes, tmp_path):
    import ray

    _, worker = two_nodes
    nodes = {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}
    (head_id,) = [i for i, n in nodes.items() if "head" in n["Resources"]]
    (worker_id,) = [i for i, n in nodes.items() if "worker" in n["Resources"]]
    # The head's CPUs are taken, so the rollout actors are placed on the worker node.
    ballast = ray.remote(num_cpus=2, resources={"head": 1})(_Ballast).remote()
    ray.get(ballast.ready.remote(), timeout=120)

    placed: dict[str, list[str]] = {}

    def callback(ctx) -> None:
        updates = ctx.learner.counters.updates
        if updates == 10:
            placed["before"] = [_node_of(slot.handle) for slot in ctx.pool.slots]
            assert not worker.kill(), "the worker node's processes survived SIGKILL"
            ray.kill(ballast)  # room on the surviving node
            placed["killed_at_steps"] = [ctx.learner.counters.env_steps]
        elif updates > 10 and ctx.learner.done:  # the last update
            placed["after"] = [_node_of(slot.handle) for slot in ctx.pool.slots]

    cfg = set_dotted(
        Config(),
        {
            "algo": "impala",
            "run.num_actors": 2,
            "run.envs_per_actor": 8,
            "run.unroll_length": 10,
            "run.total_env_steps": 12_000,
            "run.queue_size": 4,
            "run.actor_num_cpus": 0.5,
            "run.progress_timeout_s": 120.0,
            "run.logdir": str(tmp_path / "runs"),
        },
    )
    options = TrainOptions(progress=False, handle_signals=False, callback=callback)
    result = train(cfg, options)

    assert placed["before"] == [worker_id, worker_id], "the actors were not on the worker"
    assert result.exit_code == EXIT_OK, result.message
    assert result.env_steps >= 12_000 > placed["killed_at_steps"][0]
    assert placed["after"] == [head_id, head_id], "the actors did not come back on the head"
    assert result.actor_failures >= 2  # both actors were lost with the node
    u = result.unrolls
    assert u["lost"] >= 2 and u["submitted"] == u["collected"] + u["lost"] + u["abandoned"], u
    assert u["collected"] == result.updates  # one unroll per update: every one was trained on


class _Ballast:
    def ready(self) -> bool:
        return True
