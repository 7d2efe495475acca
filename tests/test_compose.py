"""The Compose cluster, run for real: image built, head + 2 workers + TensorBoard up, jobs run.

What a user of ``docker-compose.yml`` does, end to end, against a real Docker engine:

1. Docker: a running engine is used as it is. Otherwise, as root, Docker is installed with
   apt when missing (``docker.io``, and ``docker-compose`` when no Compose is found), and
   ``dockerd`` is started in the background, and stopped again at the end.
2. The image (``deploy/Dockerfile``) is built by Compose on a local base image: Debian
   bookworm made with ``debootstrap`` and ``docker import`` (no image registry is needed),
   kept as ``impala-frodo-base:bookworm`` for later runs. torch is the host's CPU wheel
   when pip's find-links folders have one for the base's Python, served to the build over
   HTTP on the Docker bridge (``TORCH_INDEX_URL``); otherwise the Dockerfile's default index.
   The host's CA bundle is copied into ``deploy/certs/`` for the build (a TLS-intercepting
   proxy is trusted that way) and removed afterwards.
3. ``up`` with 2 workers: the head offers no CPUs and each worker one, so the rollout
   actors can only run on the workers.
4. A short ``catch-impala`` job through the Jobs API (``deploy/submit_job.sh``) with 4
   actors x 0.5 CPU: they must fill both workers. The run directory is read back from the
   ``runs`` volume (config.json, metrics.jsonl with the final return, a checkpoint that
   loads with ``weights_only=True``) and TensorBoard must list the run.
5. A worker container is killed (``docker kill``) in the middle of a second job: the job
   must finish its budget, its actors restarted on the surviving worker.
6. ``down -v``; the daemon is stopped if this test started it. Images are kept (a rerun
   reuses their layers).

Every wait has a deadline; on a failure the containers' logs are printed. The steps'
times are written to the terminal at the end.

Environment:
  IMPALA_FRODO_DOCKER       ``auto`` (default): skipped, with the reason, where Docker cannot
                            run (not root and no engine, no apt, dockerd will not start);
                            ``require``: those are failures too (a CI that must run it);
                            ``off``: always skipped. A failing apt install is a failure.
  IMPALA_FRODO_BASE_IMAGE   a base image to use instead of the debootstrap one.
  IMPALA_FRODO_CA_BUNDLE    CA bundle for the build (default /etc/ssl/certs/ca-certificates.crt;
                            ``none``: no extra certificates).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import ipaddress
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.test_deploy import _clean_env

pytestmark = pytest.mark.docker

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
SUBMIT_SCRIPT = REPO_ROOT / "deploy" / "submit_job.sh"
CERTS_DIR = REPO_ROOT / "deploy" / "certs"

MODE = os.environ.get("IMPALA_FRODO_DOCKER", "auto")
BASE_TAG = "impala-frodo-base:bookworm"
IMAGE_TAG = "impala-frodo:compose-test"
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
#: What the debootstrap base has besides Debian's minimal system (as python:3.11-slim has).
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
#: The head offers no CPUs, each worker 1: actors (0.5 CPU each) only fit on the workers.
HEAD_RESOURCES = '{"CPU": 0}'
WORKER_RESOURCES = '{"CPU": 1}'
WORKERS = 2
#: Preferred port of the served torch index (any free one when taken).
INDEX_PORT = 18265

# Deadlines (seconds). Generous for a loaded 2-core machine; each one ends in a clear failure.
APT_TIMEOUT_S = 600
DOCKERD_START_S = 60
DOCKERD_STOP_S = 60
DEBOOTSTRAP_TIMEOUT_S = 900
BUILD_TIMEOUT_S = 1800
UP_TIMEOUT_S = 300
NODES_TIMEOUT_S = 240
JOB_TIMEOUT_S = 420
DOWN_TIMEOUT_S = 180

# Jobs long enough on a quiet machine (catch-impala ran 18-32k env steps/s with 16 envs per
# actor there) for every actor to start, and for the kill job to outlast Ray's detection of
# the lost node (5 health checks x 3 s) and the restarts; loaded, they take a few times longer.
SPREAD_ACTORS = 4
SPREAD_ENVS_PER_ACTOR = 4
SPREAD_ENV_STEPS = 300_000
KILL_ACTORS = 2
KILL_ENVS_PER_ACTOR = 1
KILL_ENV_STEPS = 200_000


# --------------------------------------------------------------------------- helpers


def _unavailable(reason: str) -> None:
    """Docker cannot run here: skip with the reason, or fail where it is required (CI)."""
    message = f"Docker cannot run here: {reason}"
    print(message, file=sys.stderr)
    if MODE == "require":
        pytest.fail(f"{message} (IMPALA_FRODO_DOCKER=require)")
    pytest.skip(message)


def _run(
    argv: list[str],
    timeout: float,
    *,
    env: dict[str, str] | None = None,
    check: bool = True,
    input_bytes: bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion within ``timeout``; a failure names the command and output."""
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=input_bytes is None,
            env=env,
            timeout=timeout,
            input=input_bytes,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"`{' '.join(argv)}` did not finish within {timeout:g} s") from exc
    if check and proc.returncode != 0:
        raise AssertionError(
            f"`{' '.join(argv)}` exited {proc.returncode}:\n"
            f"{_tail(proc.stdout)}\n{_tail(proc.stderr)}"
        )
    return proc


