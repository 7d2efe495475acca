"""The async mode's schedule: windows handed to a meta-learner beside the learner."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from impala_frodo.rule.batch import Batch, ColumnSampler
from impala_frodo.rule.meta_learner import EtaUpdate, MetaLearnerLost, MetaLink, MetaWindow
from impala_frodo.rule.metagrad import OptState, Params
from impala_frodo.rule.schedules.base import InnerUpdate, MetaSchedule, Stats, meta_keys


class WindowSchedule(MetaSchedule):
    """The chain schedule's windows without its graph, for a meta-learner beside the
    learner: plain inner steps with eta detached; every M of them, with the next batch
    held out, sent through ``link``; each eta that comes back installed in ``meta_net``.

    The learner holds eta and the meta-learner's last state (for checkpoints), never an
    optimizer of its own. The link starts from the learner's eta when the first window's
    exchange begins, again from a restored state, and a lost meta-learner's replacement
    from the learner's eta and state of that moment (the learner goes on with its eta).
    """

    def __init__(
        self,
        num_inner_steps: int,
        meta_net: nn.Module,
        link: MetaLink,
        every: int = 1,
        sampler: ColumnSampler | None = None,
    ) -> None:
        super().__init__(num_inner_steps, every, sampler)
        self.meta_net = meta_net
        self.link = link
        self.windows = 0  # windows handed out, over the whole run
        self.skipped_before = 0  # windows skipped in earlier sessions
        self.dropped_before = 0  # windows lost with a meta-learner in earlier sessions
        self._optimizer_state: dict[str, Any] | None = None  # the meta-learner's, last seen
        self._version = 0
        self._link_started = False

    def before_inner_step(
        self, held_out: Batch, params: Params, opt_state: OptState
    ) -> tuple[Params, OptState, Stats]:
        """Hand out the completed window (``held_out`` is its held-out batch), then install
        a new eta if one has come back: in lock-step, this window's, before
        ``held_out``'s inner step, as the chain schedule has it."""
        if not self._link_started:
            self._start_link()
        if self.outer_step_due():
            if self.meta_window():
                self.link.send(self.take_window(held_out))
            else:
                self.pending.clear()
            self.windows_ended += 1
        update = self._poll()
        stats = {
            "meta/skipped_windows": torch.tensor(float(self.skipped)),
            "meta/dropped_windows": torch.tensor(float(self.dropped)),
        }
        stats |= {k: torch.tensor(v) for k, v in self.link.restart_stats().items()}
        if update is not None:
            stats |= self.install(update)
        return params, opt_state, stats

    def _poll(self) -> EtaUpdate | None:
        """The link's new eta, if any. A lost meta-learner is replaced from the learner's
        own eta and state (what a checkpoint would hold), which the learner keeps using
        until the new one's first eta comes."""
        try:
            return self.link.poll()
        except MetaLearnerLost as lost:
            self.link.restart(self.meta_state(), lost)
            return None

    def record(self, batch: Batch, params: Params, opt_state: OptState) -> None:
        keep = not self.pending  # only the window's start is recomputed from
        self.pending.append(
            InnerUpdate(batch, params if keep else None, opt_state if keep else None)
        )

    def take_window(self, held_out: Batch) -> MetaWindow:
        """The window of the last M inner updates with ``held_out`` (on the sampler's
        columns); a new one starts."""
        first = self.pending[0]
        assert first.params is not None and first.opt_state is not None
        columns = self.sampler(held_out.shape[1])
        batches = [self.sampler.take(update.batch, columns) for update in self.pending]
        held_out = self.sampler.take(held_out, columns)
        self.pending.clear()
        window = MetaWindow(self.windows, first.params, first.opt_state, batches, held_out)
        self.windows += 1
        return window

    def install(self, update: EtaUpdate) -> Stats:
        """Take the meta-learner's eta and state; its metrics, with the meta lag (windows
        handed out since the one it was computed on)."""
        self.meta_net.load_state_dict(update.state["meta_net"])
        self._optimizer_state = update.state["meta_optimizer"]
        self._version = update.version
        stats = {k: torch.tensor(v) for k, v in update.stats.items()}
        stats["meta/lag"] = torch.tensor(float(self.windows - update.window - 1))
        stats["perf/meta_step_s"] = torch.tensor(update.seconds)
        return stats

    def inner_eta(self) -> dict[str, Tensor]:
        """eta detached: the learner's steps are first-order, no graph to eta is built."""
        return {k: v.detach() for k, v in self.meta_net.named_parameters()}

    @property
    def num_meta_updates(self) -> int:
        return self._version

    @property
    def skipped(self) -> int:
        """Windows skipped because the meta-learner was behind, over the whole run."""
        return self.skipped_before + self.link.skipped

    @property
    def dropped(self) -> int:
        """Windows lost with a lost meta-learner (in its hands or waiting), over the run."""
        return self.dropped_before + self.link.dropped

    def meta_state(self) -> dict[str, Any]:
        """eta, the meta-learner's optimizer state as last received (``None`` before the
        first) and eta's version: what a meta-learner starts from."""
        return {
            "meta_net": self.meta_net.state_dict(),
            "meta_optimizer": self._optimizer_state,
            "version": self._version,
        }

    def state_dict(self) -> dict[str, Any]:
        return meta_keys(
            self.meta_net.state_dict(),
            self._optimizer_state,
            self._version,
            windows=self.windows,
            skipped=self.skipped,
        ) | {"meta_dropped": self.dropped}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.meta_net.load_state_dict(state["meta_net"])
        self._optimizer_state = state["meta_optimizer"]
        self._version = int(state["num_meta_updates"])
        self.windows = int(state.get("meta_windows", 0))
        self.skipped_before = int(state.get("meta_skipped", 0)) - self.link.skipped
        self.dropped_before = int(state.get("meta_dropped", 0)) - self.link.dropped
        self._start_link()

    def _start_link(self) -> None:
        self.link.load_state_dict(self.meta_state())
        self._link_started = True
