"""CI and set-up: the tracked-file size check and run.py (the README's two commands)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scripts import REPO_ROOT, load_script

CHECK = REPO_ROOT / ".ci" / "check_file_sizes.py"

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _check(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECK), *args, str(repo)], capture_output=True, text=True
    )


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@needs_git
def test_size_check_fails_on_a_large_tracked_file_only(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "small.txt").write_text("x" * 1000)
    (tmp_path / "name with spaces.bin").write_bytes(b"\0" * 1_000_000)  # at the limit: fine
    (tmp_path / "untracked.whl").write_bytes(b"\0" * 2_000_000)  # not tracked: fine
    _git(tmp_path, "add", "small.txt", "name with spaces.bin")
    assert _check(tmp_path).returncode == 0

    (tmp_path / "big.whl").write_bytes(b"\1" * 1_000_001)
    _git(tmp_path, "add", "big.whl")  # staged, not committed: caught already
    result = _check(tmp_path)
    assert result.returncode == 1
    assert "big.whl" in result.stderr and "name with spaces" not in result.stderr
    assert _check(tmp_path, "--limit", "2000000").returncode == 0


@needs_git
def test_this_repository_tracks_no_large_file():
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    result = _check(REPO_ROOT)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- run.py, the README's set-up


def _load_run_py():
    return load_script("run.py", "run_py")


def _readme_block(heading: str) -> list[str]:
    """The lines of the first bash block under ``heading`` in the README."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split(f"\n## {heading}\n", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("#")[0].strip() for line in block.strip().splitlines()]


def test_ci_runs_the_readme_test_command():
    (command,) = _readme_block("Test")
    assert command == "python3 run.py test"
    ci_lines = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines
    assert _readme_block("Quick start") == ["python3 run.py train", "python3 run.py test"]


def test_run_py_reuses_a_venv_set_up_from_this_pyproject(tmp_path, monkeypatch):
    run_py = _load_run_py()
    venv = tmp_path / "venv"
    monkeypatch.setenv("IMPALA_FRODO_VENV", str(venv))
    python = run_py.venv_python(venv)
    python.parent.mkdir(parents=True)
    python.write_text("")
    (venv / run_py.STAMP).write_text(json.dumps(run_py.wanted_stamp()))

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"set-up ran {args} although the venv is up to date")

    monkeypatch.setattr(run_py.subprocess, "run", no_subprocess)
    assert run_py.ensure_venv() == python

    # A changed pyproject.toml (or Python) makes it install again.
    stale = dict(run_py.wanted_stamp(), pyproject_sha256="0" * 64)
    (venv / run_py.STAMP).write_text(json.dumps(stale))
    with pytest.raises(AssertionError, match="set-up ran"):
        run_py.ensure_venv()


def test_run_py_torch_choice(monkeypatch):
    run_py = _load_run_py()
    monkeypatch.setattr(run_py.sys, "platform", "linux")
    for gpu, expected in ((False, "cpu"), (True, "default")):
        monkeypatch.delenv("IMPALA_FRODO_TORCH", raising=False)
        monkeypatch.setattr(run_py, "has_cuda_gpu", lambda gpu=gpu: gpu)
        assert run_py.torch_flavour() == expected
        monkeypatch.setenv("IMPALA_FRODO_TORCH", "cpu")
        assert run_py.torch_flavour() == "cpu"
    monkeypatch.setenv("IMPALA_FRODO_TORCH", "gpu-please")
    with pytest.raises(SystemExit, match="auto, cpu or default"):
        run_py.torch_flavour()


def test_run_py_without_a_command_prints_usage():
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "run.py")], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "python3 run.py train" in result.stderr and "python3 run.py test" in result.stderr
