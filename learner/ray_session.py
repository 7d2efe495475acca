"""The Ray session of a run: join a cluster, or start (and stop) a private local instance."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray

from impala_frodo.config import Config

log = logging.getLogger("impala_frodo")

#: On a local Ray started here, task results up to this size are inlined into the reply
#: instead of going through the shared-memory object store (measured: +50% env steps/s
#: for 134 KB Catch unrolls on 2 cores).
INLINE_RESULT_BYTES = 4 * 1024 * 1024
#: The logger of Ray's token authentication set-up.
_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def local_ray_init_kwargs(num_cpus: int | None = None) -> dict[str, Any]:
    """``ray.init`` arguments for a private local instance (tests use them too)."""
    return {
        "num_cpus": num_cpus or os.cpu_count() or 1,
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "_system_config": {"max_direct_call_object_size": INLINE_RESULT_BYTES},
    }


@contextmanager
def ray_session(address: str | None = None) -> Iterator[bool]:
    """Connect to Ray for the run; yields whether this call started (and will stop) it.

    Already connected (tests, or a caller that ran ``ray.init``): reuse it.
    ``address`` or ``RAY_ADDRESS`` (set by ``ray job submit``): join that cluster
    (``"auto"`` finds a local ``ray start`` one). Otherwise: a private local
    instance with ``num_cpus = os.cpu_count()``, no dashboard, and Ray's default
    token authentication.
    """
    if ray.is_initialized():
        yield False
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        with _quiet_default_token_auth():
            ray.init(**local_ray_init_kwargs())
    try:
        yield True
    finally:
        ray.shutdown()


class _DropMessage(logging.Filter):
    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)


@contextmanager
def _quiet_default_token_auth() -> Iterator[None]:
    """Drop Ray's note that a new local instance has token authentication on.

    Ray turns it on by default and warns on every local start; it stays on, the
    note is only dropped (other warnings of that logger still show).
    """
    logger = logging.getLogger(_AUTH_LOGGER)
    drop = _DropMessage("Token authentication is enabled for this Ray cluster")
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def check_resources(cfg: Config) -> None:
    """Warn when the cluster has fewer CPUs than the actors reserve."""
    cpus = ray.cluster_resources().get("CPU", 0.0)
    need = cfg.run.num_actors * cfg.run.actor_num_cpus
    if need > cpus:
        log.warning(
            "%d actors x %.2f CPU = %.1f CPUs but the cluster has %.1f: only %d can run at once",
            cfg.run.num_actors,
            cfg.run.actor_num_cpus,
            need,
            cpus,
            int(cpus // cfg.run.actor_num_cpus),
        )
