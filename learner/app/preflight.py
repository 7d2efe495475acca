"""Before a run starts: do its sizes fit in memory, and a refused start leaves nothing.

**Memory.** :func:`check_memory` sets the run's estimate
(:func:`~impala_frodo.sizing.memory.run_memory`: the arrays and parameters its sizes
make certain, a lower bound) beside what the machine can hold: its physical memory, or
its cgroup's limit if lower. A run on a local Ray instance has every process here; with
``--address`` only the driver (and its learner) is, and :func:`check_cluster_memory`
sets each actor, learner rank and meta-learner beside the cluster's largest node once
it is joined (Ray's ``memory`` and ``object_store_memory`` of the node), before any
actor starts. A size that cannot fit is bad input (:class:`ConfigError`, one line, exit
2), found before Ray starts and before any file is written; one that fits but takes
over :data:`LARGE_SHARE` of the machine, or more than it has free now, is one warning
line with the estimate.

**Nothing left behind.** :func:`removed_if_refused` removes a run directory this session
made if the start is refused (bad input found once Ray is up: a cluster out of reach,
learners that cannot be placed, a node too small) or stopped (a signal while Ray starts)
before anything but its ``config.json`` and ``run.lock`` was written.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from actors.rollout import EnvSpec
from impala_frodo.config.checks import ConfigError
from impala_frodo.config.schema import Config
from impala_frodo.records.runlog import CONFIG_FILE, LOCK_FILE, RunDirError
from impala_frodo.sizing.memory import RunMemory, run_memory

log = logging.getLogger("impala_frodo")

#: A run estimated to take more than this share of a machine gets a warning: the estimate
#: is a lower bound, and resident sizes were 2 to 6 times it (docs/faults.md).
LARGE_SHARE = 0.25
#: cgroup v2's and v1's memory limit, and usage, of this process's group.
_CGROUP_FILES = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
)


@dataclass(frozen=True)
class Machine:
    """What a machine (or a cluster's node) can hold."""

    name: str  # for messages: "this machine", "the cluster's largest node"
    total: int  # bytes
    available: int  # bytes free now (``total`` where that is not known)


@dataclass(frozen=True)
class Part:
    """A part of a run's memory, for messages."""

    what: str  # "2 actors of 32 envs x 20 steps"
    bytes: int
    lower: str  # what to lower: "--envs-per-actor, --unroll-length or --num-actors"


def format_bytes(count: int) -> str:
    """``7.28 TiB``: binary units, three significant digits."""
    value, unit = float(count), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if value < 1024 or unit == "EiB":
            break
        value /= 1024
    return f"{count} B" if unit == "B" else f"{value:.3g} {unit}"


def this_machine() -> Machine:
    """This machine's memory (``/proc/meminfo``), or its cgroup's limit if lower."""
    info = _meminfo()
    total = info.get("MemTotal") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    available = info.get("MemAvailable", total)
    for limit_file, usage_file in _CGROUP_FILES:
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and limit < total:
            total = limit
            available = min(available, max(0, limit - (usage or 0)))
    return Machine("this machine", total, min(available, total))


def _meminfo() -> dict[str, int]:
    """``/proc/meminfo`` in bytes by key (empty where there is none)."""
    info: dict[str, int] = {}
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            fields = rest.split()
            if fields and fields[0].isdigit():
                info[key] = int(fields[0]) * (1024 if fields[1:] == ["kB"] else 1)
    return info


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


#: What to lower, by part of a run.
_LOWER_ACTORS = "--envs-per-actor, --unroll-length, --num-actors or run.queue_size"
_LOWER_ACTOR = "--envs-per-actor or --unroll-length"
_LOWER_BATCH = "--unroll-length, --envs-per-actor or run.batches_per_update"
_LOWER_LEARNER = "--unroll-length, --envs-per-actor, run.batches_per_update or agent.hidden_sizes"
_LOWER_META = "meta.num_inner_steps, --unroll-length, --envs-per-actor or run.batches_per_update"


def _steps(cfg: Config) -> str:
    return f"{cfg.run.envs_per_actor:,} envs x {cfg.run.unroll_length:,} steps"


def parts(cfg: Config, memory: RunMemory, *, local: bool) -> list[Part]:
    """The parts of the run on this machine: all of them on a local Ray instance, else
    the driver's (its learner, or the global batch it deals to N > 1 learners)."""
    run, steps = cfg.run, _steps(cfg)
    ranks = run.num_learners if run.num_learners > 1 else 0
    learners = 1 if ranks == 0 else ranks if local else 0
    who = "the learner" if learners == 1 else f"{learners} learners"
    params = f"{memory.agent_parameters + memory.meta_parameters:,} parameters"
    found = [
        Part(
            f"{who}, with {params} and batches of {steps}",
            learners * memory.learner,
            _LOWER_LEARNER,
        ),
        Part(f"the global batch of {steps}", memory.global_batch, _LOWER_BATCH),
    ]
    if local:
        actors = f"{run.num_actors} actors of {steps} and {run.queue_size} queued unrolls"
        found += [
            Part(actors, run.num_actors * memory.actor + memory.queue, _LOWER_ACTORS),
            Part("the async meta-learner", memory.meta_learner, _LOWER_META),
        ]
    return [part for part in found if part.bytes > 0]


def check_fits(found: list[Part], machine: Machine, subject: str = "this run") -> None:
    """:class:`ConfigError` if ``found`` together cannot fit ``machine``; a warning if they
    take over :data:`LARGE_SHARE` of it or more than it has free."""
    need = sum(part.bytes for part in found)
    largest = max(found, key=lambda part: part.bytes)
    detail = f"{largest.what}: {format_bytes(largest.bytes)}"
    if need > machine.total:
        raise ConfigError(
            f"{subject} needs at least {format_bytes(need)} of memory ({detail}), more than "
            f"{machine.name} holds ({format_bytes(machine.total)}): lower {largest.lower}"
        )
    if need > LARGE_SHARE * machine.total or need > machine.available:
        free = f", {format_bytes(machine.available)} free now" if machine.available < need else ""
        log.warning(
            "%s needs at least %s of memory (an estimate; %s), %.0f%% of what %s holds (%s%s)",
            subject,
            format_bytes(need),
            detail,
            100 * need / machine.total,
            machine.name,
            format_bytes(machine.total),
            free,
        )


def estimate(cfg: Config, spec: EnvSpec) -> RunMemory:
    """:func:`~impala_frodo.sizing.memory.run_memory` for the env of ``spec``."""
    return run_memory(cfg, spec.observation_shape, spec.observation_itemsize, spec.num_actions)


def check_memory(cfg: Config, spec: EnvSpec, *, local: bool) -> None:
    """The run's parts on this machine fit it (module docstring); before Ray starts."""
    check_fits(parts(cfg, estimate(cfg, spec), local=local), this_machine())


def largest_node() -> Machine | None:
    """The joined cluster's largest live node by Ray's memory resources (None if none)."""
    import ray

    sizes = [
        int(node["Resources"].get("memory", 0) + node["Resources"].get("object_store_memory", 0))
        for node in ray.nodes()
        if node.get("Alive")
    ]
    if not sizes or max(sizes) == 0:
        return None
    return Machine("the cluster's largest node", max(sizes), max(sizes))


def check_cluster_memory(cfg: Config, spec: EnvSpec) -> None:
    """Each actor, learner rank and meta-learner fits the cluster's largest node."""
    node = largest_node()
    if node is None:
        return
    memory = estimate(cfg, spec)
    rank = memory.learner if cfg.run.num_learners > 1 else 0
    processes = [
        Part(f"an actor of {_steps(cfg)}", memory.actor, _LOWER_ACTOR),
        Part("a learner rank", rank, _LOWER_LEARNER),
        Part("the async meta-learner", memory.meta_learner, _LOWER_META),
    ]
    for process in processes:
        if process.bytes > 0:
            check_fits([process], node, subject=process.what)


@contextmanager
def removed_if_refused(run_dir: Path, made_here: bool) -> Iterator[None]:
    """Remove ``run_dir`` if this session made it and the start is refused or stopped
    before anything but its config and lock was written (see the module docstring)."""
    try:
        yield
    except (ConfigError, RunDirError, KeyboardInterrupt):
        if made_here:
            remove_unused_run_dir(run_dir)
        raise


def remove_unused_run_dir(run_dir: Path) -> bool:
    """Remove ``run_dir`` if it holds only a ``config.json`` and a ``run.lock``; True if it
    is gone. Never raises: a directory that cannot be removed stays."""
    with contextlib.suppress(OSError):
        names = set(os.listdir(run_dir))
        if names <= {CONFIG_FILE, LOCK_FILE}:
            for name in names:
                os.unlink(run_dir / name)
            os.rmdir(run_dir)
            return True
    return False
