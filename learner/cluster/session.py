"""The Ray session of a run: join a cluster, or start (and stop) a private local instance.

Joining a cluster has a deadline (``run.connect_timeout_s``, then
:class:`ClusterConnectError`: bad input, ``ExitCode.USAGE``), and a stop request
(SIGINT/SIGTERM) is seen within about ``WAIT_SLICE_S`` while Ray connects.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import ray

from impala_frodo.config.checks import ConfigError
from impala_frodo.envs.minatar_envs import WORKER_ENV
from impala_frodo.utils import first_line, os_error_reason
from learner.cluster import local_instance
from learner.cluster.resources import (  # where the driver has long found them
    check_local_cpus,
    check_resources,
    fit_local_cpus,
    meta_learner_cpus,
)

log = logging.getLogger("impala_frodo")

#: On a local Ray started here, task results up to this size are inlined into the reply
#: instead of going through the shared-memory object store: more env steps/s for unrolls
#: of Catch's size (docs/results-distributed.md, "Measurements behind the code").
INLINE_RESULT_BYTES = 4 * 1024 * 1024
#: The logger of Ray's token authentication set-up, and that of ``ray.init``.
_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
_WORKER_LOGGER = "ray._private.worker"
#: Longest single wait of the driver: a stop request is seen within about this.
WAIT_SLICE_S = 0.5


class ClusterConnectError(ConfigError):
    """The Ray cluster at the given address cannot be reached (bad input: ``ExitCode.USAGE``)."""


def local_ray_init_kwargs(
    num_cpus: int | None = None, *, inline_results: bool = True
) -> dict[str, Any]:
    """``ray.init`` arguments for a private local instance (tests use them too).

    ``inline_results``: task results up to :data:`INLINE_RESULT_BYTES` come back inside the
    reply, into the caller's memory (one learner in the driver: it takes every unroll).
    Off for learners of their own: results above Ray's default (100 KiB) then go to the
    object store of the node that made them, and a learner fetches an unroll from there,
    not through the driver's process (docs/results-distributed.md).
    """
    kwargs = {
        # A new instance even where a `ray start` cluster runs on this machine (Ray would
        # join it, found in /tmp/ray/ray_current_cluster, and refuse num_cpus).
        "address": "local",
        "num_cpus": num_cpus or os.cpu_count() or 1,
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        # Third-party notes the driver has shown once are not printed again by every worker.
        "runtime_env": {"env_vars": {WORKER_ENV: "1"}},
    }
    if inline_results:
        kwargs["_system_config"] = {"max_direct_call_object_size": INLINE_RESULT_BYTES}
    return kwargs


@contextmanager
def ray_session(
    address: str | None = None,
    *,
    connect_timeout_s: float = 60.0,
    should_stop: Callable[[], bool] | None = None,
    inline_results: bool = True,
) -> Iterator[bool]:
    """Connect to Ray for the run; yields whether this call started (and will stop) it.

    Already connected (tests, or a caller that ran ``ray.init``): reuse it.
    ``address`` or ``RAY_ADDRESS`` (set by ``ray job submit``): join that cluster
    (``"auto"`` finds a local ``ray start`` one) within ``connect_timeout_s``, else
    :class:`ClusterConnectError`; ``should_stop()`` true meanwhile (a stop request) raises
    ``KeyboardInterrupt``.
    Otherwise: a private local instance with ``num_cpus = os.cpu_count()``, no
    dashboard, and Ray's default token authentication, started by
    :func:`~learner.cluster.local_instance.start_local` (``should_stop()`` true meanwhile
    kills what it started and raises ``KeyboardInterrupt``); ``inline_results`` as in
    :func:`local_ray_init_kwargs`.
    """
    if ray.is_initialized():
        yield False
        return
    address = address or os.environ.get("RAY_ADDRESS")
    reaper = instance = None
    with _quiet_start():
        if address:
            _connect(address, connect_timeout_s, should_stop)
        else:
            instance = local_instance.start_local(
                local_ray_init_kwargs(inline_results=inline_results), should_stop
            )
    if instance is not None:
        reaper = local_instance.start_reaper()
    try:
        yield True
    finally:
        if address:
            ray.shutdown()  # only disconnects: the cluster stays up
        else:
            local_instance.shutdown()
            instance.release()
            if reaper is not None:
                reaper.close()


def lost_local_node() -> str | None:
    """What is wrong with the local instance this process started, if its node is gone
    (its raylet or its GCS died: SIGKILL, OOM); None if it is fine, or if this process
    started none."""
    return local_instance.head_failure(local_instance.head_processes())


#: A ``ray.init`` that did not return in time (it cannot be cancelled): the CLI then
#: ends the process with ``os._exit`` rather than wait for it at interpreter exit.
_stuck_connect: threading.Thread | None = None


def connect_stuck() -> bool:
    """A cluster connection, or a local start, abandoned on a stop request or a deadline is
    still blocked in Ray (see :func:`ray_session`)."""
    return (_stuck_connect is not None and _stuck_connect.is_alive()) or local_instance.stuck()


def _connect(address: str, timeout_s: float, should_stop: Callable[[], bool] | None = None) -> None:
    """``ray.init(address=...)`` with a deadline, signals seen within ``WAIT_SLICE_S``.

    Ray retries an unreachable GCS for minutes inside C++ code, where Python signal
    handlers do not run; so the connection is made in a helper thread while this
    (main) thread waits in short slices. A ``host:port`` that refuses TCP fails at once.
    """
    global _stuck_connect
    _check_reachable(address, timeout_s)
    done = threading.Event()
    failure: list[BaseException] = []

    def connect() -> None:
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except BaseException as e:  # handed to the waiting thread
            failure.append(e)
        finally:
            done.set()

    thread = threading.Thread(target=connect, name="ray-connect", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not done.wait(WAIT_SLICE_S / 5):
        if should_stop is not None and should_stop():
            _stuck_connect = thread
            raise KeyboardInterrupt(f"stopped while connecting to the Ray cluster at {address}")
        if time.monotonic() > deadline:
            _stuck_connect = thread
            raise ClusterConnectError(
                f"no Ray cluster answered at {address!r} within {timeout_s:g} s "
                f"(run.connect_timeout_s)"
            )
    if failure:
        raise ClusterConnectError(
            f"cannot connect to the Ray cluster at {address!r}: {first_line(failure[0])}"
        ) from None


def _check_reachable(address: str, timeout_s: float) -> None:
    """A ``host:port`` address must accept a TCP connection (fails fast on a wrong port)."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return  # "auto", "ray://...": Ray resolves those itself
    try:
        socket.create_connection(
            (host.strip("[]"), int(port)), timeout=min(timeout_s, 10.0)
        ).close()
    except OSError as e:
        raise ClusterConnectError(
            f"cannot reach the Ray cluster at {address!r}: {os_error_reason(e)}"
        ) from None


class _DropMessage(logging.Filter):
    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)


#: Ray's notes on a start that say nothing to a user: (logger, message start).
_START_NOTES = (
    # Ray turns token authentication on by default and says so on every local start (it
    # stays on; only the note goes).
    (_AUTH_LOGGER, "Token authentication is enabled for this Ray cluster"),
    # ray.init outside the main thread (here, on purpose) does not put in its own SIGTERM
    # handler, which would end the process with sys.exit in the middle of the start.
    (_WORKER_LOGGER, "SIGTERM handler is not set because current thread is not the main"),
)


@contextmanager
def _quiet_start() -> Iterator[None]:
    """Drop :data:`_START_NOTES` meanwhile (other messages of those loggers still show)."""
    filters = [(logging.getLogger(name), _DropMessage(start)) for name, start in _START_NOTES]
    for logger, drop in filters:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger, drop in filters:
            logger.removeFilter(drop)


__all__ = [
    "ClusterConnectError",
    "check_local_cpus",
    "check_resources",
    "fit_local_cpus",
    "meta_learner_cpus",
    "ray_session",
]
