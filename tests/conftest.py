"""Shared fixtures: a local Ray instance for the distributed tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ray_local():
    """``ray.init(num_cpus=2, include_dashboard=False)`` for one test module, shut down after.

    Module scope: Ray starts in ~5 s, and other modules (deploy tests) start their own
    clusters, so ours must not outlive the module that needs it.
    """
    import ray

    from learner.cluster.session import local_ray_init_kwargs

    if ray.is_initialized():  # a module before us left one running
        ray.shutdown()
    ray.init(**local_ray_init_kwargs(num_cpus=2))
    yield ray
    ray.shutdown()


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 4 MiB tmpfs mounted at a fresh folder (a real file system that fills up), unmounted
    after. Skipped where mounting is not permitted (not root, or no mount in a container)."""
    import os
    import subprocess

    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def fill_up():
    """``fill_up(folder, leave=0)``: write filler files into ``folder`` until its file
    system refuses more (ENOSPC), then free ``leave`` bytes again."""
    return _fill_up


def _fill_up(folder, leave: int = 0) -> None:
    import errno
    import os

    chunk = b"\0" * 65536
    with open(f"{folder}/filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
    # the last partial page too
    with open(f"{folder}/filler-tail", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0")
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
    if leave:
        size = os.path.getsize(f"{folder}/filler")
        os.truncate(f"{folder}/filler", max(0, size - leave))
