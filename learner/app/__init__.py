"""The application: ``impala-frodo`` / ``python -m learner``.

- :mod:`~learner.app.cli`: the commands (train, sweep, plot, presets).
- :mod:`~learner.app.args`: the parser, and the config from the arguments.
- :mod:`~learner.app.driver`: a training run set up and torn down (run directory,
  learner, Ray session, actors): :func:`~learner.app.driver.train`.
- :mod:`~learner.app.preflight`: a run's sizes against memory before it starts; a refused
  start leaves no run directory.
- :mod:`~learner.app.sweep`: seeds of a config as parallel Ray tasks.
- :mod:`~learner.app.env_check`: is the env usable; :mod:`~learner.app.log_handler`: log
  lines that do not tear the progress bar.

May import every other room of ``learner``, ``actors`` and ``impala_frodo``.
"""
