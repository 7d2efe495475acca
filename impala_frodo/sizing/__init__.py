"""Sizing: what a run's sizes ask of memory, process by process, before it starts.

- :mod:`~impala_frodo.sizing.memory`: :func:`run_memory`, the bytes of an actor, the queue,
  a learner, the global batch and the async meta-learner (lower bounds), from the config
  and the env's observation shape.
- :mod:`~impala_frodo.sizing.parameters`: the networks' parameter counts, from the networks
  built on PyTorch's meta device (eta as the algorithm's objective builds it).

Pure functions; the check against a machine is the application's
(:mod:`learner.app.preflight`). May import: ``config``, ``networks``, ``rule``, ``utils``.
"""
