"""The CPUs and GPUs a run reserves on Ray, checked (and on a local instance fitted)
before anything starts.

On the local instance a run starts, default shares that do not fit the machine are fitted
by one factor and said in one line, around the shares the user set, which are kept
(:func:`fit_local_cpus`); processes that cannot be placed at all are refused naming the
flag to set. On a cluster, learners or a meta-learner that can
never be placed are refused, and too few CPUs for the actors is a warning (it may grow).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager

import ray
import torch

from impala_frodo.config.checks import ConfigError
from impala_frodo.config.schema import Config, set_dotted

log = logging.getLogger("impala_frodo")


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


#: The least CPU share fitting gives a process: below it, there are too many for the
#: machine and the run is refused instead.
MIN_SHARE = 0.05


def fit_local_cpus(cfg: Config, explicit: frozenset[str] = frozenset()) -> Config:
    """``cfg`` with its Ray CPU shares fitted to the local instance a run starts.

    Where the actors, the data-parallel learners, the async meta-learner and the evaluator
    reserve more CPUs than the machine has (8 actors x 0.5 on 2 cores), the shares not in
    ``explicit`` (dotted keys the user set: flags, ``--set``, ``--config``) shrink by one
    factor into what the explicit ones leave, and a line says so; processes then share the
    cores, as they would anyway. An explicit share is never changed: the user asked for
    it, and a run that quietly ran on less would not be the one asked for. Refused
    (:class:`ConfigError`, naming the flags) where a fitted share would fall below
    :data:`MIN_SHARE`, where the explicit shares alone do not fit, or where one process
    alone asks more than the machine has (:func:`check_local_cpus`). Without ``explicit``
    (programmatic callers) every share may be fitted; a resumed run's saved shares are
    fitted unless set again (:func:`learner.app.args.explicit_keys` says why).
    """
    cpus = os.cpu_count() or 1
    shares = _shares(cfg)
    total = sum(count * share for count, share, _ in shares.values())
    if total <= cpus + 1e-9 or any(share > cpus for _, share, _ in shares.values()):
        check_local_cpus(cfg)  # a process asking more than the machine is refused there
        return cfg
    kept = {who: shares[who] for who in shares if _SHARE_KEYS[who] in explicit}
    room = cpus - sum(count * share for count, share, _ in kept.values())
    free = {who: shares[who] for who in shares if who not in kept}
    free_total = sum(count * share for count, share, _ in free.values())
    factor = max(room, 0.0) / free_total if free else 0.0
    fitted = {who: math.floor(share * factor * 100) / 100 for who, (_, share, _) in free.items()}
    _refuse_unfittable(shares, kept, fitted, cpus)
    given = " and ".join(
        f"{fitted[who]:g} per {who.rstrip('s')} ({flag})" for who, (_, _, flag) in free.items()
    )
    beside = " and ".join(f"{share:g} per {who.rstrip('s')}" for who, (_, share, _) in kept.items())
    log.warning(
        "%s CPU reserve %.4g CPUs but this machine has %d: fitted to %s%s",
        _asked(shares),
        total,
        cpus,
        given,
        f" beside {beside} as set" if kept else "",
    )
    cfg = set_dotted(cfg, {_SHARE_KEYS[who]: share for who, share in fitted.items()})
    check_local_cpus(cfg)
    return cfg


def _refuse_unfittable(
    shares: dict[str, tuple[int, float, str]],
    kept: dict[str, tuple[int, float, str]],
    fitted: dict[str, float],
    cpus: int,
) -> None:
    """:class:`ConfigError` naming the flags to change where the ``kept`` (explicit) shares
    leave no room, or a ``fitted`` share is under :data:`MIN_SHARE`."""
    kept_flags = [flag for _, _, flag in kept.values()]
    kept_flags += [_COUNT_FLAGS[who] for who in kept if who in ("actors", "learners")]
    if not fitted:  # every share as set, and together more than the machine has
        need = sum(count * share for count, share, _ in shares.values())
        raise ConfigError(
            f"{_asked(shares)} CPU, as set, reserve {need:.4g} CPUs but this machine has {cpus}: "
            f"lower {_either(kept_flags)}, or join a cluster with --address"
        )
    small = [who for who, share in fitted.items() if share < MIN_SHARE]
    if small:
        count = shares[small[0]][0]
        held = sum(n * share for n, share, _ in kept.values())
        beside = f" beside the {held:.4g} CPUs set for {_asked(kept)}" if kept else ""
        raise ConfigError(
            f"{count:,} {small[0]} would get under {MIN_SHARE:g} CPU each on the {cpus} CPUs "
            f"here{beside}: lower {_either([_COUNT_FLAGS[small[0]], *kept_flags])}, or join a "
            "cluster with --address"
        )


def _asked(shares: dict[str, tuple[int, float, str]]) -> str:
    """``"2 actors x 0.5 and 2 learners x 1"``: what ``shares`` reserve, for a message."""
    return " and ".join(f"{n} {who} x {share:g}" for who, (n, share, _) in shares.items())


def _either(flags: list[str]) -> str:
    """``"--a, --b or --c"``: the flags to change, each once."""
    flags = list(dict.fromkeys(flags))
    return " or ".join([", ".join(flags[:-1]), flags[-1]]) if len(flags) > 1 else flags[0]


_COUNT_FLAGS = {
    "actors": "--num-actors",
    "learners": "--num-learners",
    "meta-learner": "meta.learner_num_cpus (or --meta-mode inline)",
    "evaluator": "eval.num_cpus",
}
_SHARE_KEYS = {
    "actors": "run.actor_num_cpus",
    "learners": "run.learner_num_cpus",
    "meta-learner": "meta.learner_num_cpus",
    "evaluator": "eval.num_cpus",
}


def _shares(cfg: Config) -> dict[str, tuple[int, float, str]]:
    """``{who: (processes, CPUs each, the flag that sets it)}`` of a run's Ray reservations."""
    shares = {"actors": (cfg.run.num_actors, cfg.run.actor_num_cpus, "--actor-num-cpus")}
    if cfg.run.num_learners > 1:
        shares["learners"] = (
            cfg.run.num_learners,
            cfg.run.learner_num_cpus,
            "--set run.learner_num_cpus=C",
        )
    if meta_learner_cpus(cfg) > 0:
        shares["meta-learner"] = (1, meta_learner_cpus(cfg), "--set meta.learner_num_cpus=C")
    if cfg.eval.enabled:
        shares["evaluator"] = (1, cfg.eval.num_cpus, "--set eval.num_cpus=C")
    return shares


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


def learner_threads(cfg: Config, requested: int | None, *, local: bool) -> int:
    """Torch threads for the learner: ``requested``, else on a local Ray the cores the
    actors and the meta-learner leave free.

    On a cluster (or a Ray someone else started) the current setting stays
    (``OMP_NUM_THREADS``; see ``ENTRYPOINT_NUM_CPUS`` in deploy/submit_job.sh).
    """
    if requested is not None:
        return requested
    if not local:
        return torch.get_num_threads()
    actor_cpus = math.ceil(cfg.run.num_actors * cfg.run.actor_num_cpus + meta_learner_cpus(cfg))
    return max(1, (os.cpu_count() or 1) - actor_cpus)


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Torch uses ``threads`` threads meanwhile (the setting before is put back after).

    Set before the learner's first torch op: OpenMP sizes its thread pool then, and a
    spare pool thread spin-waits on a core the actors need (a pool made with more threads
    and cut afterwards costs throughput; docs/results-distributed.md, "Measurements
    behind the code").
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
