"""The learner and the application around it, in four rooms.

- ``learner.control``: how a run is steered and how it ends for the user: signals,
  the progress display, exit codes. Imports no other room of ``learner``.
- ``learner.cluster``: the Ray edge: the session (join or start Ray), the rollout actors'
  pool, the reaper of a local instance. May import ``control``.
- ``learner.training``: the learner proper: :class:`~learner.training.learner.Learner`
  (a plain class), its books, the learner group, the async meta-learner's actor, the
  training loop, the synchronous trainer, stop reasons and results. May import
  ``control`` and ``cluster``.
- ``learner.app``: the command line (``impala-frodo`` / ``python -m learner``), its
  arguments, the driver that sets a run up and tears it down, sweeps. May import all.
"""
