"""Pixel pictures of Catch and the random walk, for their ``render_mode="rgb_array"``.

Both are drawn with numpy on a grid of square cells (:data:`CELL` pixels a side), as
uint8 ``[H, W, 3]`` RGB: what a video of the agent shows. The colours say what the text
render says with characters, and a finished episode shows its outcome: a Catch paddle
green when it caught the ball and red when it missed; a random-walk exit cell lit green
for a positive reward and red for a negative one.
"""

from __future__ import annotations

import numpy as np

#: Pixels per cell side.
CELL = 24
BACKGROUND = (24, 26, 33)
GRID = (44, 47, 58)
BALL = (250, 204, 21)
PADDLE = (96, 165, 250)
WIN = (74, 222, 128)
LOSS = (248, 113, 113)
STATE = (71, 85, 105)
AGENT = (250, 204, 21)
NEUTRAL = (148, 163, 184)


def _grid(rows: int, columns: int) -> np.ndarray:
    """A dark board of ``rows x columns`` cells with thin grid lines."""
    image = np.empty((rows * CELL, columns * CELL, 3), dtype=np.uint8)
    image[:] = GRID
    for r in range(rows):
        for c in range(columns):
            _fill(image, r, c, BACKGROUND, inset=1)
    return image


def _fill(
    image: np.ndarray, row: int, column: int, colour: tuple[int, int, int], inset: int
) -> None:
    """Paint cell ``(row, column)`` but a border of ``inset`` pixels."""
    y, x = row * CELL, column * CELL
    image[y + inset : y + CELL - inset, x + inset : x + CELL - inset] = colour


def _disc(image: np.ndarray, row: int, column: int, colour: tuple[int, int, int]) -> None:
    """A filled circle in cell ``(row, column)``."""
    yy, xx = np.mgrid[0:CELL, 0:CELL]
    centre = (CELL - 1) / 2
    inside = (yy - centre) ** 2 + (xx - centre) ** 2 <= (CELL * 0.36) ** 2
    y, x = row * CELL, column * CELL
    image[y : y + CELL, x : x + CELL][inside] = colour


def catch_picture(
    rows: int, columns: int, ball: tuple[int, int], paddle_x: int, outcome: float | None = None
) -> np.ndarray:
    """Catch's board: the ball ``(x, y)`` as a yellow disc, the paddle as a bar on the bottom
    row (green or red once ``outcome``, the terminal reward, is known)."""
    image = _grid(rows, columns)
    paddle = PADDLE if outcome is None else (WIN if outcome > 0 else LOSS)
    y, x = (rows - 1) * CELL, paddle_x * CELL
    image[y + CELL // 2 : y + CELL - 2, x + 1 : x + CELL - 1] = paddle
    ball_x, ball_y = ball
    _disc(image, ball_y, ball_x, BALL)
    return image


def random_walk_picture(num_states: int, state: int, left_reward: float) -> np.ndarray:
    """The walk: its states in a row between the two exit cells, the walker a yellow disc.

    ``state`` is -1 or ``num_states`` once the walk has left on that side; that exit cell is
    then lit by its reward: green for a positive one (the right exit's +1), red for a
    negative one, grey for 0.
    """
    image = _grid(1, num_states + 2)
    for s in range(num_states):
        _fill(image, 0, s + 1, STATE, inset=3)
    if state < 0:
        _fill(image, 0, 0, _outcome_colour(left_reward), inset=3)
    elif state >= num_states:
        _fill(image, 0, num_states + 1, _outcome_colour(1.0), inset=3)
    else:
        _disc(image, 0, state + 1, AGENT)
    return image


def _outcome_colour(reward: float) -> tuple[int, int, int]:
    return WIN if reward > 0 else LOSS if reward < 0 else NEUTRAL
