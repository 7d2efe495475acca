"""Catch (bsuite), as a Gymnasium environment.

The dynamics follow ``bsuite/environments/catch.py`` (DeepMind bsuite) exactly:

- reset: the ball starts on the top row (``ball_y = 0``) in a uniformly random column
  ``ball_x in [0, columns)``; the paddle starts on the bottom row (``paddle_y = rows - 1``)
  in column ``columns // 2``.
- step(a): the paddle moves by ``(-1, 0, +1)[a]`` (left, stay, right), clipped to the board;
  then the ball falls one row. When the ball reaches the paddle row the episode terminates with
  reward +1 if ``paddle_x == ball_x`` and -1 otherwise; every other step gives reward 0.
  Every episode therefore lasts exactly ``rows - 1`` steps.
- observation: a float32 ``[rows, columns]`` board, 1 at the ball and at the paddle, 0 elsewhere
  (a single 1 on the bottom row when the paddle caught the ball).

Desynchronised starts (``random_start_row=True``, not bsuite's): the *first* episode after
construction (or after ``reset(seed=...)``) drops its ball from a uniformly random row in
``[0, rows - 2]`` instead of the top row, so it lasts 1 to ``rows - 1`` steps; every later episode
is bsuite's. A batch of such envs then ends its episodes at different steps, and an unroll's last
episode is usually cut, so its targets must bootstrap (with lockstep starts and an unroll length
that is a multiple of ``rows - 1``, every unroll ends every episode and no bootstrap value is ever
used).

Differences from bsuite, all outside the dynamics: the start column is drawn from Gymnasium's
``self.np_random`` (so ``reset(seed=...)`` is reproducible) instead of a ``RandomState``, and
``step`` after the end of an episode raises instead of silently resetting.
"""

from __future__ import annotations

import numbers
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from impala_frodo.envs.pictures import catch_picture

#: The registered Gymnasium id.
ENV_ID = "impala_frodo/Catch-v0"

#: Paddle displacement for each action: left, stay, right (bsuite's ``_ACTIONS``).
ACTION_DELTAS: tuple[int, int, int] = (-1, 0, 1)


