"""The learner's batch: trajectories as time-major ``[T, B]`` tensors on one device.

:class:`Batch` concatenates :class:`~impala_frodo.acting.trajectory.Trajectory` s (numpy, as the
actors send them) along B and moves them to the learner's device, observations in their
stored dtype, converted to float there (:func:`to_network_input`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from impala_frodo.acting.trajectory import Trajectory


def to_network_input(obs: Tensor, scale: float = 1.0, dtype: torch.dtype = torch.float32) -> Tensor:
    """Stored observations (uint8 images, float32 vectors) as the network's float input."""
    obs = obs.to(dtype)
    return obs * scale if scale != 1.0 else obs  # out of place: obs may share numpy memory


@dataclass
class Batch:
    """A learner batch: trajectories as tensors on one device, time-major."""

    obs: Tensor  # [T+1, B, *obs_shape]
    actions: Tensor  # [T, B] long
    rewards: Tensor  # [T, B]
    continues: Tensor  # [T, B]
    behaviour_log_probs: Tensor  # [T, B]
    truncation_index: Tensor  # [N] long, flat t * B + b
    truncation_obs: Tensor  # [N, *obs_shape]
    policy_versions: list[int]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.actions.shape)  # type: ignore[return-value]

    def to(self, device: torch.device | str) -> Batch:
        """This batch with every tensor on ``device`` (itself where they are already)."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return dataclasses.replace(self, **moved)

    def columns(self, index: Tensor) -> Batch:
        """The columns ``index`` (distinct, ascending; ``[n]`` long) of every ``[T, B]``
        field, the truncations of those columns renumbered for a batch of width n, in
        their own memory (a view would carry the whole batch's storage when it is sent to
        another process)."""
        width = self.shape[1]
        index = index.to(self.actions.device)
        position = torch.full((width,), -1, dtype=torch.long, device=index.device)
        position[index] = torch.arange(index.numel(), device=index.device)
        t = torch.div(self.truncation_index, width, rounding_mode="floor")
        new_b = position[self.truncation_index % width]
        inside = new_b >= 0
        return Batch(
            obs=self.obs[:, index],
            actions=self.actions[:, index],
            rewards=self.rewards[:, index],
            continues=self.continues[:, index],
            behaviour_log_probs=self.behaviour_log_probs[:, index],
            truncation_index=t[inside] * index.numel() + new_b[inside],
            truncation_obs=self.truncation_obs[inside],
            policy_versions=self.policy_versions,
        )

    def shard(self, index: int, count: int) -> Batch:
        """Columns ``[index B/count, (index + 1) B/count)``: one of ``count`` equal shards
        along B (for data-parallel learners; B must divide evenly)."""
        width = self.shape[1]
        if not 0 <= index < count or width % count:
            raise ValueError(f"cannot take shard {index} of {count} of a batch of B = {width}")
        size = width // count
        return self.columns(torch.arange(index * size, (index + 1) * size))

    @classmethod
    def from_trajectories(
        cls,
        trajectories: Sequence[Trajectory],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> Batch:
        """Concatenate along B and move to ``device`` in one copy per field.

        Observations cross to ``device`` in their stored dtype (uint8 images: 4x fewer bytes)
        and become ``dtype`` there, times the trajectories' ``obs_scale``.
        """
        if not trajectories:
            raise ValueError("from_trajectories needs at least one trajectory")
        lengths = {tr.unroll_length for tr in trajectories}
        if len(lengths) != 1:
            raise ValueError(f"trajectories must share one unroll length, got {sorted(lengths)}")
        scales = {tr.obs_scale for tr in trajectories}
        if len(scales) != 1:
            raise ValueError(f"trajectories must share one obs_scale, got {sorted(scales)}")
        (scale,) = scales

        def cat(name: str, torch_dtype: torch.dtype | None) -> Tensor:
            """Field ``name`` along B on ``device``; ``None``: in its stored dtype."""
            arrays = [getattr(tr, name) for tr in trajectories]
            array = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=1)
            return torch.as_tensor(array).to(device=device, dtype=torch_dtype, non_blocking=True)

        # Flat truncation indices t * B + b shift by the B offset of each trajectory.
        total_b = sum(tr.num_envs for tr in trajectories)
        index_parts, obs_parts, offset = [], [], 0
        for tr in trajectories:
            if tr.truncation_index.size:
                t, b = np.divmod(tr.truncation_index, tr.num_envs)
                index_parts.append(t * total_b + b + offset)
                obs_parts.append(tr.truncation_obs)
            offset += tr.num_envs
        obs_shape = trajectories[0].obs.shape[2:]
        index = np.concatenate(index_parts) if index_parts else np.zeros(0, np.int64)
        trunc_obs = (
            np.concatenate(obs_parts)
            if obs_parts
            else np.zeros((0, *obs_shape), trajectories[0].obs.dtype)
        )
        return cls(
            obs=to_network_input(cat("obs", None), scale, dtype),
            actions=cat("actions", torch.long),
            rewards=cat("rewards", dtype),
            continues=cat("continues", dtype),
            behaviour_log_probs=cat("behaviour_log_probs", dtype),
            truncation_index=torch.as_tensor(index, dtype=torch.long, device=device),
            truncation_obs=to_network_input(torch.as_tensor(trunc_obs).to(device), scale, dtype),
            policy_versions=[tr.policy_version for tr in trajectories],
        )


class ColumnSampler:
    """Which columns of a ``[T, B]`` batch a meta-gradient is taken on (``meta.batch_fraction``).

    ``fraction = 1``: all of them (``None``). Else ``max(1, floor(fraction B))`` columns
    drawn without replacement, afresh at every call, from a generator of its own (seeded,
    so runs repeat; the global RNG is not moved).
    """

    def __init__(self, fraction: float, seed: int = 0) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"a batch fraction must be in (0, 1], got {fraction!r}")
        self.fraction = fraction
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, width: int) -> Tensor | None:
        """Sorted column indices ``[n]`` of a batch of ``width`` columns, or ``None``: all."""
        if self.fraction == 1.0:
            return None
        count = max(1, int(self.fraction * width))
        return torch.randperm(width, generator=self.generator)[:count].sort().values

    def take(self, batch: Batch, index: Tensor | None) -> Batch:
        """``batch``'s columns ``index`` (``None``: ``batch`` itself)."""
        return batch if index is None else batch.columns(index)
