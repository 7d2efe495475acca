"""Sizing: what a run's sizes ask of memory, process by process, before it starts.

- :mod:`~impala_frodo.sizing.memory`: :func:`run_memory`, the bytes of an actor, the queue,
  a learner, the global batch and the async meta-learner (lower bounds), from the config
  and the env's observation shape.

Pure functions; the check against a machine is the application's
(:mod:`learner.app.preflight`). May import: ``config``, ``networks``, ``utils``.
"""
