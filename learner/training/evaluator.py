"""Evaluation during training: the current weights play whole episodes beside the learner.

Every ``eval.every_s`` seconds or ``eval.every_env_steps`` env steps (the ``eval`` config
section; off by default) the learner's current weights go to an evaluator, a Ray actor of
its own (``eval.num_cpus`` CPUs), which plays ``eval.episodes`` episodes on fresh seeds
(greedy or sampled actions, ``eval.greedy``), off the training episodes; the result is
logged as ``eval/return`` (and its standard error, ``eval/return_se``) at the env steps of
the weights it played, beside the training return. Every ``eval.video_every_s`` an
evaluation also films an episode into TensorBoard (``eval/video``, a GIF).

The learner never waits for it: :class:`EvaluationHook`, called after every update, looks
at the evaluation in flight without blocking (``ray.wait`` with no timeout), hands out the
next one only when none is in flight, and abandons one still out after ``eval.timeout_s``
with a warning. A run that reaches its budget ends on an evaluation of its final weights
(:meth:`EvaluationHook.finish`). :class:`Evaluator` is the plain class the actor wraps
(tests drive it directly).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from impala_frodo.acting.evaluation import eval_seed
from impala_frodo.config.schema import Config
from impala_frodo.networks.weights import ParamLayout, pack_params, param_layout
from impala_frodo.reports.evaluation import TrainedAgent, evaluate, record

log = logging.getLogger("impala_frodo")

#: The seed purpose of evaluations during training (the CLI's are SCORE and VIDEO).
DURING_TRAINING = 2
#: Frames a video in TensorBoard holds at most.
VIDEO_MAX_FRAMES = 600


@dataclass(frozen=True)
class EvalResult:
    """An evaluation of the weights at ``env_steps``: its episodes' mean return, the
    standard error, how many; a GIF of one more episode if one was asked for."""

    env_steps: int
    mean: float
    stderr: float
    episodes: int
    gif: bytes | None = None
    gif_size: tuple[int, int] = (0, 0)

    def scalars(self) -> dict[str, float]:
        return {"eval/return": self.mean, "eval/return_se": self.stderr}


class Evaluator:
    """Plays the weights it is given in the run's env; a plain class (the actor wraps it)."""

    def __init__(self, cfg: Config, layout: ParamLayout) -> None:
        self.cfg = cfg
        self.layout = layout

    def evaluate(self, env_steps: int, weights: np.ndarray, video: bool = False) -> EvalResult:
        """``cfg.eval.episodes`` episodes of ``weights`` (packed), seeded by ``env_steps``."""
        cfg = self.cfg
        agent = TrainedAgent(cfg, weights, self.layout, env_steps)
        seed = eval_seed(cfg.run.seed, env_steps, DURING_TRAINING) % 2**31
        episodes = evaluate(
            agent,
            cfg.eval.episodes,
            seed=seed,
            greedy_actions=cfg.eval.greedy,
            timeout_s=cfg.eval.timeout_s,
        )
        gif, size = None, (0, 0)
        if video:
            from impala_frodo.reports.video import gif_bytes

            film = record(
                agent, 1, seed=seed, greedy_actions=cfg.eval.greedy, max_frames=VIDEO_MAX_FRAMES
            )
            gif, size = gif_bytes(film.frames, film.fps)
        return EvalResult(env_steps, episodes.mean, episodes.stderr, episodes.count, gif, size)


