"""The learner proper.

- :mod:`~learner.training.learner`: :class:`Learner`, a plain class: updates, logs,
  checkpoints, publishes weights.
- :mod:`~learner.training.books`: its books, the one owner of the run's counters, the
  history, the return window and the log and checkpoint cadence.
- :mod:`~learner.training.group`: N data-parallel learner processes on Ray, driven as one;
  :mod:`~learner.training.rank`: one of them, which fetches its own shard;
  :mod:`~learner.training.restarts` and :mod:`~learner.training.rewind`: lost ones replaced
  (every one lost: all restarted from the last checkpoint).
- :mod:`~learner.training.meta_actor`: the async meta-learner as a Ray actor.
- :mod:`~learner.training.evaluator`: evaluation during training, an actor of its own.
- :mod:`~learner.training.loop`: the distributed training loop and its stall watchdog.
- :mod:`~learner.training.sync`: the synchronous single-process trainer.
- :mod:`~learner.training.result`: stop reasons, each with its exit code, and results
  (made from the books by ``TrainResult.from_books``).

May import ``learner.control``, ``learner.cluster``, ``actors`` and ``impala_frodo``.
"""