def _tail(text: str | bytes | None, n: int = 4000) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return text[-n:]


def _wait_for(what: str, timeout: float, probe: Callable[[], Any], every: float = 1.0) -> Any:
    """Call ``probe`` until it returns something truthy; AssertionError after ``timeout``.

    Other exceptions count as "not yet"; an AssertionError from ``probe`` fails at once.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = probe()
            if result:
                return result
        except AssertionError:
            raise
        except Exception as exc:  # not ready yet
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s (last error: {last_error!r})")
        time.sleep(every)


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return _run(["docker", "info"], 30, check=False).returncode == 0
    except AssertionError:
        return False


def _apt_install(*packages: str) -> None:
    if shutil.which("apt-get") is None:
        _unavailable(f"{', '.join(packages)} not installed and no apt-get to install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    update = _run(["apt-get", "update"], APT_TIMEOUT_S, env=env, check=False)
    install = _run(
        ["apt-get", "install", "-y", "--no-install-recommends", *packages],
        APT_TIMEOUT_S,
        env=env,
        check=False,
    )
    if install.returncode != 0:  # a broken install, not a machine where Docker cannot run
        pytest.fail(
            f"`apt-get install {' '.join(packages)}` failed:\n"
            f"{_tail(update.stderr, 1000)}\n{_tail(install.stdout, 1500)}\n{_tail(install.stderr)}"
        )


def _free_port(preferred: int) -> int:
    """``preferred`` when nothing listens on it on loopback, else a free port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


# ------------------------------------------------------------------------ the engine


