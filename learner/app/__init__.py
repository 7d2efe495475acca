"""The application: ``impala-frodo`` / ``python -m learner``.

- :mod:`~learner.app.cli`: the commands (train, eval, sweep, plot, presets).
- :mod:`~learner.app.evaluate`: ``eval``, a trained agent playing: scores and videos.
- :mod:`~learner.app.args`: the parser, and the config from the arguments;
  :mod:`~learner.app.checks`: the values no parser checks; :mod:`~learner.app.hints`:
  ``did you mean`` for an unknown option.
- :mod:`~learner.app.driver`: a training run set up and torn down (run directory,
  learner, Ray session, actors): :func:`~learner.app.driver.train`.
- :mod:`~learner.app.run_dir`: a session's run directory claimed (locked, checked, the
  checkpoint to resume loaded) before Ray starts.
- :mod:`~learner.app.preflight`: a run's sizes against memory before it starts; a refused
  start leaves no run directory.
- :mod:`~learner.app.sweep`: seeds of a config as parallel Ray tasks.
- :mod:`~learner.app.env_check`: is the env usable; :mod:`~learner.app.log_handler`: log
  lines that do not tear the progress bar.

May import every other room of ``learner``, ``actors`` and ``impala_frodo``.
"""
