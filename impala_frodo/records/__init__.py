"""Run records: what a run leaves on disk and reads back.

- :mod:`~impala_frodo.records.runlog`: the run directory, ``metrics.jsonl`` and TensorBoard.
- :mod:`~impala_frodo.records.checkpoint`: checkpoints written atomically, loaded safely.
- :mod:`~impala_frodo.records.intervals`: per-interval means for each log record.

May import: ``config``, ``utils``.
"""
