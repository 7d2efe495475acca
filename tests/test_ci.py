"""The repository checks that .ci/run makes besides the tests (tracked file sizes)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
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
