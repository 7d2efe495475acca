"""``impala-frodo eval RUN_DIR``: a trained agent plays episodes; a score, a video.

The run's agent comes from its checkpoint (``checkpoints/latest.pt``, or ``--checkpoint``)
and plays ``--episodes`` episodes in the env it trained on, on seeds training never used
(:mod:`impala_frodo.reports.evaluation`). stdout: a table of the episodes, then, as the last
line, the mean return and its standard error. ``--video FILE`` films more episodes of it
(GIF or MP4 by the suffix). Bad input (not a run, a missing or corrupt checkpoint, an env
that cannot be built) exits 2 with one line, as ``train`` does.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from impala_frodo.acting.evaluation import Episodes, EvaluationTimeout
from impala_frodo.config.checks import ConfigError
from impala_frodo.reports.evaluation import TrainedAgent, evaluate, load_agent, record
from learner.app.env_check import check_env
from learner.control.exit_codes import ExitCode

DESCRIPTION = (
    "Play a trained agent: load the run's latest checkpoint, play --episodes episodes on "
    "seeds training never used, print each episode's return and length and, as the last "
    "line, the mean return with its standard error. --video films more episodes (GIF or "
    "MP4, by the suffix). Exit codes as train's: 2 for a folder that is not a run or a "
    "missing or corrupt checkpoint, 1 for an evaluation past --timeout."
)
#: Frames a video holds at most (its last episode is cut there).
VIDEO_MAX_FRAMES = 3_000


def add_eval_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "eval", help="play a trained run's agent: scores, a video", description=DESCRIPTION
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (made by train)")
    parser.add_argument(
        "--episodes", type=int, default=20, metavar="N", help="episodes to score (default 20)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="S",
        help="evaluation seed (default 0); never a training seed",
    )
    parser.add_argument(
        "--greedy",
        action="store_true",
        help="take the most likely action (default: sample, as in training)",
    )
    parser.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="a checkpoint .pt (default RUN_DIR/checkpoints/latest.pt)",
    )
    parser.add_argument("--video", metavar="FILE", help="film the agent into FILE (.gif or .mp4)")
    parser.add_argument(
        "--video-episodes",
        type=int,
        default=3,
        metavar="K",
        help=f"episodes in the video (default 3; at most {VIDEO_MAX_FRAMES:,} frames)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        metavar="S",
        help="give up after S seconds (exit 1)",
    )


def cmd_eval(args: argparse.Namespace) -> int:
    """Score the run's agent, film it if asked; the exit code."""
    from impala_frodo.reports.video import video_format

    for name in ("episodes", "video_episodes"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.seed < 0 or args.timeout <= 0:
        raise ConfigError("--seed must be >= 0 and --timeout > 0")
    if args.video:
        video_format(args.video)  # a bad suffix is refused before anything is played
    agent = load_agent(args.run_dir, args.checkpoint)
    check_env(agent.config)
    print(describe_agent(args.run_dir, agent), file=sys.stderr)
    try:
        episodes = evaluate(
            agent, args.episodes, seed=args.seed, greedy_actions=args.greedy, timeout_s=args.timeout
        )
        if args.video:
            _film(agent, args)
    except EvaluationTimeout as e:
        print(f"impala-frodo: {e} (--timeout {args.timeout:g})", file=sys.stderr)
        return ExitCode.FAILED
    print(episode_table(episodes))
    print(summary_line(episodes, greedy=args.greedy))
    return ExitCode.OK


def _film(agent: TrainedAgent, args: argparse.Namespace) -> None:
    from impala_frodo.reports.video import write_video

    try:
        recording = record(
            agent,
            args.video_episodes,
            seed=args.seed,
            greedy_actions=args.greedy,
            max_frames=VIDEO_MAX_FRAMES,
            timeout_s=args.timeout,
        )
    except ValueError as e:  # the env cannot draw itself
        raise ConfigError(f"cannot film {agent.config.env.id!r}: {e}") from None
    path = write_video(args.video, recording.frames, recording.fps)
    returns = ", ".join(f"{r:g}" for r in recording.returns) or "none finished"
    cut = f"; cut at {VIDEO_MAX_FRAMES:,} frames" if recording.cut else ""
    print(
        f"wrote {path}: {len(recording.frames):,} frames at {recording.fps} fps, "
        f"{len(recording.returns)} whole episode(s), returns {returns}{cut}",
        file=sys.stderr,
    )


def describe_agent(run_dir: str, agent: TrainedAgent) -> str:
    cfg = agent.config
    kwargs = ", ".join(f"{k}={v}" for k, v in cfg.env.kwargs.items())
    checkpoint = agent.checkpoint.name if agent.checkpoint else "given weights"
    return (
        f"{run_dir}: {cfg.algo} on {cfg.env.id}{f' ({kwargs})' if kwargs else ''}, "
        f"{checkpoint} at {agent.env_steps:,} env steps"
    )


def episode_table(episodes: Episodes) -> str:
    rows = ["episode  return  length"]
    for i, (ret, length) in enumerate(zip(episodes.returns, episodes.lengths, strict=True)):
        rows.append(f"{i + 1:>7}  {ret:>6.6g}  {length:>6}")
    return "\n".join(rows)


def summary_line(episodes: Episodes, *, greedy: bool) -> str:
    actions = "greedy" if greedy else "sampled"
    return (
        f"mean return {episodes.mean:.3f} +- {episodes.stderr:.3f} "
        f"(s.e., {episodes.count} episodes, {actions} actions)"
    )
