"""The meta-learner of ``meta.mode = "async"``: FRODO's outer step beside the learner.

In async mode the learner takes first-order inner steps only (no graph to eta), with the
newest eta it has. Every M inner steps it hands a :class:`MetaWindow` to a
:class:`MetaLearner`: theta and the inner optimizer's state at the window's start, the
window's M batches and the held-out batch (the next one, which also starts the next
window, as in the chain schedule). The meta-learner recomputes the M inner steps
differentiably with *its* current eta (:func:`~impala_frodo.rule.metagrad.meta_gradient`),
differentiates the outer loss on the held-out batch to eta, clips the meta-gradient
(``meta.max_grad_norm``), takes an Adam step on eta and returns an :class:`EtaUpdate`
(its version, the window it came from, and its whole state: eta and Adam's moments, so
that the learner's checkpoints carry them without asking).

**Exact when it keeps up.** When the learner waits for each new eta before the next
window's first inner step (lock-step), its first-order steps use the same eta as the
meta-learner's recomputation, so the recomputed theta_M is the learner's theta_M and
theta and eta follow the chain schedule's to rounding error (tests/test_meta_learner.py).

A :class:`MetaLink` is how the learner's :class:`~impala_frodo.rule.updater.Updater` talks
to a meta-learner: ``send(window)`` and a non-blocking ``poll()``. :class:`InProcessLink`
calls a plain :class:`MetaLearner` here (the synchronous trainer and the tests), in
lock-step or with eta delivered ``meta.delay_windows`` windows late;
``learner/training/meta_actor.py`` runs it as a Ray actor.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from impala_frodo.config.schema import Config
from impala_frodo.networks.agent import AgentNet
from impala_frodo.rule.algorithms import make_objective
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.metagrad import (
    OptState,
    Params,
    clip_by_global_norm,
    make_inner_optimizer,
    meta_gradient,
)


class MetaLearnerError(RuntimeError):
    """The meta-learner died, failed or stopped answering: the run must stop."""


def batch_to(batch: Batch, device: torch.device | str) -> Batch:
    """``batch`` with every tensor on ``device`` (itself if they are there already)."""
    changes = {
        f.name: getattr(batch, f.name).to(device)
        for f in dataclasses.fields(batch)
        if isinstance(getattr(batch, f.name), Tensor)
    }
    return dataclasses.replace(batch, **changes)


@dataclass
class MetaWindow:
    """One window of M inner updates and its held-out batch, as the learner took them."""

    index: int  # windows the learner handed out before this one
    params: Params  # theta at the window's start (detached)
    opt_state: OptState  # the inner optimizer's state there
    batches: list[Batch]  # tau_1 .. tau_M, each [T, B]
    held_out: Batch  # tau', [T, B]: the next window's first batch

    def to(self, device: torch.device | str) -> MetaWindow:
        """A copy with every tensor on ``device`` (CPU to cross processes)."""
        return MetaWindow(
            index=self.index,
            params={k: v.detach().to(device) for k, v in self.params.items()},
            opt_state={k: v.detach().to(device) for k, v in self.opt_state.items()},
            batches=[batch_to(b, device) for b in self.batches],
            held_out=batch_to(self.held_out, device),
        )


@dataclass
class EtaUpdate:
    """A new eta from the meta-learner."""

    version: int  # the meta-learner's meta steps so far: eta's version
    window: int  # the window it was computed on (MetaWindow.index)
    #: :meth:`MetaLearner.state_dict` after the step: eta, Adam's state, the version.
    state: dict[str, Any]
    stats: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0  # the meta step's compute time in the meta-learner


class MetaLearner:
    """eta, Adam on eta, and the meta step on one window (a plain class; no Ray)."""

    def __init__(
        self,
        cfg: Config,
        obs_shape: Sequence[int],
        num_actions: int,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if not cfg.is_meta:
            raise ValueError(f"algo {cfg.algo!r} has no meta-parameters to learn")
        self.cfg = cfg
        self.device = torch.device(device)
        # Its own networks, built without moving the caller's RNG: eta is loaded after.
        with torch.random.fork_rng(devices=[]):
            self.agent = AgentNet.from_config(obs_shape, num_actions, cfg.agent)
            self.objective = make_objective(cfg, self.agent, obs_shape)
        self.agent.to(device=self.device, dtype=dtype)
        self.meta_net = self.objective.meta_net
        assert self.meta_net is not None
        self.meta_net.to(device=self.device, dtype=dtype)
        self.optimizer = make_inner_optimizer(cfg.optim)
        self.meta_optimizer = torch.optim.Adam(self.meta_net.parameters(), lr=cfg.meta.lr)
        self.version = 0  # meta steps taken (over the whole run)

    @property
    def eta(self) -> dict[str, Tensor]:
        return dict(self.meta_net.named_parameters())

    def step(self, window: MetaWindow) -> EtaUpdate:
        """Recompute the window's inner steps with this eta, take the meta step, return eta."""
        start = time.perf_counter()
        window = window.to(self.device)
        eta = self.eta
        result = meta_gradient(
            window.params,
            window.opt_state,
            eta,
            window.batches,
            window.held_out,
            self.optimizer,
            lambda p, b: self.objective.inner_loss(p, eta, b),
            lambda p, b, inner: self.objective.outer_loss(p, eta, b, inner),
            max_grad_norm=self.cfg.optim.max_grad_norm,
        )
        _check_finite("outer loss", result.outer_loss)
        grads, norm = clip_by_global_norm(
            list(result.eta_grads.values()), self.cfg.meta.max_grad_norm
        )
        _check_finite("meta-gradient", norm)
        for p, g in zip(eta.values(), grads, strict=True):
            p.grad = g
        self.meta_optimizer.step()
        self.meta_optimizer.zero_grad(set_to_none=True)
        self.version += 1
        stats = {k: float(v) for k, v in result.outer_aux.items()}
        stats |= {"loss/outer": float(result.outer_loss), "meta/grad_norm": float(norm)}
        return EtaUpdate(
            version=self.version,
            window=window.index,
            state=self.state_dict(),
            stats=stats,
            seconds=time.perf_counter() - start,
        )

    def state_dict(self) -> dict[str, Any]:
        """Copies (not views) of eta and Adam's state, and the version."""
        return {
            "meta_net": {k: v.detach().clone() for k, v in self.meta_net.state_dict().items()},
            "meta_optimizer": copy.deepcopy(self.meta_optimizer.state_dict()),
            "version": self.version,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.meta_net.load_state_dict(state["meta_net"])
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])
        self.version = int(state["version"])

    def ready(self) -> bool:
        """True: it is constructed (a start-up check for a remote meta-learner)."""
        return True


