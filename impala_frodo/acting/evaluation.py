"""Evaluation: a policy plays whole episodes on seeds that training never uses.

- :func:`play_episodes`: N episodes in a batched env (the pipeline training acts in),
  each env slot playing a number of episodes fixed in advance, so that short episodes are
  not favoured (counting the first N to end, of B envs, would favour them).
- :func:`record_episodes`: episodes in one :class:`~impala_frodo.envs.rendering.RenderingEnv`,
  with a picture of every step, for a video.
- :func:`eval_seed`: the env seeds of an evaluation, drawn from a stream of their own.
- :func:`greedy` and :func:`sampled`: the actions a policy's logits give.

numpy only (the policy may be a torch one behind the same interface). Every loop has a
deadline: :class:`EvaluationTimeout` names what was done by then.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from impala_frodo.envs.base import BatchedEnv
from impala_frodo.envs.rendering import RenderingEnv

#: ``obs [B, *obs_shape]`` (stored dtype) -> ``actions [B]`` (int64).
ActionChooser = Callable[[np.ndarray], np.ndarray]

#: The spawn key of evaluation seeds: training draws its env seeds from
#: ``SeedSequence([seed, actor, incarnation])`` (no spawn key) or takes the run seed itself.
_EVAL_STREAM = 0x5EED_E7A1


class EvaluationTimeout(RuntimeError):
    """An evaluation ran past its deadline; the message says how far it got."""


class ActingPolicy(Protocol):
    """What evaluation needs of a policy (a
    :class:`~impala_frodo.networks.numpy_policy.NumpyPolicy`)."""

    def logits(self, obs: np.ndarray) -> np.ndarray: ...

    def __call__(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def greedy(policy: ActingPolicy) -> ActionChooser:
    """The most likely action under the policy (ties: the lowest index)."""
    return lambda obs: np.argmax(policy.logits(obs), axis=-1).astype(np.int64)


def sampled(policy: ActingPolicy) -> ActionChooser:
    """An action drawn from the policy, as training acts."""
    return lambda obs: policy(obs)[0]


#: The purposes of evaluation seeds, each a stream of its own.
SCORE, VIDEO = 0, 1


def eval_seed(run_seed: int, index: int = 0, purpose: int = SCORE) -> int:
    """The env seed of evaluation ``index`` of a run of ``run_seed``, for scoring or for a
    video: a stream of its own, distinct from every seed training draws. Below 2^31 (the
    ALE's limit), so that ``seed + k`` seeds k more episodes."""
    sequence = np.random.SeedSequence(run_seed, spawn_key=(_EVAL_STREAM, purpose, index))
    return int(sequence.generate_state(1)[0] >> 1)


@dataclass(frozen=True)
class Episodes:
    """Returns (the raw score) and lengths of finished episodes, in the order played."""

    returns: np.ndarray
    lengths: np.ndarray

    @property
    def count(self) -> int:
        return int(self.returns.size)

    @property
    def mean(self) -> float:
        return float(self.returns.mean()) if self.count else math.nan

    @property
    def stderr(self) -> float:
        """The standard error of the mean return (0 for one episode)."""
        if self.count < 2:
            return 0.0
        return float(self.returns.std(ddof=1) / math.sqrt(self.count))


def slot_quotas(episodes: int, slots: int) -> np.ndarray:
    """Episodes each of ``slots`` env slots plays: ``episodes`` spread as evenly as can be."""
    quotas = np.full(slots, episodes // slots, dtype=np.int64)
    quotas[: episodes % slots] += 1
    return quotas


def play_episodes(
    env: BatchedEnv,
    act: ActionChooser,
    episodes: int,
    *,
    seed: int,
    timeout_s: float = math.inf,
    clock: Callable[[], float] = time.monotonic,
) -> Episodes:
    """Play ``episodes`` whole episodes in ``env`` (reset with ``seed``); env slot i plays
    the first ``slot_quotas(...)[i]`` episodes it starts. :class:`EvaluationTimeout` past
    ``timeout_s``."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    quotas = slot_quotas(episodes, env.num_envs)
    returns: list[list[float]] = [[] for _ in range(env.num_envs)]
    lengths: list[list[int]] = [[] for _ in range(env.num_envs)]
    running = np.zeros(env.num_envs, np.float64)
    steps = np.zeros(env.num_envs, np.int64)
    obs, deadline = env.reset(seed=seed), clock() + timeout_s
    while any(len(r) < q for r, q in zip(returns, quotas, strict=True)):
        if clock() > deadline:
            done = sum(min(len(r), q) for r, q in zip(returns, quotas, strict=True))
            raise EvaluationTimeout(
                f"evaluation stopped after {timeout_s:g} s: {done} of {episodes} episodes done"
            )
        step = env.step(act(obs))
        obs = step.obs
        running += step.rewards if step.raw_rewards is None else step.raw_rewards
        steps += 1
        for i in np.flatnonzero(step.terminated | step.truncated):
            if len(returns[i]) < quotas[i]:
                returns[i].append(float(running[i]))
                lengths[i].append(int(steps[i]))
        running[step.terminated | step.truncated] = 0.0
        steps[step.terminated | step.truncated] = 0
    return Episodes(
        np.asarray([r for slot in returns for r in slot], np.float64),
        np.asarray([n for slot in lengths for n in slot], np.int64),
    )


@dataclass
class Recording:
    """The frames of recorded episodes (uint8 ``[H, W, 3]`` each) and their episodes; ``cut``:
    the frame limit ended the last episode early (its return is then not counted)."""

    fps: int
    frames: list[np.ndarray] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    cut: bool = False


def record_episodes(
    env: RenderingEnv,
    act: ActionChooser,
    episodes: int,
    *,
    seed: int,
    max_frames: int = 2_000,
    timeout_s: float = math.inf,
    clock: Callable[[], float] = time.monotonic,
) -> Recording:
    """Play ``episodes`` episodes in ``env``, a frame of each state (the last included);
    at most ``max_frames`` frames. Episode k is reset with seed ``seed + k``."""
    recording = Recording(fps=env.fps)
    deadline = clock() + timeout_s
    for k in range(episodes):
        obs = env.reset(seed=seed + k)
        recording.frames.append(env.frame())
        total, length, over = 0.0, 0, False
        while not over:
            if len(recording.frames) >= max_frames:
                recording.cut = True
                return recording
            if clock() > deadline:
                raise EvaluationTimeout(f"recording stopped after {timeout_s:g} s")
            obs, reward, over = env.step(int(act(obs[None])[0]))
            total, length = total + reward, length + 1
            recording.frames.append(env.frame())
        recording.returns.append(total)
        recording.lengths.append(length)
    return recording
