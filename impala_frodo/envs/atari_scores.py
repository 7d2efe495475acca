"""Atari-57: the games, and human-normalised scores from the standard reference scores.

The reference scores are the random-agent and human (professional game tester) episode
scores that DQN (Mnih et al. 2015, Nature) introduced and later papers completed for the
57 games of the Atari-57 benchmark (Defender, Phoenix, Pitfall, Skiing, Solaris, Surround,
Yars' Revenge and Berzerk added by van Hasselt et al. 2016 and Wang et al. 2016). The numbers
below are those of DeepMind's DQN Zoo (``dqn_zoo/atari_data.py``,
github.com/google-deepmind/dqn_zoo, Apache 2.0), the table Agent57, R2D2 and Muesli use:
each score is the mean undiscounted episode score of its agent, episodes starting with up to
30 no-op actions and capped at 108,000 frames (30 minutes).

A human-normalised score is ``(score - random) / (human - random)``: 0 is the random agent,
1 the human tester. Over several games the benchmark reports the median (and mean) of the
per-game normalised scores.

Games are named by the ALE's ROM id (``"pong"``, ``"ms_pacman"``); :func:`gym_name` gives
Gymnasium's CamelCase name (``"MsPacman"``, as in ``ALE/MsPacman-v5``) and
:func:`preset_game` the lower-case name the presets use (``atari-mspacman-frodo``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

#: ROM id -> (random score, human score). Source: DQN Zoo's ``atari_data.py`` (see above).
REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    "alien": (227.8, 7127.7),
    "amidar": (5.8, 1719.5),
    "assault": (222.4, 742.0),
    "asterix": (210.0, 8503.3),
    "asteroids": (719.1, 47388.7),
    "atlantis": (12850.0, 29028.1),
    "bank_heist": (14.2, 753.1),
    "battle_zone": (2360.0, 37187.5),
    "beam_rider": (363.9, 16926.5),
    "berzerk": (123.7, 2630.4),
    "bowling": (23.1, 160.7),
    "boxing": (0.1, 12.1),
    "breakout": (1.7, 30.5),
    "centipede": (2090.9, 12017.0),
    "chopper_command": (811.0, 7387.8),
    "crazy_climber": (10780.5, 35829.4),
    "defender": (2874.5, 18688.9),
    "demon_attack": (152.1, 1971.0),
    "double_dunk": (-18.6, -16.4),
    "enduro": (0.0, 860.5),
    "fishing_derby": (-91.7, -38.7),
    "freeway": (0.0, 29.6),
    "frostbite": (65.2, 4334.7),
    "gopher": (257.6, 2412.5),
    "gravitar": (173.0, 3351.4),
    "hero": (1027.0, 30826.4),
    "ice_hockey": (-11.2, 0.9),
    "jamesbond": (29.0, 302.8),
    "kangaroo": (52.0, 3035.0),
    "krull": (1598.0, 2665.5),
    "kung_fu_master": (258.5, 22736.3),
    "montezuma_revenge": (0.0, 4753.3),
    "ms_pacman": (307.3, 6951.6),
    "name_this_game": (2292.3, 8049.0),
    "phoenix": (761.4, 7242.6),
    "pitfall": (-229.4, 6463.7),
    "pong": (-20.7, 14.6),
    "private_eye": (24.9, 69571.3),
    "qbert": (163.9, 13455.0),
    "riverraid": (1338.5, 17118.0),
    "road_runner": (11.5, 7845.0),
    "robotank": (2.2, 11.9),
    "seaquest": (68.4, 42054.7),
    "skiing": (-17098.1, -4336.9),
    "solaris": (1236.3, 12326.7),
    "space_invaders": (148.0, 1668.7),
    "star_gunner": (664.0, 10250.0),
    "surround": (-10.0, 6.5),
    "tennis": (-23.8, -8.3),
    "time_pilot": (3568.0, 5229.2),
    "tutankham": (11.4, 167.6),
    "up_n_down": (533.4, 11693.2),
    "venture": (0.0, 1187.5),
    "video_pinball": (16256.9, 17667.9),
    "wizard_of_wor": (563.5, 4756.5),
    "yars_revenge": (3092.9, 54576.9),
    "zaxxon": (32.5, 9173.3),
}

#: The 57 games' ROM ids, sorted.
ATARI_57: tuple[str, ...] = tuple(sorted(REFERENCE_SCORES))


def gym_name(game: str) -> str:
    """ROM id -> Gymnasium's name: ``"ms_pacman"`` -> ``"MsPacman"`` (``ALE/MsPacman-v5``)."""
    return "".join(part.capitalize() for part in game.split("_"))


def preset_game(game: str) -> str:
    """ROM id -> the presets' name: ``"ms_pacman"`` -> ``"mspacman"``."""
    return game.replace("_", "")


#: Gymnasium's CamelCase name -> ROM id, for the 57 games.
GAMES_BY_GYM_NAME: dict[str, str] = {gym_name(g): g for g in ATARI_57}


def human_normalised(game: str, score: float) -> float:
    """``(score - random) / (human - random)`` for ``game`` (a ROM id or Gymnasium name)."""
    game = GAMES_BY_GYM_NAME.get(game, game)
    if game not in REFERENCE_SCORES:
        raise ValueError(
            f"no reference scores for Atari game {game!r}; the 57: {', '.join(ATARI_57)}"
        )
    random, human = REFERENCE_SCORES[game]
    return (float(score) - random) / (human - random)


def summarise(scores: Mapping[str, float]) -> dict[str, float]:
    """Median and mean human-normalised score over games, from raw scores by game.

    Returns ``{"median_hns", "mean_hns", "num_games"}``; NaN medians for no games.
    """
    values = sorted(human_normalised(game, s) for game, s in scores.items())
    return {
        "median_hns": _median(values),
        "mean_hns": sum(values) / len(values) if values else math.nan,
        "num_games": float(len(values)),
    }


def _median(values: Iterable[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return math.nan
    mid = n // 2
    return ordered[mid] if n % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])
