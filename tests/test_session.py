"""The private local Ray instance a run starts: never someone else's cluster."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import ray

from learner.cluster.session import local_ray_init_kwargs


def test_a_local_start_ignores_a_ray_start_cluster_recorded_on_this_machine():
    """``ray start`` records its address in <temp dir>/ray_current_cluster, and a bare
    ``ray.init()`` joins it (and refuses ``num_cpus``). A run's local start makes its own
    instance whatever is recorded there (here, an address where nothing answers)."""
    temp_dir = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: socket paths
    (temp_dir / "ray_current_cluster").write_text("127.0.0.1:1\n")
    try:
        context = ray.init(**local_ray_init_kwargs(num_cpus=1), _temp_dir=str(temp_dir))
        assert context.address_info["gcs_address"] != "127.0.0.1:1"
        assert ray.cluster_resources()["CPU"] == 1
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