def validate_catch_args(rows: int, columns: int, random_start_row: bool = False) -> None:
    """Raise ``ValueError`` unless ``rows >= 2`` and ``columns >= 1`` are integers and
    ``random_start_row`` is a bool."""
    for name, value, minimum in (("rows", rows, 2), ("columns", columns, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{name} must be an int, got {value!r}")
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if not isinstance(random_start_row, bool | np.bool_):
        raise ValueError(f"random_start_row must be true or false, got {random_start_row!r}")


def catch_board(rows: int, columns: int, ball_xy: tuple[int, int], paddle_x: int) -> np.ndarray:
    """The observation: float32 ``[rows, columns]``, 1 at the ball ``(x, y)`` and the paddle."""
    board = np.zeros((rows, columns), dtype=np.float32)
    ball_x, ball_y = ball_xy
    board[ball_y, ball_x] = 1.0
    board[rows - 1, paddle_x] = 1.0
    return board


class Catch(gymnasium.Env[np.ndarray, np.int64]):
    """bsuite's Catch: move the paddle on the bottom row to catch a ball falling from the top.

    Args:
        rows: board height (>= 2); an episode lasts ``rows - 1`` steps. bsuite default 10.
        columns: board width (>= 1). bsuite default 5.
        random_start_row: drop the first episode's ball from a random row (desynchronised
            starts, see the module docstring). bsuite: ``False``.
        render_mode: ``None``, ``"ansi"`` (a text picture of the board) or ``"rgb_array"``
            (a pixel picture, :func:`~impala_frodo.envs.pictures.catch_picture`).

    Observation: float32 ``[rows, columns]`` in {0, 1}. Actions: ``Discrete(3)`` =
    left, stay, right. ``reset(options={"start_column": c})`` fixes the ball's start column
    (for tests and replays) instead of drawing it from ``self.np_random``.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 6}  # noqa: RUF012 (Gymnasium convention)

    def __init__(
        self,
        rows: int = 10,
        columns: int = 5,
        random_start_row: bool = False,
        render_mode: str | None = None,
    ) -> None:
        validate_catch_args(rows, columns, random_start_row)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be None or one of {self.metadata['render_modes']}, "
                f"got {render_mode!r}"
            )
        self.rows = int(rows)
        self.columns = int(columns)
        self.random_start_row = bool(random_start_row)
        self.render_mode = render_mode
        self._first_episode = True
        self.action_space = spaces.Discrete(len(ACTION_DELTAS))
        self.observation_space = spaces.Box(0.0, 1.0, (self.rows, self.columns), np.float32)
        self._ball_x = 0
        self._ball_y = 0
        self._paddle_x = self.columns // 2
        self._needs_reset = True
        self._outcome: float | None = None  # the terminal reward, once the episode ended

    @property
    def paddle_y(self) -> int:
        """The paddle's row (the bottom row); the episode ends when the ball reaches it."""
        return self.rows - 1

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode: ball on the top row, paddle centred on the bottom row.

        Returns the ``[rows, columns]`` observation and an empty info dict.
        """
        super().reset(seed=seed)
        if seed is not None:
            self._first_episode = True
        start_column = (options or {}).get("start_column")
        if start_column is None:
            self._ball_x = int(self.np_random.integers(self.columns))
        else:
            self._ball_x = self._check_start_column(start_column)
        self._ball_y = 0
        if self.random_start_row and self._first_episode:
            self._ball_y = int(self.np_random.integers(self.paddle_y))
        self._first_episode = False
        self._paddle_x = self.columns // 2
        self._needs_reset = False
        self._outcome = None
        return self._observation(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Move the paddle by ``(-1, 0, +1)[action]``, drop the ball one row.

        Returns ``(obs [rows, columns], reward in {-1, 0, 1}, terminated, False, {})``.
        """
        if self._needs_reset:
            raise RuntimeError("Catch.step() called before reset() or after the episode ended")
        if not self.action_space.contains(action):
            raise ValueError(f"action must be 0, 1 or 2 (left, stay, right), got {action!r}")
        delta = ACTION_DELTAS[int(action)]
        self._paddle_x = min(max(self._paddle_x + delta, 0), self.columns - 1)
        self._ball_y += 1
        terminated = self._ball_y == self.paddle_y
        reward = 0.0
        if terminated:
            reward = 1.0 if self._paddle_x == self._ball_x else -1.0
            self._needs_reset = True
            self._outcome = reward
        return self._observation(), reward, terminated, False, {}

    def render(self) -> str | np.ndarray | None:
        """The board as text (``render_mode="ansi"``: ``o`` ball, ``=`` paddle) or as uint8
        ``[H, W, 3]`` pixels (``"rgb_array"``; the paddle green or red once the ball landed)."""
        if self.render_mode == "rgb_array":
            ball = (self._ball_x, self._ball_y)
            return catch_picture(self.rows, self.columns, ball, self._paddle_x, self._outcome)
        if self.render_mode != "ansi":
            return None
        chars = np.full((self.rows, self.columns), ".")
        chars[self.paddle_y, self._paddle_x] = "="
        chars[self._ball_y, self._ball_x] = "o"
        return "\n".join("".join(row) for row in chars) + "\n"

    def _observation(self) -> np.ndarray:
        return catch_board(self.rows, self.columns, (self._ball_x, self._ball_y), self._paddle_x)

    def _check_start_column(self, column: Any) -> int:
        if isinstance(column, bool) or not isinstance(column, numbers.Integral):
            raise ValueError(f"start_column must be an int, got {column!r}")
        if not 0 <= column < self.columns:
            raise ValueError(f"start_column must be in [0, {self.columns}), got {column}")
        return int(column)
