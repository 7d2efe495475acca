"""The application layer: the learner, the Ray driver and the command line.

- :mod:`learner.learner`: :class:`~learner.learner.Learner`, a plain class (no Ray).
- :mod:`learner.driver`: Ray, the rollout actors, the learner loop, shutdown.
- :mod:`learner.cli`: ``impala-frodo`` / ``python -m learner``.
"""
