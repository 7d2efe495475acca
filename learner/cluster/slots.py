"""What the actor pool knows of each of its actors: a :class:`Slot` per rollout actor
(its handle, its calls in flight, its deaths and restarts, its weight offers)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Slot:
    handle: Any
    actor_id: int
    incarnation: int = 0  # bumped at every death: results of older calls are stale
    deaths_on_handle: int = 0
    replacements: int = 0
    inflight: int = 0
    #: False from a death until the restarted process returns an unroll: calls that fail
    #: meanwhile ("the actor is restarting") are the same death, not new ones.
    healthy: bool = True
    #: While unhealthy, no new call before this time (monotonic s): no busy resubmission.
    retry_at: float = 0.0
    #: A new or restarted process has no weights: its next unroll call carries them.
    needs_weights: bool = True
    #: Weight offers not yet seen to finish (their errors are read, not left to Ray's log).
    offers: list = field(default_factory=list)
    #: Unrolls collected since its last offer: an actor that has not started a new
    #: unroll since then has not used that offer yet, and a newer one can wait.
    collected_since_offer: int = 0
    #: When this handle was made, and when it last returned an unroll (monotonic s).
    created_at: float = field(default_factory=time.monotonic)
    returned_at: float | None = None
    #: The processes seen returning unrolls on this handle, and the incarnation when the
    #: newest appeared: a new one with no death counted since is a restart no call saw.
    pids: set[int] = field(default_factory=set)
    pid_incarnation: int = 0
