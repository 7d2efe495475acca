"""Configuration: a run's settings, validated on construction, and the named presets.

- :mod:`~impala_frodo.config.schema`: :class:`Config` (the whole), and building it from
  defaults, a file and dotted overrides (``merge``, ``set_dotted``, ``load_config``).
- :mod:`~impala_frodo.config.sections`: one dataclass per section (``env``, ``agent``,
  ``loss``, ``optim``, ``meta``, ``run``); parts of the system take the section they use.
- :mod:`~impala_frodo.config.checks`: the allowed values and the checks that say what to fix.
- :mod:`~impala_frodo.config.presets`: the named experiments (TOML files shipped beside it),
  and :mod:`~impala_frodo.config.presets.atari`, the generator of the Atari-57 presets.

Imports no torch (the actors read configs). May import: ``utils`` (and, for the Atari
presets' generator, the game list in ``envs``).
"""