class DockerEngine:
    """A Docker engine to use: the running one, or one installed and started here."""

    def __init__(self, workdir: Path):
        self.log_path = workdir / "dockerd.log"
        self.proc: subprocess.Popen | None = None
        self.compose: list[str] = []
        self.compose_version = ""

    @property
    def started_here(self) -> bool:
        return self.proc is not None

    def start(self, timings: dict[str, float]) -> None:
        if MODE == "off":
            pytest.skip("IMPALA_FRODO_DOCKER=off")
        if not _docker_answers():
            if os.geteuid() != 0:
                _unavailable("no Docker engine answers and this user is not root")
            if shutil.which("dockerd") is None or shutil.which("docker") is None:
                started = time.monotonic()
                _apt_install("docker.io")
                timings["apt install docker.io"] = time.monotonic() - started
            started = time.monotonic()
            with self.log_path.open("wb") as log:
                self.proc = subprocess.Popen(
                    ["dockerd"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            deadline = time.monotonic() + DOCKERD_START_S
            while not _docker_answers():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    _unavailable(f"dockerd did not start:\n{_tail(self.log_path.read_bytes())}")
                time.sleep(0.5)
            timings["dockerd start"] = time.monotonic() - started
        self._find_compose(timings)

    def _find_compose(self, timings: dict[str, float]) -> None:
        """Compose v2 (``docker compose``) when there is one, else v1 (``docker-compose``)."""
        candidates = [["docker", "compose"], ["docker-compose"]]
        for argv in candidates:
            if shutil.which(argv[0]) and _run([*argv, "version"], 60, check=False).returncode == 0:
                break
        else:
            if os.geteuid() != 0:
                _unavailable("no Docker Compose (v1 or v2) and this user cannot install one")
            started = time.monotonic()
            _apt_install("docker-compose")  # Debian's package: Compose v1 (1.29)
            timings["apt install docker-compose"] = time.monotonic() - started
            argv = ["docker-compose"]
        self.compose = argv
        self.compose_version = _run([*argv, "version"], 60).stdout.strip().splitlines()[0]

    def stop(self) -> None:
        """Stop the daemon started here (SIGTERM, then SIGKILL to its process group)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(DOCKERD_STOP_S)
            except subprocess.TimeoutExpired:
                print("dockerd did not stop on SIGTERM: SIGKILL", file=sys.stderr)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # containerd and shims, if any are left
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


# ------------------------------------------------------------------ the image inputs


def _base_image(workdir: Path, timings: dict[str, float]) -> str:
    """The base image: given, already made, or made now with debootstrap + docker import."""
    given = os.environ.get("IMPALA_FRODO_BASE_IMAGE")
    if given:
        return given
    if _run(["docker", "image", "inspect", BASE_TAG], 60, check=False).returncode == 0:
        return BASE_TAG
    if os.geteuid() != 0:
        _unavailable(f"no {BASE_TAG} image, and debootstrap needs root")
    if shutil.which("debootstrap") is None:
        started = time.monotonic()
        _apt_install("debootstrap")
        timings["apt install debootstrap"] = time.monotonic() - started
    rootfs = workdir / "rootfs"
    started = time.monotonic()
    try:
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={BASE_PACKAGES}",
                "bookworm",
                str(rootfs),
            ],
            DEBOOTSTRAP_TIMEOUT_S,
        )
        # apt's downloaded packages and lists are not needed in the image.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        # An imported image has no environment: give it the usual PATH (the Dockerfile
        # extends ${PATH}) and a shell as its command.
        imported = subprocess.run(
            [
                "docker",
                "import",
                "--change",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--change",
                'CMD ["/bin/bash"]',
                "-",
                BASE_TAG,
            ],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert tar.stdout is not None
        tar.stdout.close()
        assert tar.wait(60) == 0, "tar of the debootstrap root failed"
        assert imported.returncode == 0, f"docker import failed: {imported.stderr}"
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    timings["base image (debootstrap + import)"] = time.monotonic() - started
    return BASE_TAG


def _python_tag(image: str) -> str:
    """``cpXY`` of the image's python3 (for the torch wheel's tag)."""
    code = "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')"
    out = _run(["docker", "run", "--rm", image, "python3", "-c", code], 120, check=False)
    return out.stdout.strip() if out.returncode == 0 else ""


def _pip_find_links_dirs() -> list[Path]:
    """Local folders in pip's ``find-links`` setting (pip config: files and environment)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    dirs: list[Path] = []
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        if not key.endswith(".find-links"):
            continue
        for entry in value.strip().strip("'\"").split():
            path = Path(entry.removeprefix("file://"))
            if path.is_dir() and path not in dirs:
                dirs.append(path)
    return dirs


def _host_cpu_torch_wheel(python_tag: str) -> Path | None:
    """The newest CPU torch wheel for ``python_tag`` and this machine in pip's find-links."""
    if not python_tag:
        return None
    pattern = f"torch-*+cpu-{python_tag}-{python_tag}-*linux*_{platform.machine()}.whl"
    wheels = [w for d in _pip_find_links_dirs() for w in d.glob(pattern)]

    def version(wheel: Path) -> tuple[int, ...]:
        text = wheel.name.split("-")[1].split("+")[0]
        return tuple(int(p) for p in re.findall(r"\d+", text))

    return max(wheels, key=version, default=None)


class WheelIndex:
    """A one-package simple index (``torch/``) served over HTTP on the Docker bridge."""

    def __init__(self, wheel: Path, root: Path, host: str):
        (root / "torch").mkdir(parents=True)
        (root / "torch" / wheel.name).symlink_to(wheel)

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

        handler = functools.partial(Quiet, directory=str(root))
        try:  # a fixed port keeps TORCH_INDEX_URL, and so the build's layer cache, stable
            self.server = http.server.ThreadingHTTPServer((host, INDEX_PORT), handler)
        except OSError:
            self.server = http.server.ThreadingHTTPServer((host, 0), handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def _bridge_gateway() -> str:
    """The host's address on Docker's default bridge (where builds' RUN steps are)."""
    fmt = "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}"
    subnet, *gateway = _run(
        ["docker", "network", "inspect", "bridge", "-f", fmt], 60
    ).stdout.split()
    if gateway:
        return gateway[0]
    # Docker leaves the default bridge's gateway unset in its IPAM config on some versions
    # (20.10 here); it is the subnet's first address.
    return str(ipaddress.ip_network(subnet).network_address + 1)


# ------------------------------------------------------------------------ the cluster


@dataclass
class Cluster:
    """A Compose project of this checkout, and what the tests need to talk to it."""

    engine: DockerEngine
    project: str
    env: dict[str, str]
    dashboard: str
    tensorboard: str
    timings: dict[str, float] = field(default_factory=dict)
    #: Figures that are not times (returns, env steps), reported with the times.
    notes: list[str] = field(default_factory=list)

    def compose(self, *args: str, timeout: float = 120, check: bool = True):
        argv = [*self.engine.compose, "-f", str(COMPOSE_FILE), "-p", self.project, *args]
        return _run(argv, timeout, env=self.env, check=check)

    def container_ids(self, service: str) -> list[str]:
        return self.compose("ps", "-q", service).stdout.split()

    def logs(self) -> str:
        try:
            out = self.compose("logs", "--no-color", "--tail=120", timeout=60, check=False)
            return out.stdout + out.stderr
        except AssertionError as exc:
            return f"(no logs: {exc})"

    @contextlib.contextmanager
    def logs_on_failure(self) -> Iterator[None]:
        """On any failure inside, print the containers' logs before it propagates."""
        try:
            yield
        except BaseException:
            print(f"---- container logs of {self.project} ----\n{self.logs()}", file=sys.stderr)
            raise

    def client(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.dashboard)

    def nodes(self) -> list[Any]:
        from ray.util.state import list_nodes

        return list_nodes(address=self.dashboard, detail=True, raise_on_missing_output=False)

    def job_actors(self, submission_id: str) -> list[Any]:
        """The job's rollout actors (Ray's state API: last known node, restarts)."""
        from ray.util.state import list_actors

        job_id = self.client().get_job_info(submission_id).job_id
        if not job_id:  # the driver has not started yet
            return []
        actors = list_actors(
            address=self.dashboard,
            filters=[("job_id", "=", job_id)],
            detail=True,
            raise_on_missing_output=False,
        )
        return [a for a in actors if a.class_name == "RolloutActor"]

    def container_ip(self, container: str) -> str:
        fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
        return _run(["docker", "inspect", "-f", fmt, container], 60).stdout.split()[0]

    def head_exec(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        (head,) = self.container_ids("ray-head")
        return _run(["docker", "exec", head, *command], timeout, check=False)


def _submit(cluster: Cluster, submission_id: str, learner_args: list[str]) -> None:
    """Submit a training run with deploy/submit_job.sh, the documented way, without waiting."""
    env = _clean_env(
        RAY_API_SERVER_ADDRESS=cluster.dashboard,
        SUBMISSION_ID=submission_id,
        NO_WAIT="1",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    )
    _run([str(SUBMIT_SCRIPT), *learner_args], 180, env=env)


def _wait_job(cluster: Cluster, submission_id: str, timeout: float) -> tuple[Any, str, float]:
    """Wait for the job to end; (status, logs, seconds waited). Stops it at the deadline."""
    client = cluster.client()
    started = time.monotonic()
    status = client.get_job_status(submission_id)
    while not status.is_terminal() and time.monotonic() - started < timeout:
        time.sleep(1)
        status = client.get_job_status(submission_id)
    logs = client.get_job_logs(submission_id)
    if not status.is_terminal():  # the deadline: stop it, report the status it had
        client.stop_job(submission_id)
    return status, logs, time.monotonic() - started


def _learner_args(submission_id: str, actors: int, envs: int, env_steps: int) -> list[str]:
    return [
        "--preset=catch-impala",
        f"--total-env-steps={env_steps}",
        f"--num-actors={actors}",
        "--actor-num-cpus=0.5",
        f"--envs-per-actor={envs}",
        "--seed=0",
        "--device=cpu",
        # A folder per job in the shared volume: its one run directory is this job's.
        f"--logdir=/runs/{submission_id}",
    ]


def _fetch_run(cluster: Cluster, submission_id: str, dest: Path) -> Path:
    """Copy the job's run directory out of the `runs` volume (as a user fetches a run)."""
    (head,) = cluster.container_ids("ray-head")
    _run(["docker", "cp", f"{head}:/runs/{submission_id}", str(dest)], 120)
    run_dirs = [p for p in (dest / submission_id).iterdir() if p.is_dir()]
    assert len(run_dirs) == 1, f"expected one run directory for {submission_id}: {run_dirs}"
    return run_dirs[0]


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _report(request: pytest.FixtureRequest, lines: list[str]) -> None:
    """Write to the terminal even while pytest captures output (CI logs keep the times).

    A fixture's teardown runs with output captured, and a passing test's captured output
    is dropped: capturing is suspended around the write.
    """
    plugins = request.config.pluginmanager
    reporter = plugins.getplugin("terminalreporter")
    capture = plugins.getplugin("capturemanager")
    suspended = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    with suspended:
        for line in lines:
            if reporter is not None:
                reporter.write_line(line)
            else:
                print(line, file=sys.stderr)


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """Docker, the image, and the Compose cluster (head, 2 workers, TensorBoard) for the module."""
    workdir = Path(tempfile.mkdtemp(prefix="impala-frodo-compose-"))
    timings: dict[str, float] = {}
    engine = DockerEngine(workdir)
    index: WheelIndex | None = None
    ca_copy = CERTS_DIR / "compose-test-host-ca.crt"
    cluster: Cluster | None = None
    notes: list[str] = []
    try:
        engine.start(timings)
        notes.append(f"compose: {' '.join(engine.compose)} ({engine.compose_version})")
        notes.append(f"dockerd: {'started by this test' if engine.started_here else 'running'}")
        base = _base_image(workdir, timings)
        python_tag = _python_tag(base)
        assert python_tag, f"the base image {base} has no working python3"
        env = _clean_env(
            BASE_IMAGE=base,
            IMPALA_FRODO_IMAGE=IMAGE_TAG,
            RAY_HEAD_RESOURCES=HEAD_RESOURCES,
            RAY_WORKER_RESOURCES=WORKER_RESOURCES,
            RAY_SHM_SIZE="512m",
            RAY_OBJECT_STORE_MEMORY=str(256 * 1024**2),
            RAY_DASHBOARD_PORT=str(_free_port(8265)),
            TENSORBOARD_PORT=str(_free_port(6006)),
        )
        wheel = _host_cpu_torch_wheel(python_tag)
        if wheel is not None:
            index = WheelIndex(wheel, workdir / "index", _bridge_gateway())
            env["TORCH_INDEX_URL"] = index.url
            notes.append(f"torch: {wheel.name} served at {index.url}")
        else:
            notes.append(
                f"torch: no CPU wheel for {python_tag} in pip's find-links folders; "
                "the Dockerfile's default index"
            )
        bundle = os.environ.get("IMPALA_FRODO_CA_BUNDLE", HOST_CA_BUNDLE)
        if bundle != "none" and Path(bundle).is_file():
            shutil.copyfile(bundle, ca_copy)
            notes.append(f"CA bundle for the build: {bundle}")
        notes.append(f"base image: {base} ({python_tag})")

        project = f"ifcompose{os.getpid()}"
        cluster = Cluster(
            engine=engine,
            project=project,
            env=env,
            dashboard=f"http://127.0.0.1:{env['RAY_DASHBOARD_PORT']}",
            tensorboard=f"http://127.0.0.1:{env['TENSORBOARD_PORT']}",
            timings=timings,
        )
        with cluster.logs_on_failure():
            started = time.monotonic()
            # v1 builds with the classic builder, which keeps a failed step's container
            # unless told otherwise.
            v1 = engine.compose == ["docker-compose"]
            cluster.compose("build", *(["--force-rm"] if v1 else []), timeout=BUILD_TIMEOUT_S)
            timings["image build (compose build)"] = time.monotonic() - started
            ca_copy.unlink(missing_ok=True)

            started = time.monotonic()
            cluster.compose(
                "up", "-d", "--no-build", "--scale", f"ray-worker={WORKERS}", timeout=UP_TIMEOUT_S
            )
            timings["compose up (head healthy, workers started)"] = time.monotonic() - started

            def all_nodes_alive() -> bool:
                alive = [n for n in cluster.nodes() if n.state == "ALIVE"]
                return len(alive) == 1 + WORKERS

            _wait_for(
                "head and 2 workers ALIVE in Ray's node list", NODES_TIMEOUT_S, all_nodes_alive
            )
            _wait_for("TensorBoard's page", NODES_TIMEOUT_S, lambda: _http_get(cluster.tensorboard))
            timings["cluster up (to 3 nodes and TensorBoard)"] = time.monotonic() - started
        yield cluster
    finally:
        # Each step runs even if one before it fails; the first problem is raised at the end.
        problems: list[str] = []
        ca_copy.unlink(missing_ok=True)
        if cluster is not None:
            started = time.monotonic()
            try:
                cluster.compose(
                    "down", "-v", "--remove-orphans", "-t", "10", timeout=DOWN_TIMEOUT_S
                )
                left = _run(
                    [
                        "docker",
                        "ps",
                        "-aq",
                        "--filter",
                        f"label=com.docker.compose.project={cluster.project}",
                    ],
                    60,
                ).stdout.split()
                if left:
                    problems.append(f"containers of {cluster.project} left after down: {left}")
            except AssertionError as exc:
                problems.append(f"compose down: {exc}")
            timings["compose down -v"] = time.monotonic() - started
        if index is not None:
            index.close()
        started = time.monotonic()
        engine.stop()
        if engine.started_here:
            timings["dockerd stop"] = time.monotonic() - started
        shutil.rmtree(workdir, ignore_errors=True)
        _report(
            request,
            ["", "---- test_compose ----", *notes]
            + [f"{name}: {seconds:.1f} s" for name, seconds in timings.items()]
            + (cluster.notes if cluster is not None else []),
        )
        if problems and sys.exc_info()[0] is None:  # never mask an earlier failure
            raise AssertionError("; ".join(problems))


# -------------------------------------------------------------------------- the tests


def _wait_training(
    cluster: Cluster, submission_id: str, actors: int, record: bool = False
) -> tuple[list[Any], int]:
    """(the job's actors, env steps so far) once every actor is ALIVE on a node (and, with
    ``record``, the run has written a metrics record); fails at once if the job ends first."""

    def probe() -> tuple[list[Any], int] | None:
        status = cluster.client().get_job_status(submission_id)
        if status.is_terminal():
            logs = _tail(cluster.client().get_job_logs(submission_id))
            raise AssertionError(
                f"job {submission_id} ended ({status}) before all its actors were up: "
                f"{cluster.job_actors(submission_id)}\n{logs}"
            )
        found = cluster.job_actors(submission_id)
        if len(found) < actors or not all(a.state == "ALIVE" and a.node_id for a in found):
            return None
        if not record:
            return found, 0
        records = cluster.head_exec(
            "sh", "-c", f"cat /runs/{submission_id}/*/metrics.jsonl 2>/dev/null"
        ).stdout.splitlines()
        return (found, json.loads(records[-1])["env_steps"]) if records else None

    return _wait_for(f"job {submission_id} training on all its actors", JOB_TIMEOUT_S, probe, 0.5)


def test_job_runs_on_the_workers_and_writes_its_run(cluster: Cluster, tmp_path: Path):
    from ray.job_submission import JobStatus

    submission_id = f"spread-{os.getpid()}"
    with cluster.logs_on_failure():
        nodes = cluster.nodes()
        heads = [n.node_id for n in nodes if n.is_head_node]
        workers = {n.node_id for n in nodes if not n.is_head_node and n.state == "ALIVE"}
        assert len(heads) == 1 and len(workers) == WORKERS, nodes
        # The resources the test gave each node: actors cannot run on the head.
        for node in nodes:
            assert node.resources_total.get("CPU", 0.0) == (0.0 if node.is_head_node else 1.0)

        started = time.monotonic()
        _submit(
            cluster,
            submission_id,
            _learner_args(submission_id, SPREAD_ACTORS, SPREAD_ENVS_PER_ACTOR, SPREAD_ENV_STEPS),
        )
        # 4 actors x 0.5 CPU on two 1-CPU workers: all placed, on both workers.
        actors, _ = _wait_training(cluster, submission_id, SPREAD_ACTORS)
        placed = [a.node_id for a in actors]
        assert set(placed) == workers, f"actors on {placed}, workers are {workers}"

        status, logs, _ = _wait_job(cluster, submission_id, JOB_TIMEOUT_S)
        cluster.timings[
            f"job: {SPREAD_ACTORS} actors, {SPREAD_ENV_STEPS} env steps (submit to SUCCEEDED)"
        ] = time.monotonic() - started
        assert status == JobStatus.SUCCEEDED, f"job ended {status}:\n{_tail(logs)}"
        after = cluster.job_actors(submission_id)
        assert sorted(a.node_id for a in after) == sorted(placed), "actors moved or were added"

        run_dir = _fetch_run(cluster, submission_id, tmp_path)
        config = json.loads((run_dir / "config.json").read_text())
        assert config["run"]["num_actors"] == SPREAD_ACTORS
        assert config["run"]["total_env_steps"] == SPREAD_ENV_STEPS
        final = _metrics(run_dir)[-1]
        assert final["env_steps"] >= SPREAD_ENV_STEPS, final
        final_return = final["episode/return_window"]
        assert math.isfinite(final_return) and -1.0 <= final_return <= 1.0, final

        import torch

        checkpoint = run_dir / "checkpoints" / "latest.pt"
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        assert state["counters"]["env_steps"] >= SPREAD_ENV_STEPS

        # TensorBoard, serving the same volume, lists the run.
        tb_run = f"{submission_id}/{run_dir.name}"
        page = _http_get(cluster.tensorboard)
        assert b"tb-relative-root" in page, page[:200]
        _wait_for(
            f"TensorBoard listing {tb_run}",
            60,
            lambda: tb_run in json.loads(_http_get(f"{cluster.tensorboard}/data/runs")),
        )
        cluster.notes.append(f"spread job: final return (last 500 episodes) {final_return:.3f}")


def test_worker_killed_mid_job_the_job_finishes_on_the_other(cluster: Cluster, tmp_path: Path):
    from ray.job_submission import JobStatus

    submission_id = f"kill-{os.getpid()}"
    with cluster.logs_on_failure():
        workers = {n.node_id: n.node_ip for n in cluster.nodes() if not n.is_head_node}
        alive = {n.node_id for n in cluster.nodes() if n.state == "ALIVE"}
        assert set(workers) <= alive, "a worker is down before the job"
        _submit(
            cluster,
            submission_id,
            _learner_args(submission_id, KILL_ACTORS, KILL_ENVS_PER_ACTOR, KILL_ENV_STEPS),
        )

        actors, steps_at_kill = _wait_training(cluster, submission_id, KILL_ACTORS, record=True)
        assert steps_at_kill < KILL_ENV_STEPS // 2, f"too late to kill: {steps_at_kill} env steps"
        on_node: dict[str, int] = {}
        for actor in actors:
            assert actor.node_id in workers, f"actor on a non-worker node: {actor}"
            on_node[actor.node_id] = on_node.get(actor.node_id, 0) + 1
        victim = max(on_node, key=on_node.__getitem__)
        (survivor,) = set(workers) - {victim}
        containers = {cluster.container_ip(c): c for c in cluster.container_ids("ray-worker")}
        victim_container = containers[workers[victim]]

        _run(["docker", "kill", victim_container], 60)
        killed_at = time.monotonic()
        status_after_kill = cluster.client().get_job_status(submission_id)
        assert not status_after_kill.is_terminal(), "the job ended before the kill took effect"

        # Until the job ends: when Ray declares the node dead, when the actors are back.
        node_dead_s = actors_back_s = None
        client = cluster.client()
        while not client.get_job_status(submission_id).is_terminal():
            elapsed = time.monotonic() - killed_at
            assert elapsed < JOB_TIMEOUT_S, f"job {submission_id} still running after the kill"
            with contextlib.suppress(Exception):  # the state API may time out under load
                if node_dead_s is None:
                    states = {n.node_id: n.state for n in cluster.nodes()}
                    node_dead_s = elapsed if states.get(victim) == "DEAD" else None
                elif actors_back_s is None:
                    found = cluster.job_actors(submission_id)
                    back = all(a.state == "ALIVE" and a.node_id == survivor for a in found)
                    actors_back_s = elapsed if back and len(found) == KILL_ACTORS else None
            time.sleep(0.5)
        status, logs, _ = _wait_job(cluster, submission_id, 60)
        prefix = f"worker kill ({on_node[victim]} of {KILL_ACTORS} actors on it)"
        for what, seconds in (
            ("node DEAD in Ray's node list", node_dead_s),
            ("its actors ALIVE on the other worker", actors_back_s),
            ("job SUCCEEDED", time.monotonic() - killed_at),
        ):
            if seconds is not None:
                cluster.timings[f"{prefix}: kill to {what}"] = seconds
        assert status == JobStatus.SUCCEEDED, f"job ended {status}:\n{_tail(logs)}"

        states = {n.node_id: n.state for n in cluster.nodes()}
        assert states[victim] == "DEAD", states
        after = cluster.job_actors(submission_id)
        assert len(after) == KILL_ACTORS, after
        for actor in after:
            assert actor.node_id == survivor, f"actor not on the surviving worker: {actor}"
        restarted = [a for a in after if (a.num_restarts or 0) >= 1]
        assert len(restarted) == on_node[victim], f"restarts: {after}"

        run_dir = _fetch_run(cluster, submission_id, tmp_path)
        final = _metrics(run_dir)[-1]
        assert final["env_steps"] >= KILL_ENV_STEPS, final
        lost = final.get("perf/lost_unrolls", 0.0)
        cluster.notes.append(
            f"kill job: killed at {steps_at_kill} env steps, {final['env_steps']} in all, "
            f"{lost:g} unrolls lost"
        )
        print(_tail(logs, 3000))