def _check_finite(what: str, value: Tensor) -> None:
    if not torch.isfinite(value).all():
        # Imported here: the updater imports this module.
        from impala_frodo.rule.updater import NonFiniteLossError

        raise NonFiniteLossError(f"meta-learner: {what} is not finite ({value.item()}): stopping")


class MetaLink(Protocol):
    """Where an async learner's windows go and its new etas come from.

    ``send`` never waits long; ``poll`` never waits: a new eta, or ``None``.
    ``skipped``: windows dropped because the meta-learner was behind.
    """

    skipped: int

    def send(self, window: MetaWindow) -> None: ...

    def poll(self) -> EtaUpdate | None: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class InProcessLink:
    """A plain :class:`MetaLearner` called in this process at ``send``.

    ``delay_windows = 0`` is lock-step: the eta of a window is there at the next ``poll``,
    before the learner's next inner step. ``delay_windows = d`` holds each eta back until
    d more windows have been sent: a model of a meta-learner that keeps up but lags.
    """

    def __init__(self, meta_learner: MetaLearner, delay_windows: int = 0) -> None:
        self.meta_learner = meta_learner
        self.delay_windows = delay_windows
        self.skipped = 0
        self._done: deque[EtaUpdate] = deque()

    def send(self, window: MetaWindow) -> None:
        self._done.append(self.meta_learner.step(window))

    def poll(self) -> EtaUpdate | None:
        return self._done.popleft() if len(self._done) > self.delay_windows else None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Start from ``state`` (a resumed learner's); etas not delivered yet are dropped."""
        self.meta_learner.load_state_dict(state)
        self._done.clear()

    def close(self) -> None:
        self._done.clear()
