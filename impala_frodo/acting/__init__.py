"""Acting: what a rollout actor runs and what it produces.

- :mod:`~impala_frodo.acting.unroll`: :class:`Unroller`, T steps of B envs under the
  behaviour policy mu, as one :class:`Trajectory`.
- :mod:`~impala_frodo.acting.trajectory`: :class:`Trajectory`, the time-major ``[T, B]``
  unit of experience that crosses Ray.
- :mod:`~impala_frodo.acting.evaluation`: whole episodes on evaluation seeds, scored or
  filmed (greedy or sampled actions).

numpy only: the rollout actors import this room and never import torch.
May import: ``envs``, ``networks`` (its numpy modules), ``utils``.
"""
