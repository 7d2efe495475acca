"""Deployment files (docker-compose.yml, deploy/) and a real Ray Jobs submission.

The image is built and the Compose cluster run for real in tests/test_compose.py (where
Docker can run). These tests need no Docker:
- check docker-compose.yml, deploy/cluster.yaml and deploy/Dockerfile statically: every
  module, command and CLI flag they name exists (flags parsed by Ray's and TensorBoard's
  own parsers), ports are published on loopback only, the worker service can be scaled,
  build args are declared, and `ray up` accepts the cluster config;
- start a real Ray head on this machine and submit a short training run to it through
  the Jobs API with deploy/submit_job.sh (what a cluster user runs), then check the run
  directory it wrote.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DEPLOY = REPO_ROOT / "deploy"
CLUSTER_FILE = DEPLOY / "cluster.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
SUBMIT_SCRIPT = DEPLOY / "submit_job.sh"
README = DEPLOY / "README.md"
CI_DOC = REPO_ROOT / "docs" / "ci.md"
PRESETS = REPO_ROOT / "impala_frodo" / "config" / "presets"

RAY_SERVICES = ("ray-head", "ray-worker")
RUNS_MOUNT = "/runs"


# --------------------------------------------------------------------------- helpers


def _interpolate(text: str) -> str:
    """Compose's variable interpolation with nothing set: ``${VAR:-default}`` becomes the
    default, ``${VAR}`` empty (what `docker compose config` shows with a clean environment)."""
    return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", text)


def _compose() -> dict:
    return yaml.safe_load(_interpolate(COMPOSE_FILE.read_text()))


def _cluster() -> dict:
    return yaml.safe_load(CLUSTER_FILE.read_text())


def _services() -> dict:
    return _compose()["services"]


def _command(service: dict) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def _parse_ray_start(args: list[str]):
    """Parse `ray start` options with Ray's own click command: unknown flags raise."""
    from ray.scripts.scripts import start

    return start.make_context("start", list(args)).params


