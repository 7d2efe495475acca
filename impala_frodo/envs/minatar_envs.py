"""MinAtar (Young & Tian 2019) through Gymnasium: the optional ``minatar`` extra.

The ``minatar`` package defines Gymnasium envs for its five games but registers their ids
only when ``minatar.gym.register_envs()`` is called; :func:`register_minatar_envs` does that
once, on the first use of an id ``MinAtar/<Game>-v0`` (all 6 actions, as in MinAtar's paper)
or ``-v1`` (each game's minimal action set). Observations are bool ``[10, 10, C]``, one
channel per object kind; ``sticky_action_prob`` (default 0.1) and ``difficulty_ramping``
(default true) are passed through ``env.kwargs``. Importing this module does not import
``minatar`` (it pulls in matplotlib and seaborn).
"""

from __future__ import annotations

import importlib.util
import os
import warnings

import gymnasium

PREFIX = "MinAtar/"
#: The Gymnasium names of MinAtar's games and their channel counts C.
GAMES = {"Asterix": 4, "Breakout": 4, "Freeway": 7, "Seaquest": 10, "SpaceInvaders": 6}
INSTALL_HINT = "pip install 'impala-frodo[minatar]' (python3 run.py installs it)"
#: Set (to "1") in the worker processes of a local Ray instance: notes the driver has shown
#: once are not printed again by each of them.
WORKER_ENV = "IMPALA_FRODO_WORKER"


def is_minatar_id(env_id: str) -> bool:
    return env_id.startswith(PREFIX)


def minatar_installed() -> bool:
    return importlib.util.find_spec("minatar") is not None


def register_minatar_envs() -> None:
    """Register MinAtar's Gymnasium ids unless they already are; a ``ValueError`` with the
    install command if the package is missing."""
    if f"{PREFIX}Breakout-v0" in gymnasium.registry:
        return
    if not minatar_installed():
        raise ValueError(f"MinAtar envs need the minatar package: {INSTALL_HINT}")
    from minatar import gym as minatar_gym

    minatar_gym.register_envs()
    if os.environ.get(WORKER_ENV) == "1":
        # Gymnasium's note that -v1 exists (the presets take -v0 on purpose: all 6 actions,
        # as in MinAtar's paper): the driver has shown it, the actors need not repeat it.
        warnings.filterwarnings("ignore", r".*MinAtar/\S+ is out of date", DeprecationWarning)
