"""The application layer: the learner, the Ray driver and the command line.

- :mod:`learner.learner`: :class:`~learner.learner.Learner`, a plain class (no Ray).
- :mod:`learner.ray_session`: join a Ray cluster, or start and stop a local one.
- :mod:`learner.actor_pool`: the rollout actors, their calls in flight (the queue),
  weight publication and actor faults.
- :mod:`learner.driver`: the training loop: learner, actors, signals, shutdown.
- :mod:`learner.progress`: the progress bar, or plain progress lines in a log.
- :mod:`learner.sweep`: seeds of a config as parallel Ray tasks.
- :mod:`learner.cli`: ``impala-frodo`` / ``python -m learner``.
"""