def _ray_start_args(shell_command: str) -> list[str]:
    """The arguments of the `ray start` inside a shell command line (`a && ray start ...; b`)."""
    lexer = shlex.shlex(shell_command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    for i in range(len(tokens) - 1):
        if tokens[i] == "ray" and tokens[i + 1] == "start":
            args = []
            for token in tokens[i + 2 :]:
                if token in {";", "&&", "||", "|", "&"}:
                    break
                args.append(token)
            return args
    raise AssertionError(f"no `ray start` in {shell_command!r}")


def _published_ports(service: dict) -> list[tuple[str | None, str]]:
    """(host_ip, host_port) for each published port, short or long syntax."""
    published = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            published.append((entry.get("host_ip"), str(entry.get("published", ""))))
            continue
        parts = str(entry).split(":")
        if len(parts) == 3:
            published.append((parts[0], parts[1]))
        elif len(parts) == 2:
            published.append((None, parts[0]))
        else:  # "8265": a random host port on every interface
            published.append((None, ""))
    return published


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a line continuation"
    return instructions


def _dockerfile_args() -> dict[str, str | None]:
    args: dict[str, str | None] = {}
    for keyword, rest in _dockerfile_instructions():
        if keyword == "ARG":
            name, eq, default = rest.partition("=")
            args[name.strip()] = default.strip() if eq else None
    return args


def _project_packages() -> list[str]:
    """Top-level package directories that pyproject.toml's package discovery includes."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    names = sorted({p.rstrip("*").rstrip(".") for p in patterns})
    assert names, "pyproject.toml includes no packages"
    return names


# ------------------------------------------------------------------ docker-compose.yml


def test_compose_has_head_worker_and_tensorboard():
    services = _services()
    for name in (*RAY_SERVICES, "tensorboard"):
        assert name in services, f"docker-compose.yml has no `{name}` service"


def test_compose_builds_from_deploy_dockerfile():
    for name, service in _services().items():
        build = service.get("build")
        assert build is not None, f"service {name} does not build the project image"
        context = (COMPOSE_FILE.parent / build["context"]).resolve()
        assert context == REPO_ROOT, f"service {name}: the build context must be the repo root"
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile == DOCKERFILE, (
            f"service {name} builds {dockerfile}, not deploy/Dockerfile"
        )
        assert dockerfile.is_file()
        declared = _dockerfile_args()
        for arg in build.get("args", {}):
            assert arg in declared, f"build arg {arg} is not an ARG of deploy/Dockerfile"


def test_compose_ports_are_published_on_loopback_only():
    any_published = False
    for name, service in _services().items():
        for host_ip, host_port in _published_ports(service):
            any_published = True
            assert host_ip == "127.0.0.1", (
                f"service {name} publishes port {host_port or '?'} on every host interface; "
                "bind it to 127.0.0.1 (the Ray Jobs API runs any code it is sent)"
            )
    assert any_published


def test_compose_head_serves_dashboard_and_gcs():
    head = _services()["ray-head"]
    command = _command(head)
    assert command[:2] == ["ray", "start"], command
    params = _parse_ray_start(command[2:])
    assert params["head"] and params["block"]
    # Reachable through the published port, which is bound to loopback on the host.
    assert params["dashboard_host"] == "0.0.0.0"
    dashboard_port = params["dashboard_port"] or 8265
    assert ("127.0.0.1", str(dashboard_port)) in _published_ports(head)
    healthcheck = " ".join(head["healthcheck"]["test"])
    assert f"127.0.0.1:{dashboard_port}/" in healthcheck


def test_compose_worker_joins_head_and_scales():
    services = _services()
    head_params = _parse_ray_start(_command(services["ray-head"])[2:])
    worker = services["ray-worker"]
    command = _command(worker)
    assert command[:2] == ["ray", "start"], command
    params = _parse_ray_start(command[2:])
    assert not params["head"] and params["block"]
    head_gcs = f"ray-head:{head_params['port'] or 6379}"
    assert params["address"] == head_gcs, f"ray-worker joins {params['address']}, not {head_gcs}"
    # `docker compose up --scale ray-worker=N` needs these left out.
    for key in ("container_name", "hostname", "ports"):
        assert key not in worker, f"ray-worker sets {key}, so it cannot be scaled"
    assert "ray-head" in worker.get("depends_on", {})


def test_compose_ray_services_set_shm_size():
    for name in RAY_SERVICES:
        shm = _services()[name].get("shm_size")
        assert shm, f"{name} needs shm_size: Ray's object store lives in /dev/shm"


def test_compose_commands_exist_and_their_flags_parse():
    for name, service in _services().items():
        command = _command(service)
        assert shutil.which(command[0]), f"service {name}: `{command[0]}` is not installed"
        if command[:2] == ["ray", "start"]:
            _parse_ray_start(command[2:])
        elif command[0] == "tensorboard":
            from tensorboard import program

            try:
                program.TensorBoard().configure(argv=[None, *command[1:]])
            except SystemExit as exc:  # argparse's way of rejecting a flag
                raise AssertionError(f"service {name}: tensorboard rejects {command}") from exc
        else:
            raise AssertionError(f"service {name}: no check for command {command}")


def test_compose_shares_one_runs_volume_with_tensorboard():
    compose = _compose()
    volume_names = set(compose.get("volumes", {}))
    for name in (*RAY_SERVICES, "tensorboard"):
        mounts = [str(v) for v in compose["services"][name].get("volumes", [])]
        runs = [m for m in mounts if m.split(":")[1:2] == [RUNS_MOUNT]]
        assert runs, f"service {name} does not mount the runs volume at {RUNS_MOUNT}"
        source = runs[0].split(":")[0]
        assert source in volume_names or (REPO_ROOT / source).exists(), source
    tb_command = _command(compose["services"]["tensorboard"])
    assert f"--logdir={RUNS_MOUNT}" in tb_command or RUNS_MOUNT in tb_command


# ------------------------------------------------------------------------- Dockerfile


def test_dockerfile_copies_every_project_package():
    # The build (tests/test_compose.py) fails on a missing COPY source, but not on a new
    # package left out: `pip install -e .` would install without it.
    copied = {
        Path(p).parts[0]
        for keyword, rest in _dockerfile_instructions()
        if keyword == "COPY"
        for p in shlex.split(rest)[:-1]
        if not p.startswith("--")
    }
    assert "pyproject.toml" in copied
    for package in _project_packages():
        assert (REPO_ROOT / package).is_dir(), package
        assert package in copied, f"deploy/Dockerfile does not COPY the {package} package"


# ----------------------------------------------------------------- deploy/cluster.yaml


def test_cluster_yaml_is_accepted_by_ray_up():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _cluster()
    assert config["provider"]["type"] == "local"
    assert config["provider"]["head_ip"]
    assert config["provider"]["worker_ips"]
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)


def test_cluster_yaml_mounts_this_checkout_and_installs_it():
    config = _cluster()
    mounts = config["file_mounts"]
    assert mounts
    for remote, local in mounts.items():
        # `ray up` resolves local paths against the current directory: the repo root.
        local_path = (REPO_ROOT / os.path.expanduser(local)).resolve()
        assert local_path.exists(), f"file_mounts source {local} (for {remote}) does not exist"
    project_mounts = [r for r, loc in mounts.items() if (REPO_ROOT / loc).resolve() == REPO_ROOT]
    assert project_mounts, "the checkout itself is not in file_mounts"
    setup = config["setup_commands"]
    installs = [c for c in setup if re.search(r"pip install (--no-deps )?-e \.", c)]
    assert installs, "no `pip install -e .` in setup_commands"
    assert any(f"cd {remote}" in c for c in installs for remote in project_mounts)


def test_cluster_yaml_start_commands_parse():
    config = _cluster()
    head = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    workers = [c for c in config["worker_start_ray_commands"] if "ray start" in c]
    assert len(head) == 1 and len(workers) == 1
    head_params = _parse_ray_start(_ray_start_args(head[0]))
    worker_params = _parse_ray_start(_ray_start_args(workers[0]))
    assert head_params["head"]
    # The dashboard stays on the head's loopback; users reach it with `ray dashboard`.
    assert head_params["dashboard_host"] in (None, "localhost", "127.0.0.1")
    assert worker_params["address"] == f"$RAY_HEAD_IP:{head_params['port']}"


# ------------------------------------------------------------ commands the docs name


def test_python_m_learner_resolves():
    spec = importlib.util.find_spec("learner.__main__")
    assert spec is not None and spec.origin, "`python -m learner` has no learner/__main__.py"
    assert Path(spec.origin).resolve().parent == REPO_ROOT / "learner"


def test_documented_presets_exist():
    texts = [README, CI_DOC, COMPOSE_FILE, CLUSTER_FILE, SUBMIT_SCRIPT]
    presets = set()
    for path in texts:
        presets.update(re.findall(r"--preset[ =]([\w.-]+)", path.read_text()))
    assert presets
    for name in presets:
        assert (PRESETS / f"{name}.toml").is_file(), f"preset {name} named in the docs is missing"


def _documented_learner_commands() -> list[list[str]]:
    """The learner arguments of every ``deploy/submit_job.sh`` and ``python -m learner``
    command in deploy/README.md: in bash blocks and in inline code, continuations joined."""
    text = README.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [ln for block in blocks for ln in block.replace("\\\n", " ").splitlines()]
    lines += re.findall(r"`([^`\n]*(?:submit_job\.sh|python -m learner)[^`\n]*)`", text)
    commands = []
    for line in lines:
        tokens = shlex.split(line, comments=True)
        for marker in (["deploy/submit_job.sh"], ["python", "-m", "learner"]):
            n = len(marker)
            starts = [i for i in range(len(tokens)) if tokens[i : i + n] == marker]
            if starts:
                argv = tokens[starts[0] + n :]
                if any(a.startswith("--") for a in argv):  # not the bare name in prose
                    commands.append(argv)
                break
    return commands


def test_documented_learner_commands_parse(monkeypatch):
    """Every learner command the cluster guide shows parses with the learner's own parser
    (flags, --set keys) and, unless it resumes a run, gives a valid config (presets exist,
    learners <= actors, ...). Envs are not built: MinAtar and Atari need their extras."""
    from learner.app import args as learner_args

    monkeypatch.setattr(learner_args, "check_env", lambda cfg: None)
    commands = _documented_learner_commands()
    assert len(commands) >= 5, commands
    parser = learner_args.build_parser()
    for argv in commands:
        parsed = parser.parse_args(learner_args.normalise_argv(argv))
        assert parsed.command == "train", argv
        if parsed.resume is None:
            learner_args.config_from_args(parsed)
        # A job runs in a temporary copy of the working directory: a given logdir is absolute.
        logdir = getattr(parsed, "run.logdir", None)
        assert logdir is None or Path(logdir).is_absolute(), argv


def test_submit_script_builds_the_documented_command():
    assert os.access(SUBMIT_SCRIPT, os.X_OK), "deploy/submit_job.sh is not executable"
    subprocess.run(["bash", "-n", str(SUBMIT_SCRIPT)], check=True)
    env = {**os.environ, "DRY_RUN": "1", "RAY_API_SERVER_ADDRESS": "http://127.0.0.1:1"}
    env.pop("IMPALA_FRODO_LOGDIR", None)
    out = subprocess.run(
        [str(SUBMIT_SCRIPT), "--preset", "catch-frodo", "--num-actors", "4"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
    ).stdout
    argv = shlex.split(out)
    assert argv[:3] == ["ray", "job", "submit"]
    assert argv[argv.index("--address") + 1] == "http://127.0.0.1:1"
    assert Path(argv[argv.index("--working-dir") + 1]) == REPO_ROOT
    runtime_env = json.loads(argv[argv.index("--runtime-env-json") + 1])
    # The project venv (gigabytes) and .git never go up with the code.
    assert {".venv/", ".git/"} <= set(runtime_env["excludes"])
    # Time for the learner's final checkpoint after `ray job stop`'s SIGTERM.
    assert int(runtime_env["env_vars"]["RAY_JOB_STOP_WAIT_TIME_S"]) >= 30
    entrypoint = argv[argv.index("--") + 1 :]
    assert entrypoint == [
        "python",
        "-m",
        "learner",
        "--preset",
        "catch-frodo",
        "--num-actors",
        "4",
        "--logdir",
        "/runs",
    ]


# ---------------------------------------------------------- a real Ray head and a job


def _free_ports(n: int) -> list[int]:
    sockets, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def _proc_session_and_state(pid: int) -> tuple[int, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[3]), fields[0]  # session id (field 6), state (field 3)


def _proc_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _our_processes(session_id: int, markers: list[str]) -> list[int]:
    """Live processes of this head only: in the session of its `ray start` or naming one of
    its private paths (the job driver, which Ray starts in a session of its own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        info = _proc_session_and_state(pid)
        if info is None or info[1] == "Z":  # gone, or a zombie: nothing left to kill
            continue
        if info[0] == session_id or any(m in _proc_cmdline(pid) for m in markers):
            found.append(pid)
    return found


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without Ray settings that would point elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.pop("IMPALA_FRODO_LOGDIR", None)
    return {**env, **extra}


class RayHead:
    """`ray start --head --block` on loopback ports with a private --temp-dir and token.

    Stopping it never touches other Ray instances on the machine (plain `ray stop` would
    kill every Ray process of every user and test). `ray start` runs in a new session:
    SIGINT makes it shut down the processes it started (its atexit handler), then anything
    left in that session, or naming its temp dir or the job's logdir, gets SIGKILL.

    Token authentication is on, with a token of its own: Ray 2.60 turns it on for `ray start`
    anyway when ~/.ray/auth_token exists (any local `ray.init()` writes one), so pinning
    the mode keeps the test independent of what else ran here, and covers the secure setup.
    """

    def __init__(self, temp_dir: str, markers: list[str]):
        self.temp_dir = temp_dir
        self.markers = [temp_dir, *markers]
        self.token = secrets.token_hex(32)
        # What a process needs in its environment to talk to this head (CLI, drivers).
        self.auth_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}
        gcs, dashboard, *others = _free_ports(9)
        client, agent_http, agent_grpc, runtime_env, metrics, node_manager, objects = others
        self.gcs_port, self.dashboard_port = gcs, dashboard
        self.address = f"http://127.0.0.1:{dashboard}"
        self.log_path = Path(temp_dir) / "ray-start.log"
        # Every port pinned, so nothing collides with another Ray running here (the dashboard
        # agent and client server have fixed defaults).
        self.argv = [
            "ray",
            "start",
            "--head",
            "--block",
            f"--port={gcs}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            "--include-dashboard=true",
            f"--ray-client-server-port={client}",
            f"--dashboard-agent-listen-port={agent_http}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={runtime_env}",
            f"--metrics-export-port={metrics}",
            f"--node-manager-port={node_manager}",
            f"--object-manager-port={objects}",
            "--num-cpus=2",
            "--num-gpus=0",
            f"--object-store-memory={256 * 1024**2}",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
        ]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> None:
        env = _clean_env(RAY_USAGE_STATS_ENABLED="0", **self.auth_env)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"`ray start` exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.client()
                return
            except Exception as exc:  # not up yet
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"no Jobs API at {self.address}: {exc}\n{self.log()}"
                    ) from exc
                time.sleep(0.5)

    def client(self):
        from ray.job_submission import JobSubmissionClient

        headers = {"Authorization": f"Bearer {self.token}"}
        return JobSubmissionClient(self.address, headers=headers)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, grace: float = 30.0) -> list[int]:
        """Stop this head; return the pids that survived SIGKILL (should be none)."""
        if self.proc is None:
            return []
        session = self.proc.pid
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pid in _our_processes(session, self.markers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while (left := _our_processes(session, self.markers)) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left


@pytest.fixture
def job_logdir() -> Iterator[Path]:
    # Outside the working directory that is uploaded, and absolute: the job's own cwd is a
    # temporary copy of the repo that Ray deletes.
    path = Path(tempfile.mkdtemp(prefix="impala-frodo-job-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ray_head(job_logdir: Path) -> Iterator[RayHead]:
    # A short path: Ray's Unix sockets live under it and must stay under 107 characters.
    temp_dir = tempfile.mkdtemp(prefix="rayh-", dir="/tmp")
    head = RayHead(temp_dir, markers=[str(job_logdir)])
    try:
        head.start()
        yield head
    finally:
        left = head.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"Ray processes of the test head survived SIGKILL: {left}"


JOB_TIMEOUT_S = 240
JOB_ENV_STEPS = 4_000


@pytest.mark.ray
@pytest.mark.skipif(shutil.which("ray") is None, reason="the `ray` CLI is not on PATH")
def test_job_submission_to_a_local_ray_head(ray_head: RayHead, job_logdir: Path):
    from ray.job_submission import JobStatus

    # The compose head's healthcheck URL answers on a real head without a token.
    healthcheck = " ".join(_services()["ray-head"]["healthcheck"]["test"])
    path = re.search(r"http://127\.0\.0\.1:\d+(/[\w/-]+)", healthcheck).group(1)
    url = f"http://127.0.0.1:{ray_head.dashboard_port}{path}"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200, url

    client = ray_head.client()
    submission_id = f"impala-frodo-test-{os.getpid()}-{int(time.time())}"
    env = _clean_env(
        RAY_API_SERVER_ADDRESS=ray_head.address,
        SUBMISSION_ID=submission_id,
        NO_WAIT="1",
        # The interpreter running this test has the project's dependencies.
        PYTHON=sys.executable,
        **ray_head.auth_env,
    )
    learner_args = [
        "--preset=catch-frodo",
        f"--total-env-steps={JOB_ENV_STEPS}",
        "--num-actors=1",
        "--envs-per-actor=32",
        "--seed=0",
        "--device=cpu",
        f"--logdir={job_logdir}",
    ]
    started = time.monotonic()
    submit = subprocess.run(
        [str(SUBMIT_SCRIPT), *learner_args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tempfile.gettempdir(),
    )
    assert submit.returncode == 0, f"submission failed:\n{submit.stdout}\n{submit.stderr}"

    deadline = started + JOB_TIMEOUT_S
    status = client.get_job_status(submission_id)
    while not status.is_terminal() and time.monotonic() < deadline:
        time.sleep(1)
        status = client.get_job_status(submission_id)
    elapsed = time.monotonic() - started
    logs = client.get_job_logs(submission_id)
    if not status.is_terminal():
        client.stop_job(submission_id)
    print(f"job {submission_id}: {status} after {elapsed:.1f} s end to end\n{logs[-3000:]}")
    assert status == JobStatus.SUCCEEDED, f"job ended {status} after {elapsed:.0f} s:\n{logs}"

    info = client.get_job_info(submission_id)
    assert info.entrypoint.split()[1:3] == ["-m", "learner"]
    uploaded = info.runtime_env.get("working_dir", "")
    assert uploaded.startswith("gcs://"), f"the working dir was not uploaded: {uploaded}"

    # One run directory under --logdir, with everything DESIGN.md section 8 promises.
    run_dirs = [p for p in job_logdir.iterdir() if p.is_dir()]
    assert len(run_dirs) == 1, f"expected one run directory in {job_logdir}: {run_dirs}"
    run_dir = run_dirs[0]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run"]["num_actors"] == 1
    assert config["run"]["total_env_steps"] == JOB_ENV_STEPS
    assert Path(config["run"]["logdir"]) == job_logdir
    metrics = [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line
    ]
    assert metrics, "metrics.jsonl is empty"
    assert metrics[-1]["env_steps"] >= JOB_ENV_STEPS
    checkpoints = sorted((run_dir / "checkpoints").iterdir())
    assert not [p for p in checkpoints if p.name.endswith(".tmp")], "a partial checkpoint is left"

    from impala_frodo.records.checkpoint import load_checkpoint

    state = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert state["counters"]["env_steps"] >= JOB_ENV_STEPS

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert list(run_dir.glob("events.out.tfevents.*")), f"no TensorBoard events in {run_dir}"
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    scalars = accumulator.Tags()["scalars"]
    assert "episode/return" in scalars, f"TensorBoard scalars: {scalars}"
    assert accumulator.Scalars("episode/return")[-1].step >= JOB_ENV_STEPS
