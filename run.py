#!/usr/bin/env python3
"""Set up the project venv if needed, then train or test: the two commands of the README.

    python3 run.py train [impala-frodo train options]   # the default run: FRODO on Catch
    python3 run.py test [pytest options]                # the whole test suite
    python3 run.py lint                                 # ruff check and ruff format --check

Each command first makes sure ``.venv/`` (next to this file) holds the project
and its dependencies, and does nothing when it already does (a stamp in the
venv records the pyproject.toml it was installed from). Only Python >= 3.11
with its ``venv`` module is needed beforehand.

torch: with an NVIDIA GPU (``nvidia-smi`` lists one) or on macOS, the normal
build from the package index. Without one, a CPU build, which is ~10x smaller
than the CUDA one: the newest torch that pip finds on the PyTorch CPU index
(and pip's own configured sources) that does not depend on NVIDIA's CUDA
packages. Set ``IMPALA_FRODO_TORCH=cpu`` or ``=default`` to choose yourself.
A torch already in the venv is kept.

Environment: ``IMPALA_FRODO_VENV`` (default ``.venv`` next to this file),
``IMPALA_FRODO_TORCH`` (``auto``, ``cpu``, ``default``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
STAMP = "impala-frodo-setup.json"
#: CUDA builds of torch on PyPI depend on these; CPU builds do not.
CUDA_DEPENDENCY_PREFIXES = ("nvidia-", "triton")
#: How many newer non-CPU torch versions to skip while looking for a CPU build.
CPU_SEARCH_TRIES = 4
PIP_FLAGS = ["--disable-pip-version-check", "--quiet"]
#: For the CPU index: an index that cannot be reached costs seconds, not pip's minutes.
CPU_INDEX_FLAGS = ["--index-url", CPU_INDEX, "--timeout", "30", "--retries", "2"]

USAGE = __doc__.split("\n\n")[1]


def say(message: str) -> None:
    print(f"[run.py] {message}", file=sys.stderr, flush=True)


def venv_dir() -> Path:
    return Path(os.environ.get("IMPALA_FRODO_VENV") or ROOT / ".venv").resolve()


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def wanted_stamp() -> dict[str, str]:
    """What the venv must have been set up from to be reused as it is."""
    pyproject = (ROOT / "pyproject.toml").read_bytes()
    return {
        "pyproject_sha256": hashlib.sha256(pyproject).hexdigest(),
        "python": platform.python_version(),
        "project": str(ROOT),
    }


def read_stamp(venv: Path) -> dict[str, str] | None:
    try:
        return json.loads((venv / STAMP).read_text())
    except (OSError, ValueError):
        return None


def pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", *PIP_FLAGS, *args], check=True)


def has_cuda_gpu() -> bool:
    """An NVIDIA GPU that the driver sees (``nvidia-smi -L`` lists one)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def torch_flavour() -> str:
    """``cpu`` or ``default`` (the package index's torch, CUDA-enabled on Linux)."""
    choice = os.environ.get("IMPALA_FRODO_TORCH", "auto").strip().lower()
    if choice in ("cpu", "default"):
        return choice
    if choice != "auto":
        raise SystemExit(f"[run.py] IMPALA_FRODO_TORCH must be auto, cpu or default: {choice!r}")
    if sys.platform == "darwin":  # macOS wheels are CPU (and MPS) builds already
        return "default"
    return "default" if has_cuda_gpu() else "cpu"


def find_cpu_torch(python: Path) -> str | None:
    """A pip requirement for the newest CPU build of torch pip can reach, or None.

    pip picks the highest version among the CPU index and its configured
    sources; where the CPU index cannot be reached, that may be a CUDA build
    from another source, so such versions are excluded and pip asked again.
    """
    excluded: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        for _ in range(CPU_SEARCH_TRIES):
            spec = "torch" + ",".join(f"!={v}" for v in excluded)
            cmd = [str(python), "-m", "pip", *PIP_FLAGS, "install", "--dry-run", "--no-deps"]
            cmd += [*CPU_INDEX_FLAGS, "--report", str(report), spec]
            if subprocess.run(cmd, capture_output=True, text=True).returncode != 0:
                return None
            picks = json.loads(report.read_text()).get("install", [])
            if not picks:
                return None
            meta = picks[0]["metadata"]
            requires = [r.lower() for r in meta.get("requires_dist") or []]
            if not any(r.startswith(CUDA_DEPENDENCY_PREFIXES) for r in requires):
                return f"torch=={meta['version']}"
            excluded.append(meta["version"].split("+")[0])
    return None


def install_torch(python: Path) -> None:
    """A CPU build of torch where there is no CUDA GPU (the project install adds its deps)."""
    flavour = torch_flavour()
    if flavour == "default":
        say("torch: the package index's build (an NVIDIA GPU was found, or macOS)")
        return  # the project install pulls it in
    spec = find_cpu_torch(python)
    if spec is None:
        say(
            f"torch: no CPU build found on {CPU_INDEX} or pip's sources: installing the "
            "default torch (on Linux the CUDA build, several GB)"
        )
        return
    say(f"torch: CPU build {spec} (no NVIDIA GPU here)")
    pip(python, "install", "--no-deps", *CPU_INDEX_FLAGS, spec)


def torch_installed(python: Path) -> bool:
    check = [str(python), "-c", "import importlib.util, sys; "]
    check[-1] += "sys.exit(importlib.util.find_spec('torch') is None)"
    return subprocess.run(check).returncode == 0


def ensure_venv() -> Path:
    """The venv's python, with the project installed: set up once, then reused as is."""
    if sys.version_info < (3, 11):  # noqa: UP036 (any python3 may run this file)
        raise SystemExit(
            f"[run.py] impala_frodo needs Python >= 3.11; this is {platform.python_version()} "
            f"({sys.executable})"
        )
    venv = venv_dir()
    python = venv_python(venv)
    stamp = wanted_stamp()
    if python.exists() and read_stamp(venv) == stamp:
        return python
    start = time.monotonic()
    if not python.exists():
        say(f"creating the project venv {venv}")
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        except subprocess.CalledProcessError:
            raise SystemExit(
                "[run.py] could not create a venv: install Python's venv module "
                "(Debian/Ubuntu: apt install python3-venv) and try again"
            ) from None
    (venv / STAMP).unlink(missing_ok=True)
    if not torch_installed(python):
        install_torch(python)
    say("installing the project and its dependencies (pip install -e '.[dev,minatar,atari]')")
    pip(python, "install", "-e", f"{ROOT}[dev,minatar,atari]")
    (venv / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
    say(f"venv ready in {time.monotonic() - start:.0f} s")
    return python


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("train", "test", "lint"):
        print(USAGE, file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    command, rest = argv[0], argv[1:]
    python = str(ensure_venv())
    os.chdir(ROOT)
    # As if the venv were activated: its tools (ray, tensorboard) come first on PATH.
    venv = venv_dir()
    os.environ["VIRTUAL_ENV"] = str(venv)
    os.environ["PATH"] = os.pathsep.join([str(Path(python).parent), os.environ.get("PATH", "")])
    if command == "train":
        args = [python, "-m", "learner", "train", *rest]
    elif command == "test":
        args = [python, "-m", "pytest", *rest]
    else:
        ruff = [python, "-m", "ruff"]
        code = subprocess.run([*ruff, "check", ".", *rest]).returncode
        return code or subprocess.run([*ruff, "format", "--check", "."]).returncode
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "nt":
        return subprocess.run(args).returncode
    os.execv(python, args)  # signals (Ctrl-C) and the exit code are the command's own
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
