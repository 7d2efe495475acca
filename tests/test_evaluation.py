"""``impala-frodo eval``: a trained agent scores, an untrained one does not; videos decode."""

from __future__ import annotations

import numpy as np
import pytest

from impala_frodo.acting.evaluation import (
    SCORE,
    VIDEO,
    EvaluationTimeout,
    eval_seed,
    play_episodes,
    slot_quotas,
)
from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.envs import make_batched_env
from impala_frodo.envs.catch import Catch
from impala_frodo.envs.pictures import LOSS, WIN
from impala_frodo.envs.rendering import RenderingEnv
from impala_frodo.records.checkpoint import CheckpointManager
from impala_frodo.records.runlog import create_run_dir
from learner.app.cli import main
from learner.control.exit_codes import ExitCode
from learner.training.learner import Learner
from learner.training.sync import train_sync

CATCH = {"algo": "impala", "run.num_envs": 32, "run.unroll_length": 20}


def catch_run(parent, *, steps: int, solve: bool):
    """A Catch 10 x 5 run directory with a checkpoint: trained to a return window of 0.95
    by the synchronous trainer (``solve``), or the agent as initialised."""
    cfg = set_dotted(Config(), {**CATCH, "run.total_env_steps": steps})
    run_dir = create_run_dir(cfg, parent)
    learners: list[Learner] = []
    if solve:
        result = train_sync(cfg, stop_at_return=0.95, on_update=lambda lr, _: learners.append(lr))
        assert result.mean_return >= 0.95, "Catch 10 x 5 not solved: no agent to evaluate"
        learner = learners[-1]
    else:
        learner = Learner(cfg, (10, 5), 3)
    CheckpointManager(run_dir / "checkpoints").save(learner.state_dict())
    return run_dir


@pytest.fixture(scope="module")
def solved(tmp_path_factory):
    return catch_run(tmp_path_factory.mktemp("solved"), steps=300_000, solve=True)


def evaluate_cli(capsys, *argv: str) -> tuple[int, list[str], str]:
    code = main(["eval", *argv])
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err


def mean_of(line: str) -> float:
    assert line.startswith("mean return "), line
    return float(line.split()[2])


def test_a_solved_catch_run_scores_and_an_untrained_one_does_not(solved, tmp_path, capsys):
    code, lines, err = evaluate_cli(capsys, str(solved), "--episodes", "50")
    assert code == ExitCode.OK, err
    assert lines[0] == "episode  return  length" and len(lines) == 1 + 50 + 1
    assert "(s.e., 50 episodes, sampled actions)" in lines[-1]
    assert mean_of(lines[-1]) >= 0.8
    code, lines, _ = evaluate_cli(capsys, str(solved), "--episodes", "50", "--greedy")
    assert code == ExitCode.OK and mean_of(lines[-1]) >= 0.8

    untrained = catch_run(tmp_path, steps=1_000, solve=False)
    code, lines, _ = evaluate_cli(capsys, str(untrained), "--episodes", "50")
    assert code == ExitCode.OK and mean_of(lines[-1]) < 0.0  # chance: about -0.6


def test_videos_decode_to_frames_of_the_pictures_size(solved, tmp_path, capsys):
    import imageio.v3 as iio

    for suffix in ("gif", "mp4"):
        path = tmp_path / f"catch.{suffix}"
        code, _, err = evaluate_cli(
            capsys, str(solved), "--episodes", "2", "--video", str(path), "--video-episodes", "2"
        )
        assert code == ExitCode.OK, err
        frames = iio.imread(path, plugin="pillow" if suffix == "gif" else "FFMPEG")
        # 2 episodes of Catch 10 x 5 (9 steps each, the first frame too); 24-pixel cells.
        assert frames.shape == (20, 240, 120, 3), frames.shape
        assert f"wrote {path}: 20 frames" in err


def test_eval_refuses_bad_input_with_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    no_checkpoint = create_run_dir(Config(), tmp_path / "runs")
    corrupt = create_run_dir(Config(), tmp_path / "runs")
    (corrupt / "checkpoints").mkdir()
    (corrupt / "checkpoints" / "latest.pt").write_bytes(b"not a checkpoint")
    cases = [
        ([str(empty)], "is not a run directory"),
        ([str(no_checkpoint)], "has no checkpoint yet"),
        ([str(corrupt)], "is corrupt or unreadable"),
        ([str(corrupt), "--video", "x.avi"], "name it .gif or .mp4"),
        ([str(corrupt), "--episodes", "0"], "--episodes must be >= 1"),
    ]
    for argv, fragment in cases:
        code, out, err = evaluate_cli(capsys, *argv)
        assert code == ExitCode.USAGE and not out, err
        assert err.count("\n") == 1 and fragment in err and "Traceback" not in err, err


def test_each_slot_plays_a_quota_fixed_in_advance():
    """Short episodes are not favoured: 7 episodes over 3 envs are 3 + 2 + 2."""
    assert slot_quotas(7, 3).tolist() == [3, 2, 2]
    env = make_batched_env("impala_frodo/Catch-v0", 3, rows=4, columns=3)
    episodes = play_episodes(env, lambda obs: np.ones(len(obs), np.int64), 7, seed=1)
    assert episodes.count == 7 and set(episodes.lengths) == {3}
    with pytest.raises(EvaluationTimeout, match="0 of 7 episodes done"):
        play_episodes(env, lambda obs: np.ones(len(obs), np.int64), 7, seed=1, timeout_s=-1)


def test_evaluation_seeds_are_streams_of_their_own():
    seeds = {eval_seed(0, i, purpose) for i in range(100) for purpose in (SCORE, VIDEO)}
    assert len(seeds) == 200 and max(seeds) < 2**31
    assert eval_seed(0, 0) != eval_seed(1, 0)


def test_catch_pictures_show_the_outcome():
    def last_frame(action: int) -> np.ndarray:
        env = Catch(rows=4, columns=3, render_mode="rgb_array")
        env.reset(seed=0, options={"start_column": 0})
        done = False
        while not done:
            done = env.step(action)[2]
        return env.render()

    caught, missed = last_frame(0), last_frame(2)  # all left catches column 0
    assert caught.shape == (4 * 24, 3 * 24, 3) and caught.dtype == np.uint8
    assert (caught == WIN).all(-1).any() and not (caught == LOSS).all(-1).any()
    assert (missed == LOSS).all(-1).any() and not (missed == WIN).all(-1).any()


@pytest.mark.parametrize(
    ("env_id", "kwargs", "obs_shape"),
    [
        ("impala_frodo/RandomWalk-v0", {}, (5,)),
        ("MinAtar/Breakout-v0", {}, (10, 10, 4)),
        ("ALE/Pong-v5", {}, (84, 84, 4)),
    ],
)
def test_every_family_draws_frames(env_id, kwargs, obs_shape):
    """Observations as the batched env's, pictures in colour (MinAtar, Atari if installed)."""
    family = env_id.split("/")[0]
    pytest.importorskip({"MinAtar": "minatar", "ALE": "ale_py"}.get(family, "numpy"))
    with RenderingEnv(env_id, **kwargs) as env:
        batched = make_batched_env(env_id, 1, seed=0, **kwargs)
        assert env.reset(seed=0).shape == obs_shape == batched.observation_shape
        assert env.observation_dtype == batched.observation_dtype
        batched.close()
        frame = env.frame()
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[-1] == 3
        assert len(np.unique(frame.reshape(-1, 3), axis=0)) >= 2, "a blank frame"