class EvalSchedule:
    """When the next evaluation is due: every ``every_s`` seconds or ``every_env_steps``
    env steps since the last one (0 turns either off), the first one at once."""

    def __init__(self, cfg: Config, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s, self.every_steps = cfg.eval.every_s, cfg.eval.every_env_steps
        self.video_every_s = cfg.eval.video_every_s
        self._clock = clock
        self._last_time = self._last_video = -math.inf
        self._last_steps = -math.inf

    def due(self, env_steps: int) -> bool:
        by_time = self.every_s > 0 and self._clock() - self._last_time >= self.every_s
        by_steps = self.every_steps > 0 and env_steps - self._last_steps >= self.every_steps
        return by_time or by_steps

    def start(self, env_steps: int) -> bool:
        """An evaluation starts now; returns whether it films an episode too."""
        now = self._clock()
        self._last_time, self._last_steps = now, env_steps
        video = self.video_every_s > 0 and now - self._last_video >= self.video_every_s
        if video:
            self._last_video = now
        return video


class EvaluationHook:
    """The training loop's callback that keeps one evaluation in flight on ``actor``.

    ``actor`` is a Ray handle of an :class:`Evaluator` actor; ``then`` is called after
    it (the loop's other callback)."""

    def __init__(self, cfg: Config, actor: Any, then: Callable[[Any], None] | None = None) -> None:
        self.cfg = cfg
        self.actor = actor
        self.then = then
        self.schedule = EvalSchedule(cfg)
        self._pending: tuple[Any, float] | None = None  # (object ref, when it started)
        self.done = 0  # evaluations logged
        self.last_steps = -1  # the env steps of the last one logged

    def __call__(self, context: Any) -> None:
        self.context = context
        learner = context.learner
        self._collect(learner)
        steps = learner.books.counters.env_steps
        if self._pending is None and self.schedule.due(steps):
            self._submit(learner, video=self.schedule.start(steps))
        if self.then is not None:
            self.then(context)

    def finish(self) -> None:
        """At the end of a run that reached its budget: the evaluation in flight, and one of
        the final weights, waited for (each within ``eval.timeout_s``) and logged, so that
        every finished run ends on an evaluation. Nothing after a stop request."""
        context = getattr(self, "context", None)
        if context is None or context.stop.requested or not context.learner.books.done:
            return
        learner = context.learner
        self._collect(learner, wait_s=self.cfg.eval.timeout_s)
        if self._pending is None and self.last_steps < learner.books.counters.env_steps:
            self._submit(learner, video=self.schedule.video_every_s > 0)
            self._collect(learner, wait_s=self.cfg.eval.timeout_s)

    def _submit(self, learner: Any, video: bool) -> None:
        weights = pack_params(learner.updater.acting_params("cpu"))
        ref = self.actor.evaluate.remote(learner.books.counters.env_steps, weights, video)
        self._pending = (ref, time.monotonic())

    def _collect(self, learner: Any, wait_s: float = 0.0) -> None:
        """Log the evaluation in flight if it is back (within ``wait_s``); abandon it past
        its deadline."""
        import ray

        if self._pending is None:
            return
        ref, started = self._pending
        ready, _ = ray.wait([ref], timeout=wait_s)
        if not ready:
            if time.monotonic() - started > self.cfg.eval.timeout_s + 60:
                log.warning(
                    "an evaluation was not back in %.0f s: abandoned", self.cfg.eval.timeout_s
                )
                ray.cancel(ref, force=True)
                self._pending = None
            return
        self._pending = None
        try:
            result: EvalResult = ray.get(ref, timeout=10)
        except Exception as e:
            log.warning(
                "an evaluation failed: %s", str(e).splitlines()[0] if str(e) else type(e).__name__
            )
            return
        self.done += 1
        self.last_steps = result.env_steps
        if learner.run_logger is not None:
            learner.run_logger.log(result.env_steps, result.scalars(), learner.books.wall_time_s())
            if result.gif is not None:
                learner.run_logger.add_gif(
                    "eval/video", result.gif, result.gif_size, result.env_steps
                )


@contextmanager
def evaluation_hook(
    cfg: Config, learner: Any, then: Callable[[Any], None] | None
) -> Iterator[Callable[[Any], None] | None]:
    """The loop's callback: ``then`` alone without evaluation, else an
    :class:`EvaluationHook` on a new evaluator actor, which is killed after."""
    if not cfg.eval.enabled:
        yield then
        return
    import ray

    layout = param_layout(learner.updater.acting_params("cpu"))
    actor_class = ray.remote(num_cpus=cfg.eval.num_cpus, max_restarts=1)(Evaluator)
    actor = actor_class.remote(cfg, layout)
    hook = EvaluationHook(cfg, actor, then)
    try:
        yield hook
        hook.finish()
    finally:
        ray.kill(actor)
