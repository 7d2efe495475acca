"""The non-stationary 5-state random walk (a prediction task; DESIGN.md section 2).

States 1..5 (indices 0..4 here); every episode starts in the middle (state 3, index 2). Each
step moves left or right with probability 1/2 whatever the action. Leaving on the right gives
+1, leaving on the left gives the *current left reward* L; both terminate. Every other step
gives 0. L cycles through ``left_rewards`` (default ``(0.0, -1.0)``), changing every
``switch_every`` env steps counted across episodes: the step with 0-based global index k uses
``left_rewards[(k // switch_every) % len(left_rewards)]``. ``reset()`` does not clear the count.

The observation is the one-hot float32 ``[5]`` of the state. After a terminal step it is the
all-zeros vector (the terminal state has no features, so a linear value on one-hot features is
0 there); its value never matters because the discount is 0 at a terminal.

No time limit: the walk ends with probability 1 (the expected episode length from the middle is
9 steps), so the registered id has no ``max_episode_steps``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from impala_frodo.envs.pictures import random_walk_picture

#: The registered Gymnasium id.
ENV_ID = "impala_frodo/RandomWalk-v0"

NUM_STATES = 5
START_STATE = NUM_STATES // 2  # index 2 = state 3, the middle


def validate_random_walk_args(
    switch_every: int, left_rewards: Sequence[float]
) -> tuple[float, ...]:
    """Raise ``ValueError`` on bad arguments; return ``left_rewards`` as a tuple of floats."""
    if isinstance(switch_every, bool) or not isinstance(switch_every, numbers.Integral):
        raise ValueError(f"switch_every must be an int, got {switch_every!r}")
    if switch_every < 1:
        raise ValueError(f"switch_every must be >= 1, got {switch_every}")
    try:
        rewards = tuple(float(r) for r in left_rewards)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"left_rewards must be a sequence of numbers, got {left_rewards!r}"
        ) from exc
    if not rewards:
        raise ValueError("left_rewards must hold at least one reward, got an empty sequence")
    if not all(math.isfinite(r) for r in rewards):
        raise ValueError(f"left_rewards must be finite, got {rewards}")
    return rewards


def left_reward_at(
    num_steps: int | np.ndarray, switch_every: int, left_rewards: np.ndarray
) -> float | np.ndarray:
    """The left reward used by the step with global 0-based index ``num_steps`` (scalar or [B])."""
    return left_rewards[(num_steps // switch_every) % len(left_rewards)]


def random_walk_true_values(left_reward: float, gamma: float = 1.0) -> np.ndarray:
    """Exact state values ``[5]`` (float64) for left reward L under the random policy.

    Solves ``(I - gamma P) V = r`` where P is the transition matrix among the 5 non-terminal
    states and r the expected one-step reward (L/2 in state 1, 1/2 in state 5). For gamma = 1
    this is ``V(s_i) = L + (1 - L) i / 6`` for i = 1..5.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    transitions = np.zeros((NUM_STATES, NUM_STATES))
    for i in range(NUM_STATES):
        if i > 0:
            transitions[i, i - 1] = 0.5
        if i < NUM_STATES - 1:
            transitions[i, i + 1] = 0.5
    expected_rewards = np.zeros(NUM_STATES)
    expected_rewards[0] = 0.5 * left_reward
    expected_rewards[-1] = 0.5 * 1.0
    return np.linalg.solve(np.eye(NUM_STATES) - gamma * transitions, expected_rewards)


def state_observations() -> np.ndarray:
    """Float32 ``[5, 5]``: row i is the observation of state index i (the identity)."""
    return np.eye(NUM_STATES, dtype=np.float32)


class NonStationaryRandomWalk(gymnasium.Env[np.ndarray, np.int64]):
    """5-state random walk whose left-exit reward switches every ``switch_every`` env steps.

    Args:
        switch_every: env steps (across episodes) between changes of the left reward. Default
            960 = 10 FRODO iterations of 6 trajectories of 16 steps.
        left_rewards: the left rewards to cycle through, first one first. Default (0, -1).
        render_mode: ``None`` or ``"rgb_array"`` (a pixel picture of the walk,
            :func:`~impala_frodo.envs.pictures.random_walk_picture`).

    Observation: one-hot float32 ``[5]`` (zeros after a terminal step). Actions: ``Discrete(2)``,
    ignored (the walk is a prediction task).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 6}  # noqa: RUF012 (Gymnasium's)

    def __init__(
        self,
        switch_every: int = 960,
        left_rewards: Sequence[float] = (0.0, -1.0),
        render_mode: str | None = None,
    ) -> None:
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self._last_reward = 0.0
        self._left_rewards = np.asarray(
            validate_random_walk_args(switch_every, left_rewards), dtype=np.float64
        )
        self.switch_every = int(switch_every)
        self.action_space = spaces.Discrete(2)
        self.observation_space = spaces.Box(0.0, 1.0, (NUM_STATES,), np.float32)
        self._state = START_STATE
        self._num_steps = 0
        self._needs_reset = True

    @property
    def num_steps(self) -> int:
        """Env steps taken since construction, across episodes (``reset`` keeps it)."""
        return self._num_steps

    @property
    def left_reward(self) -> float:
        """The left-exit reward that the next step uses."""
        return float(left_reward_at(self._num_steps, self.switch_every, self._left_rewards))

    @property
    def left_reward_cycle(self) -> tuple[float, ...]:
        """The left rewards cycled through (the constructor's ``left_rewards``)."""
        return tuple(float(r) for r in self._left_rewards)

    def true_values(self, gamma: float = 1.0) -> np.ndarray:
        """Float64 ``[5]``: the true values of states 1..5 for the current left reward."""
        return random_walk_true_values(self.left_reward, gamma)

    @staticmethod
    def state_observations() -> np.ndarray:
        """Float32 ``[5, 5]``: row i is the observation of state index i."""
        return state_observations()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start in the middle state. Returns the one-hot ``[5]`` observation and an info dict
        with ``left_reward`` (the step counter is not reset)."""
        super().reset(seed=seed)
        self._state = START_STATE
        self._needs_reset = False
        return self._observation(), {"left_reward": self.left_reward}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Move left or right with probability 1/2 (the action is ignored).

        Returns ``(obs [5], reward, terminated, False, {"left_reward": L used by this step})``.
        """
        if self._needs_reset:
            raise RuntimeError(
                "NonStationaryRandomWalk.step() called before reset() or after the episode ended"
            )
        if not self.action_space.contains(action):
            raise ValueError(f"action must be 0 or 1 (it is ignored), got {action!r}")
        left_reward = self.left_reward
        move_right = self.np_random.random() < 0.5
        self._num_steps += 1
        self._state += 1 if move_right else -1
        reward = 0.0
        terminated = False
        if self._state >= NUM_STATES:
            reward, terminated = 1.0, True
        elif self._state < 0:
            reward, terminated = left_reward, True
        self._needs_reset = terminated
        self._last_reward = reward
        return self._observation(), reward, terminated, False, {"left_reward": left_reward}

    def render(self) -> np.ndarray | None:
        """With ``render_mode="rgb_array"``: uint8 ``[H, W, 3]`` pixels of the walk (the exit
        cell lit by its reward once the walk has left)."""
        if self.render_mode != "rgb_array":
            return None
        return random_walk_picture(NUM_STATES, self._state, self._last_reward)

    def _observation(self) -> np.ndarray:
        obs = np.zeros(NUM_STATES, dtype=np.float32)
        if 0 <= self._state < NUM_STATES:
            obs[self._state] = 1.0
        return obs
