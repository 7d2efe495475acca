"""The application layer: the learner, the Ray driver and the command line.

- :mod:`learner.learner`: :class:`~learner.learner.Learner`, a plain class (no Ray).
- :mod:`learner.ray_session`: join a Ray cluster, or start and stop a local one.
- :mod:`learner.reaper`: no process of a local Ray instance outlives its driver.
- :mod:`learner.actor_pool`: the rollout actors, their calls in flight (the queue),
  weight publication and actor faults.
- :mod:`learner.driver`: a training run set up and torn down (run directory, learner,
  Ray session, actors): :func:`~learner.driver.train`.
- :mod:`learner.loop`: the training loop and its stall watchdog.
- :mod:`learner.signals`: SIGINT/SIGTERM (a graceful stop, then an abort).
- :mod:`learner.result`: stop reasons, each with its exit code, and the run's result.
- :mod:`learner.exit_codes`: the exit codes and their description.
- :mod:`learner.progress`: the progress bar, or plain progress lines in a log.
- :mod:`learner.sweep`: seeds of a config as parallel Ray tasks.
- :mod:`learner.cli`: ``impala-frodo`` / ``python -m learner``: the commands;
  :mod:`learner.cli_args`: its parser and the config from its arguments;
  :mod:`learner.env_check`: is the env usable; :mod:`learner.log_handler`: log lines
  that do not tear the progress bar.
"""
