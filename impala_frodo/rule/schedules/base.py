"""The schedule protocol every meta-schedule implements whole, and :class:`NoMeta`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from impala_frodo.rule.batch import Batch, ColumnSampler
from impala_frodo.rule.metagrad import OptState, Params

Stats = dict[str, Tensor]
#: What an updater's state holds of eta (:meth:`MetaSchedule.state_dict`).
META_KEYS = ("meta_net", "meta_optimizer", "num_meta_updates", "meta_windows", "meta_skipped")


def meta_keys(
    meta_net: Mapping[str, Tensor] | None,
    meta_optimizer: dict[str, Any] | None,
    version: int,
    *,
    windows: int = 0,
    skipped: int = 0,
) -> dict[str, Any]:
    """The :data:`META_KEYS` of an updater's state."""
    values = (meta_net, meta_optimizer, version, windows, skipped)
    return dict(zip(META_KEYS, values, strict=True))


@dataclass(frozen=True)
class InnerUpdate:
    """An inner update an outer step differentiates through: its batch, and (where the
    schedule recomputes it) theta and the optimizer state it started from."""

    batch: Batch
    params: Params | None = None
    opt_state: OptState | None = None


class MetaSchedule(ABC):
    """The pending inner updates of the next outer step, how it is taken, and eta.

    ``every`` k: of the windows that end (the moments an outer step is due), one in k
    gets it, the first included; ``sampler``: the columns a meta-gradient is taken on.
    """

    #: Inner steps keep their graph to eta (the outer step differentiates through them).
    create_graph: bool = False

    def __init__(
        self, num_inner_steps: int, every: int = 1, sampler: ColumnSampler | None = None
    ) -> None:
        self.num_inner_steps = num_inner_steps
        self.every = every
        self.sampler = sampler or ColumnSampler(1.0)
        self.pending: deque[InnerUpdate] = deque(maxlen=num_inner_steps)
        self.windows_ended = 0  # this session's window ends, stepped or not

    def outer_step_due(self) -> bool:
        """An outer step comes before the next inner step (M updates are pending)."""
        return len(self.pending) == self.num_inner_steps

    def meta_window(self) -> bool:
        """The window now in progress ends with an outer step (one in ``every``)."""
        return self.windows_ended % self.every == 0

    @abstractmethod
    def before_inner_step(
        self, held_out: Batch, params: Params, opt_state: OptState
    ) -> tuple[Params, OptState, Stats]:
        """The outer step due before the inner step on ``held_out``, if any: where training
        continues from, and the step's metrics."""

    @abstractmethod
    def record(self, batch: Batch, params: Params, opt_state: OptState) -> None:
        """An inner update on ``batch`` was taken from ``params`` and ``opt_state``."""

    @abstractmethod
    def inner_eta(self) -> dict[str, Tensor]:
        """eta as the inner loss sees it (with or without its graph)."""

    @property
    @abstractmethod
    def num_meta_updates(self) -> int:
        """eta's version: the meta steps taken over the whole run."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint holds of eta, as the updater's state has it (:data:`META_KEYS`:
        eta, its optimizer's state, its version, the async windows handed out and skipped)."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from an updater's state (the :data:`META_KEYS` of
        :meth:`~impala_frodo.rule.updater.Updater.state_dict`)."""

    def clear(self) -> None:
        """Forget the pending updates (a restored state starts a fresh window)."""
        self.pending.clear()


class NoMeta(MetaSchedule):
    """No meta-parameters: plain inner steps, never an outer step."""

    def before_inner_step(
        self, held_out: Batch, params: Params, opt_state: OptState
    ) -> tuple[Params, OptState, Stats]:
        return params, opt_state, {}

    def record(self, batch: Batch, params: Params, opt_state: OptState) -> None:
        pass

    def inner_eta(self) -> dict[str, Tensor]:
        return {}

    @property
    def num_meta_updates(self) -> int:
        return 0

    def state_dict(self) -> dict[str, Any]:
        return meta_keys(None, None, 0)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass
