"""The Ray edge: the session (:mod:`~learner.cluster.session`), a local instance's start,
health and stop (:mod:`~learner.cluster.local_instance`), the rollout actors and their
calls in flight (:mod:`~learner.cluster.actor_pool`; its per-actor bookkeeping:
:mod:`~learner.cluster.slots`), what crosses Ray between them and
the learners (:mod:`~learner.cluster.payloads`: unrolls by reference, packed weights), and
the reaper that leaves no
process of a local instance behind (:mod:`~learner.cluster.reaper`).

May import ``learner.control``, ``actors`` and ``impala_frodo``.
"""
