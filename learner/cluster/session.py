"""The Ray session of a run: join a cluster, or start (and stop) a private local instance.

Joining a cluster has a deadline (``run.connect_timeout_s``, then
:class:`ClusterConnectError`: bad input, ``ExitCode.USAGE``), and a stop request
(SIGINT/SIGTERM) is seen within about ``WAIT_SLICE_S`` while Ray connects.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import ray

from impala_frodo.config.checks import ConfigError
from impala_frodo.config.schema import Config
from impala_frodo.utils import first_line, os_error_reason
from learner.cluster import local_instance

log = logging.getLogger("impala_frodo")

#: On a local Ray started here, task results up to this size are inlined into the reply
#: instead of going through the shared-memory object store (measured: +50% env steps/s
#: for 134 KB Catch unrolls on 2 cores).
INLINE_RESULT_BYTES = 4 * 1024 * 1024
#: The logger of Ray's token authentication set-up, and that of ``ray.init``.
_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
_WORKER_LOGGER = "ray._private.worker"
#: Longest single wait of the driver: a stop request is seen within about this.
WAIT_SLICE_S = 0.5


class ClusterConnectError(ConfigError):
    """The Ray cluster at the given address cannot be reached (bad input: ``ExitCode.USAGE``)."""


def local_ray_init_kwargs(num_cpus: int | None = None) -> dict[str, Any]:
    """``ray.init`` arguments for a private local instance (tests use them too)."""
    return {
        "num_cpus": num_cpus or os.cpu_count() or 1,
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "_system_config": {"max_direct_call_object_size": INLINE_RESULT_BYTES},
    }


@contextmanager
def ray_session(
    address: str | None = None,
    *,
    connect_timeout_s: float = 60.0,
    should_stop: Callable[[], bool] | None = None,
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
    kills what it started and raises ``KeyboardInterrupt``).
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
            instance = local_instance.start_local(local_ray_init_kwargs(), should_stop)
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


def check_local_cpus(cfg: Config) -> None:
    """On the local Ray a run starts (``os.cpu_count()`` CPUs) every actor must fit, and
    data-parallel learners with at least one actor.

    An actor holds its ``run.actor_num_cpus`` for the whole run, so actors beyond what
    the instance's CPUs hold at once (beside the learners) are never placed: the run would
    wait for them until ``run.progress_timeout_s``. Refused as bad input before Ray starts.
    (A cluster may grow: there :func:`check_resources` only warns about actors.)
    """
    cpus = os.cpu_count() or 1
    per_actor = cfg.run.actor_num_cpus
    if per_actor > cpus:
        raise ConfigError(
            f"run.actor_num_cpus = {per_actor:g} is more than the {cpus} CPUs of "
            f"the local Ray instance this run starts: no actor could ever be placed"
        )
    _check_learner_cpus(cfg, cpus, "the local Ray instance this run starts")
    _check_learner_nodes(cfg, 1, "the local Ray instance this run starts")
    learner_cpus = (
        cfg.run.num_learners * cfg.run.learner_num_cpus if cfg.run.num_learners > 1 else 0
    )
    placeable = math.floor((cpus - learner_cpus) / per_actor + 1e-9)
    if cfg.run.num_actors > placeable:
        beside = f" beside {cfg.run.num_learners} learners" if learner_cpus else ""
        raise ConfigError(
            f"run.num_actors = {cfg.run.num_actors:,} actors of run.actor_num_cpus = "
            f"{per_actor:g} need {cfg.run.num_actors * per_actor:,.1f} CPUs, but the local Ray "
            f"instance this run starts has {cpus}: at most {placeable} actors can be placed"
            f"{beside}; lower --num-actors or --actor-num-cpus, or join a cluster with --address"
        )
    check_meta_learner_fits(cfg, cpus, "the local Ray instance this run starts")


def meta_learner_cpus(cfg: Config) -> float:
    """The Ray CPUs the async meta-learner reserves (0 without one)."""
    return cfg.meta.learner_num_cpus if cfg.is_meta and cfg.meta.mode == "async" else 0.0


def check_meta_learner_fits(cfg: Config, cpus: float, where: str) -> None:
    """The async meta-learner and the actors fit in ``cpus`` together (else
    :class:`ConfigError`): the actors start first, and a meta-learner left without a place
    would never run."""
    meta = meta_learner_cpus(cfg)
    actors = cfg.run.num_actors * cfg.run.actor_num_cpus
    if meta > 0 and meta + actors > cpus:
        raise ConfigError(
            f"the async meta-learner (meta.learner_num_cpus = {meta:g}) and {cfg.run.num_actors} "
            f"actors x {cfg.run.actor_num_cpus:g} CPU need {meta + actors:g} CPUs, but {where} "
            f"has {cpus:g}: lower meta.learner_num_cpus or run.actor_num_cpus, or use "
            "meta.mode = 'inline'"
        )


def _check_learner_nodes(cfg: Config, nodes: int, where: str) -> None:
    """``strict-spread`` learners need a node each: more than ``nodes`` are never placed
    (after a node loss, a resume would wait ``run.progress_timeout_s`` for a node)."""
    learners = cfg.run.num_learners
    if learners > 1 and cfg.run.learner_placement == "strict-spread" and learners > nodes:
        raise ConfigError(
            f"run.learner_placement = 'strict-spread' puts each of the {learners} learners on "
            f"a node of its own, but {where} has {nodes} live node(s): use 'spread' or "
            "'pack', or add nodes"
        )


def _check_learner_cpus(cfg: Config, cpus: float, where: str) -> None:
    learners = cfg.run.num_learners
    if learners == 1:
        return
    least = learners * cfg.run.learner_num_cpus + cfg.run.actor_num_cpus  # and one actor
    if least > cpus:
        raise ConfigError(
            f"{learners} learners x run.learner_num_cpus = {cfg.run.learner_num_cpus:g} and "
            f"an actor's {cfg.run.actor_num_cpus:g} need {least:g} CPUs but {where} has "
            f"{cpus:g}: lower run.num_learners or run.learner_num_cpus"
        )


def check_resources(cfg: Config, learner_gpus: bool = False) -> None:
    """Refuse data-parallel learners, or an async meta-learner, that the cluster can never
    place (ConfigError); warn when it has fewer CPUs than the actors reserve."""
    resources = ray.cluster_resources()
    cpus = resources.get("CPU", 0.0)
    check_meta_learner_fits(cfg, cpus, "the cluster")  # async runs one learner (config)
    learners = cfg.run.num_learners
    if learners > 1:
        _check_learner_cpus(cfg, cpus, "the cluster")
        _check_learner_nodes(
            cfg, sum(bool(node.get("Alive")) for node in ray.nodes()), "the cluster"
        )
        gpus = resources.get("GPU", 0.0)
        if learner_gpus and learners > gpus:
            raise ConfigError(
                f"{learners} learners need a GPU each but the cluster has {gpus:g}: lower "
                "run.num_learners, or set run.device=cpu"
            )
        cpus -= learners * cfg.run.learner_num_cpus
    need = cfg.run.num_actors * cfg.run.actor_num_cpus
    if need > cpus:
        log.warning(
            "%d actors x %.2f CPU = %.1f CPUs but the cluster has %.1f%s: only %d can run at once",
            cfg.run.num_actors,
            cfg.run.actor_num_cpus,
            need,
            cpus,
            " beside the learners" if learners > 1 else "",
            int(cpus // cfg.run.actor_num_cpus),
        )
