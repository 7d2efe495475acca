"""The meta-learner of ``meta.mode = "async"``: FRODO's outer step beside the learner.

In async mode the learner takes first-order inner steps only (no graph to eta), with the
newest eta it has. Every M inner steps it hands a :class:`MetaWindow` to a
:class:`MetaLearner`: theta and the inner optimizer's state at the window's start, the
window's M batches and the held-out batch (the next one, which also starts the next
window, as in the chain schedule). The meta-learner recomputes the M inner steps
differentiably with *its* current eta (:func:`~impala_frodo.rule.metagrad.meta_gradient`),
differentiates the outer loss on the held-out batch to eta, applies it through its
:class:`~impala_frodo.rule.meta_step.MetaStep` (the same step the inline schedules take)
and returns an :class:`EtaUpdate` (its version, the window it came from, and its whole
state: eta and Adam's moments, so that the learner's checkpoints carry them without
asking).

**Exact when it keeps up.** When the learner waits for each new eta before the next
window's first inner step (lock-step), its first-order steps use the same eta as the
meta-learner's recomputation, so the recomputed theta_M is the learner's theta_M and
theta and eta follow the chain schedule's to rounding error (tests/test_meta_learner.py).

A :class:`MetaLink` is how the learner's window schedule
(:class:`~impala_frodo.rule.schedules.WindowSchedule`) talks to a meta-learner:
``send(window)``, a non-blocking ``poll()``, and ``load_state_dict`` to (re)start it from
the learner's eta. :class:`InProcessLink` calls a plain :class:`MetaLearner` here (the
synchronous trainer and the tests), in lock-step or with eta delivered
``meta.delay_windows`` windows late; ``learner/training/meta_actor.py`` runs it as a Ray
actor.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from impala_frodo.config.schema import Config
from impala_frodo.networks.agent import AgentNet
from impala_frodo.rule.algorithms import Objective, make_objective
from impala_frodo.rule.batch import Batch
from impala_frodo.rule.meta_step import MetaStep
from impala_frodo.rule.metagrad import (
    InnerRule,
    OptState,
    Params,
    make_inner_optimizer,
    meta_gradient,
)


class MetaLearnerError(RuntimeError):
    """The meta-learner failed, or was lost past what may be replaced: the run must stop."""


class MetaLearnerLost(MetaLearnerError):
    """The meta-learner's process died or stopped answering: a new one may replace it
    (:meth:`MetaLink.restart`), as a new process is not lost the same way. A meta step that
    raises is a :class:`MetaLearnerError` of its own: a replacement would raise again."""


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
            batches=[b.to(device) for b in self.batches],
            held_out=self.held_out.to(device),
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
    """The meta step on one window: the window's inner steps recomputed differentiably with
    this eta, and the outer loss's gradient applied to eta (a plain class; no Ray).

    ``objective``: the algorithm's losses (its meta-network is ``meta_step``'s);
    ``inner``: how the inner steps are taken (the learner's optimizer and clip).
    """

    def __init__(self, objective: Objective, inner: InnerRule, meta_step: MetaStep) -> None:
        self.objective = objective
        self.inner = inner
        self.meta_step = meta_step

    @classmethod
    def build(
        cls,
        cfg: Config,
        obs_shape: Sequence[int],
        num_actions: int,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> MetaLearner:
        """The meta-learner of ``cfg``'s algorithm, with networks of its own (built without
        moving the caller's RNG: its eta is loaded after, from the learner's)."""
        if not cfg.is_meta:
            raise ValueError(f"algo {cfg.algo!r} has no meta-parameters to learn")
        with torch.random.fork_rng(devices=[]):
            agent = AgentNet.from_config(obs_shape, num_actions, cfg.agent)
            objective = make_objective(cfg, agent, obs_shape)
        assert objective.meta_net is not None
        agent.to(device=device, dtype=dtype)
        objective.meta_net.to(device=device, dtype=dtype)
        inner = InnerRule(make_inner_optimizer(cfg.optim), cfg.optim.max_grad_norm)
        meta_step = MetaStep(
            objective.meta_net,
            lr=cfg.meta.lr,
            max_grad_norm=cfg.meta.max_grad_norm,
            label="meta-learner: ",
        )
        return cls(objective, inner, meta_step)

    @property
    def device(self) -> torch.device:
        return next(iter(self.meta_step.eta.values())).device

    @property
    def version(self) -> int:
        return self.meta_step.version

    def step(self, window: MetaWindow) -> EtaUpdate:
        """Recompute the window's inner steps with this eta, take the meta step, return eta."""
        start = time.perf_counter()
        window = window.to(self.device)
        eta = self.meta_step.eta
        result = meta_gradient(
            window.params,
            window.opt_state,
            eta,
            window.batches,
            window.held_out,
            self.inner.optimizer,
            lambda p, b: self.objective.inner_loss(p, eta, b),
            lambda p, b, inner: self.objective.outer_loss(p, eta, b, inner),
            max_grad_norm=self.inner.max_grad_norm,
        )
        norm = self.meta_step.apply(list(result.eta_grads.values()), result.outer_loss)
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
        return self.meta_step.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.meta_step.load_state_dict(state)


