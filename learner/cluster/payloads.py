"""What crosses Ray between the driver, the actors and the learners, and in which form.

An unroll is handed out as an :class:`Unroll`: its small summary in hand, its trajectory
left in the object store until whoever trains on it fetches it. Acting weights travel
packed (one float32 vector: :data:`PackedWeights`), by value when small, else put in the
object store once and fetched by reference (:func:`packed_payload`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray

from impala_frodo.acting.trajectory import Trajectory, UnrollSummary
from impala_frodo.networks.weights import ParamLayout, layout_size, pack_params, param_layout

#: Weights up to this size go by value with each call; larger ones via one ray.put.
INLINE_WEIGHTS_BYTES = 100 * 1024
#: Packed acting weights as the actors take them: the vector, or an ObjectRef to it.
PackedWeights = np.ndarray | ray.ObjectRef


def packed_payload(flat: np.ndarray) -> PackedWeights:
    """``flat`` as it goes to the actors: by value up to :data:`INLINE_WEIGHTS_BYTES` (in
    the call itself), else put in the object store once (one copy, fetched by reference)."""
    return flat if flat.nbytes <= INLINE_WEIGHTS_BYTES else ray.put(flat)


def as_packed(params: Mapping[str, Any] | PackedWeights, layout: ParamLayout) -> PackedWeights:
    """Weights for actors of ``layout``: by name (checked against ``layout`` and packed
    here), or packed already (a vector, checked for its length, or a reference)."""
    if isinstance(params, Mapping):
        if param_layout(params) != layout:
            raise ValueError(
                f"published weights {param_layout(params)} do not match the actors' layout {layout}"
            )
        return packed_payload(pack_params(params))
    if isinstance(params, np.ndarray) and params.size != layout_size(layout):
        raise ValueError(
            f"published weights have {params.size:,} numbers, the actors' layout "
            f"{layout_size(layout):,}"
        )
    return params


@dataclass(frozen=True)
class Unroll:
    """A finished unroll: its summary in hand, its trajectory in the object store
    (an :class:`~impala_frodo.acting.trajectory.UnrollSource`)."""

    summary: UnrollSummary
    ref: ray.ObjectRef

    def trajectory(self) -> Trajectory:
        """Fetch the trajectory into this process (the driver's learner does; a
        data-parallel learner fetches its own share from :attr:`ref`)."""
        return ray.get(self.ref)
