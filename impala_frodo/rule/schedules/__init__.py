"""Meta-schedules: when the outer step comes, what it differentiates through, and where
eta lives.

A schedule is built with what it uses (the objective, the inner rule, and its meta step
or its link to a meta-learner) and serves the :class:`~impala_frodo.rule.updater.Updater`
through one protocol, :class:`MetaSchedule`: before each inner step it takes the outer
step that is due (:meth:`~MetaSchedule.before_inner_step`), after it records the inner
update (:meth:`~MetaSchedule.record`); it says which eta the inner loss sees, whether an
inner step keeps its graph to eta, and what of eta a checkpoint holds.

- :class:`NoMeta`: nothing to meta-learn (IMPALA): plain inner steps, no outer step.
- :class:`ChainSchedule` (the paper's): M inner steps form one differentiable chain;
  the (M+1)-th batch is held out, the outer loss on it at theta_M is differentiated back
  to eta, theta_M is detached and the same batch starts the next chain.
- :class:`SampledChainSchedule` (``meta.batch_fraction`` < 1): the chain's windows with
  plain inner steps, the meta-gradient taken on a sample of the batch's columns by
  recomputing the window's steps on them from its start.
- :class:`SlidingSchedule`: plain inner steps; before each one, once M are recorded, an
  outer step on the new batch through the last M updates, recomputed differentiably
  from the parameters M updates ago with the current eta.
- :class:`WindowSchedule` (``meta.mode = "async"``): plain inner steps with eta
  detached; every M of them, with the next batch held out, form a window handed to a
  meta-learner through a :class:`~impala_frodo.rule.meta_learner.MetaLink`; the eta it
  sends back is installed here.

Every schedule takes its outer step in one window out of ``meta.every`` (the others'
inner steps keep no graph) and on the columns its :class:`ColumnSampler` draws.
The module ``base`` holds the protocol and :class:`NoMeta`, ``inline`` the schedules that
step eta in the learner's update, ``window`` the async one.

The chain and sliding schedules apply their meta-gradient through a
:class:`~impala_frodo.rule.meta_step.MetaStep`, as the async meta-learner does.
Adding a schedule adds a class and a line in :data:`SCHEDULES`.
"""

from __future__ import annotations

from collections.abc import Mapping

from impala_frodo.config.sections import MetaConfig
from impala_frodo.rule.algorithms import Objective
from impala_frodo.rule.batch import ColumnSampler
from impala_frodo.rule.meta_learner import MetaLink
from impala_frodo.rule.meta_step import MetaStep
from impala_frodo.rule.metagrad import InnerRule
from impala_frodo.rule.schedules.base import META_KEYS, InnerUpdate, MetaSchedule, NoMeta
from impala_frodo.rule.schedules.inline import (
    ChainSchedule,
    InlineSchedule,
    SampledChainSchedule,
    SlidingSchedule,
)
from impala_frodo.rule.schedules.window import WindowSchedule

__all__ = [
    "META_KEYS",
    "SCHEDULES",
    "ChainSchedule",
    "InlineSchedule",
    "InnerUpdate",
    "MetaSchedule",
    "NoMeta",
    "SampledChainSchedule",
    "SlidingSchedule",
    "WindowSchedule",
    "make_schedule",
]

#: The inline schedule of each ``meta.schedule``.
SCHEDULES: Mapping[str, type[InlineSchedule]] = {
    "chain": ChainSchedule,
    "sliding": SlidingSchedule,
}


def make_schedule(
    meta: MetaConfig,
    objective: Objective,
    inner: InnerRule,
    link: MetaLink | None = None,
    seed: int = 0,
    every: int = 1,
) -> MetaSchedule:
    """:class:`NoMeta` when the objective has nothing to meta-learn; in async mode a
    :class:`WindowSchedule` on ``link``; else ``meta.schedule``'s, with its meta step
    (the chain on a sample of columns: :class:`SampledChainSchedule`). ``seed`` seeds the
    column sampler of ``meta.batch_fraction``; ``every``: a meta step in one window of
    ``every`` (``meta.every`` as :meth:`~impala_frodo.config.schema.Config.meta_every`
    resolves it)."""
    meta_net = objective.meta_net
    if meta_net is None:
        return NoMeta(meta.num_inner_steps)
    sampler = ColumnSampler(meta.batch_fraction, seed)
    if meta.mode == "async":
        if link is None:
            raise ValueError("meta.mode = 'async' needs a link to a meta-learner")
        return WindowSchedule(meta.num_inner_steps, meta_net, link, every, sampler)
    meta_step = MetaStep(
        meta_net, lr=meta.lr, max_grad_norm=meta.max_grad_norm, reducer=inner.reducer
    )
    kind = SCHEDULES[meta.schedule]
    if kind is ChainSchedule and meta.batch_fraction < 1.0:
        kind = SampledChainSchedule
    return kind(meta.num_inner_steps, objective, inner, meta_step, every, sampler)