class MetaLink(Protocol):
    """Where an async learner's windows go and its new etas come from.

    ``load_state_dict`` (re)starts the meta-learner from the learner's eta; ``send``
    never waits long; ``poll`` never waits: a new eta, or ``None`` (or
    :class:`MetaLearnerLost`, when ``restart`` from the learner's eta may replace it).
    ``skipped``: windows dropped because the meta-learner was behind; ``dropped``: windows
    lost with a lost meta-learner. ``restart_stats``: the link's restart metrics (none
    where nothing restarts).
    """

    skipped: int
    dropped: int

    def send(self, window: MetaWindow) -> None: ...

    def poll(self) -> EtaUpdate | None: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def restart(self, state: dict[str, Any], lost: MetaLearnerLost) -> None: ...

    def restart_stats(self) -> dict[str, float]: ...

    def close(self) -> None: ...


#: Builds a meta-learner for eta of this dtype on this device.
MetaLearnerFactory = Callable[[torch.dtype, torch.device], MetaLearner]


class InProcessLink:
    """A plain :class:`MetaLearner` called in this process at ``send``.

    The meta-learner is built at the first ``send``, in the dtype and on the device of
    the window it gets, and starts from the last state loaded. ``delay_windows = 0`` is
    lock-step: the eta of a window is there at the next ``poll``, before the learner's
    next inner step. ``delay_windows = d`` holds each eta back until d more windows have
    been sent: a model of a meta-learner that keeps up but lags.
    """

    def __init__(self, factory: MetaLearnerFactory, delay_windows: int = 0) -> None:
        self.factory = factory
        self.delay_windows = delay_windows
        self.skipped = self.dropped = 0
        self.meta_learner: MetaLearner | None = None
        self._start_state: dict[str, Any] | None = None
        self._done: deque[EtaUpdate] = deque()

    def send(self, window: MetaWindow) -> None:
        if self.meta_learner is None:
            param = next(iter(window.params.values()))
            self.meta_learner = self.factory(param.dtype, param.device)
            if self._start_state is not None:
                self.meta_learner.load_state_dict(self._start_state)
        self._done.append(self.meta_learner.step(window))

    def poll(self) -> EtaUpdate | None:
        return self._done.popleft() if len(self._done) > self.delay_windows else None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Start from ``state`` (a resumed learner's); etas not delivered yet are dropped."""
        if self.meta_learner is None:
            self._start_state = state
        else:
            self.meta_learner.load_state_dict(state)
        self._done.clear()

    def restart(self, state: dict[str, Any], lost: MetaLearnerLost) -> None:
        """Never called: a meta-learner in this process is never lost on its own."""
        raise lost

    def restart_stats(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        self._done.clear()
