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

    from learner.ray_session import local_ray_init_kwargs

    if ray.is_initialized():  # a module before us left one running
        ray.shutdown()
    ray.init(**local_ray_init_kwargs(num_cpus=2))
    yield ray
    ray.shutdown()
