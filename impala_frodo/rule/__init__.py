"""The learning rule: from a batch of trajectories to new parameters theta and eta.

- :mod:`~impala_frodo.rule.vtrace`: V-trace targets and advantages (Espeholt et al. 2018).
- :mod:`~impala_frodo.rule.objectives`: the inner and outer losses (the learned target,
  the canonical actor-critic loss, the extension's weighted term).
- :mod:`~impala_frodo.rule.algorithms`: IMPALA, FRODO, the extension and MGRL as an
  inner objective, an outer objective and meta-parameters.
- :mod:`~impala_frodo.rule.metagrad`: differentiable inner steps and the meta-gradient
  through them.
- :mod:`~impala_frodo.rule.schedules`: which inner steps a meta-gradient flows through
  (chain, sliding, or windows handed to an async meta-learner).
- :mod:`~impala_frodo.rule.meta_learner`: the meta step (eta, its optimizer, the clip and
  the finite check) and the async meta-learner built on it.
- :mod:`~impala_frodo.rule.updater`: :class:`Updater`, one update of the learner.
- :mod:`~impala_frodo.rule.data_parallel`: gradients averaged over N learners, exactly.
- :mod:`~impala_frodo.rule.batch`: :class:`Batch`, the learner's ``[T, B]`` tensors.

May import: ``config``, ``networks``, ``acting`` (the trajectory format), ``utils``.
"""
