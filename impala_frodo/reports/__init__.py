"""Reports: figures, tables and probes made from runs.

- :mod:`~impala_frodo.reports.plotting`: learning curves from run directories.
- :mod:`~impala_frodo.reports.analysis`: per-seed summaries (steps to 0.8, value errors).
- :mod:`~impala_frodo.reports.atari_summary`: human-normalised Atari tables and figures.
- :mod:`~impala_frodo.reports.probes`: errors against an env's true values, during training.
- :mod:`~impala_frodo.reports.evaluation`: a run's agent from its checkpoint, scored or filmed.
- :mod:`~impala_frodo.reports.video`: frames to GIF or MP4 (imageio).

The top room of the core: may import any other room of ``impala_frodo``; none imports it.
"""
