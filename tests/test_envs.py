"""Tests of impala_frodo.envs: Catch, the random walk, registration and the batched envs."""

from __future__ import annotations

import importlib
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import impala_frodo.envs as envs_pkg
from impala_frodo.acting.unroll import Unroller
from impala_frodo.envs import (
    CATCH_ID,
    RANDOM_WALK_ID,
    BatchedCatch,
    BatchedRandomWalk,
    Catch,
    GymnasiumBatchedEnv,
    NonStationaryRandomWalk,
    make_batched_env,
    random_walk_true_values,
)

CATCH_SIZES = [(10, 5), (11, 6)]  # bsuite's default, and the report's 6 columns x 11 rows


class BsuiteCatchReference:
    """A transcription of bsuite/environments/catch.py's dynamics (the start column is given)."""

    actions = (-1, 0, 1)

    def __init__(self, rows: int, columns: int) -> None:
        self.rows, self.columns = rows, columns

    def reset(self, ball_x: int) -> np.ndarray:
        self.ball_x, self.ball_y = ball_x, 0
        self.paddle_x, self.paddle_y = self.columns // 2, self.rows - 1
        return self.observation()

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        dx = self.actions[action]
        self.paddle_x = np.clip(self.paddle_x + dx, 0, self.columns - 1)
        self.ball_y += 1
        if self.ball_y == self.paddle_y:
            reward = 1.0 if self.paddle_x == self.ball_x else -1.0
            return self.observation(), reward, True
        return self.observation(), 0.0, False

    def observation(self) -> np.ndarray:
        board = np.zeros((self.rows, self.columns), dtype=np.float32)
        board[self.ball_y, self.ball_x] = 1.0
        board[self.paddle_y, self.paddle_x] = 1.0
        return board


class ScriptedUniforms:
    """Stands in for ``env.np_random``: ``random()`` returns the given values in order."""

    def __init__(self, values: list[float]) -> None:
        self._values = iter(values)

    def random(self) -> float:
        return next(self._values)


def start_column(obs: np.ndarray) -> int:
    """The ball's column on the top row of a Catch board ``[rows, columns]``."""
    (columns,) = np.flatnonzero(obs[0])
    return int(columns)


def expected_left_reward(step: int, switch_every: int, cycle: tuple[float, ...]) -> float:
    return cycle[(step // switch_every) % len(cycle)]


# --------------------------------------------------------------------------- registration


@pytest.mark.parametrize("env_id", [CATCH_ID, RANDOM_WALK_ID])
def test_registered_ids_make_and_have_no_time_limit(env_id: str) -> None:
    env = gymnasium.make(env_id)
    assert env.spec is not None and env.spec.max_episode_steps is None
    assert not any(isinstance(w, gymnasium.wrappers.TimeLimit) for w in _wrappers(env))
    env.close()


def _wrappers(env: gymnasium.Env) -> list[gymnasium.Env]:
    chain = [env]
    while isinstance(chain[-1], gymnasium.Wrapper):
        chain.append(chain[-1].env)
    return chain


def test_registration_is_idempotent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium warns when an id is registered twice
        importlib.reload(envs_pkg)
        envs_pkg.register_envs()
    assert gymnasium.spec(CATCH_ID).entry_point == "impala_frodo.envs.catch:Catch"


def test_registered_kwargs_reach_the_env() -> None:
    env = gymnasium.make(CATCH_ID, rows=11, columns=6)
    assert env.observation_space.shape == (11, 6)
    walk = gymnasium.make(RANDOM_WALK_ID, switch_every=7, left_rewards=(2.0, 3.0))
    assert walk.unwrapped.switch_every == 7 and walk.unwrapped.left_reward_cycle == (2.0, 3.0)


# --------------------------------------------------------------------------- check_env


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        (CATCH_ID, {}),
        (CATCH_ID, {"rows": 11, "columns": 6, "render_mode": "ansi"}),
        (RANDOM_WALK_ID, {}),
        (RANDOM_WALK_ID, {"switch_every": 3}),
    ],
)
def test_check_env_through_gymnasium_make(env_id: str, kwargs: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails the test
        check_env(gymnasium.make(env_id, **kwargs).unwrapped)


@pytest.mark.parametrize("env", [Catch(), Catch(11, 6), NonStationaryRandomWalk()], ids=repr)
def test_check_env_on_instances(env: gymnasium.Env) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*not having a spec.*")
        check_env(env)


# --------------------------------------------------------------------------- Catch


@pytest.mark.parametrize(("rows", "columns"), CATCH_SIZES)
def test_catch_matches_bsuite_reference(rows: int, columns: int) -> None:
    env, ref = Catch(rows, columns), BsuiteCatchReference(rows, columns)
    rng = np.random.default_rng(rows * columns)
    rewards, starts = [], []
    obs, _ = env.reset(seed=123)
    for _ in range(300):
        starts.append(start_column(obs))
        np.testing.assert_array_equal(obs, ref.reset(starts[-1]))
        terminated = False
        while not terminated:
            action = int(rng.integers(3))
            obs, reward, terminated, truncated, _ = env.step(action)
            ref_obs, ref_reward, ref_terminated = ref.step(action)
            assert obs.dtype == np.float32 and obs.shape == (rows, columns)
            np.testing.assert_array_equal(obs, ref_obs)
            assert (reward, terminated, truncated) == (ref_reward, ref_terminated, False)
        rewards.append(reward)
        obs, _ = env.reset()
    assert {-1.0, 1.0} <= set(rewards)  # both outcomes were exercised
    counts = np.bincount(starts, minlength=columns)
    assert counts.min() > 0.5 * 300 / columns  # every start column is drawn, roughly uniformly


def test_catch_seed_reproducible() -> None:
    def first_columns(seed: int) -> list[int]:
        env = Catch()
        cols = [start_column(env.reset(seed=seed)[0])]
        cols += [start_column(env.reset()[0]) for _ in range(19)]
        return cols

    assert first_columns(3) == first_columns(3)
    assert first_columns(3) != first_columns(4)


@pytest.mark.parametrize(("rows", "columns"), CATCH_SIZES)
def test_catch_terminal_reward_signs_and_episode_length(rows: int, columns: int) -> None:
    env = Catch(rows, columns)
    for column in range(columns):
        for chase in (True, False):
            obs, _ = env.reset(options={"start_column": column})
            steps, terminated, reward = 0, False, 0.0
            while not terminated:
                paddle = int(np.argmax(obs[-1]))
                toward = 1 + int(np.sign(column - paddle))
                away = 0 if column >= columns // 2 else 2
                obs, reward, terminated, _, _ = env.step(toward if chase else away)
                steps += 1
                assert terminated or reward == 0.0
            assert steps == rows - 1
            assert reward == (1.0 if chase else -1.0), (column, chase)


def test_catch_observation_marks_ball_and_paddle() -> None:
    env = Catch(10, 5)
    obs, _ = env.reset(options={"start_column": 0})
    expected = np.zeros((10, 5), np.float32)
    expected[0, 0] = expected[9, 2] = 1.0
    np.testing.assert_array_equal(obs, expected)
    assert env.observation_space.contains(obs)
    obs, *_ = env.step(0)  # paddle left, ball down
    expected[:] = 0
    expected[1, 0] = expected[9, 1] = 1.0
    np.testing.assert_array_equal(obs, expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rows": 1}, "rows must be >= 2, got 1"),
        ({"columns": 0}, "columns must be >= 1, got 0"),
        ({"rows": 2.5}, "rows must be an int, got 2.5"),
        ({"render_mode": "human"}, "render_mode must be None or one of"),
    ],
)
def test_catch_rejects_bad_args(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Catch(**kwargs)


def test_catch_rejects_bad_use() -> None:
    env = Catch()
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(1)
    with pytest.raises(ValueError, match=r"start_column must be in \[0, 5\), got 5"):
        env.reset(options={"start_column": 5})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action must be 0, 1 or 2"):
        env.step(3)
    for _ in range(9):
        env.step(1)
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step(1)


# --------------------------------------------------------------------------- random walk


def test_random_walk_left_reward_switches_at_configured_step() -> None:
    switch_every, cycle = 7, (0.0, -1.0)
    env = NonStationaryRandomWalk(switch_every=switch_every, left_rewards=cycle)
    env.reset(seed=0)
    left_exits = {0.0: 0, -1.0: 0}
    episodes = 0
    for step in range(400):
        expected = expected_left_reward(step, switch_every, cycle)
        assert env.num_steps == step
        assert env.left_reward == expected
        _, reward, terminated, truncated, info = env.step(0)
        assert info["left_reward"] == expected and not truncated
        if terminated:
            episodes += 1
            assert reward in (1.0, expected)
            if reward == expected:
                left_exits[expected] += 1
            env.reset()  # must not clear the step counter
            assert env.num_steps == step + 1
    assert episodes > 20 and min(left_exits.values()) > 5


def test_random_walk_cycles_through_more_left_rewards() -> None:
    env = NonStationaryRandomWalk(switch_every=2, left_rewards=(2.0, 3.0, -5.0))
    env.reset(seed=1)
    seen = []
    for _ in range(12):
        seen.append(env.left_reward)
        _, _, terminated, _, _ = env.step(1)
        if terminated:
            env.reset()
    assert seen == [2.0, 2.0, 3.0, 3.0, -5.0, -5.0] * 2


def test_random_walk_dynamics() -> None:
    env = NonStationaryRandomWalk(switch_every=10**9, left_rewards=(-1.0,))
    eye = env.state_observations()
    np.testing.assert_array_equal(eye, np.eye(5, dtype=np.float32))
    obs, _ = env.reset(seed=5)
    np.testing.assert_array_equal(obs, eye[2])  # start in the middle
    state, moves = 2, []
    for _ in range(2000):
        obs, reward, terminated, _, _ = env.step(0)
        if terminated:
            assert state in (0, 4)
            assert reward == (1.0 if state == 4 else -1.0)
            np.testing.assert_array_equal(obs, np.zeros(5, np.float32))
            moves.append(1 if state == 4 else -1)
            obs, _ = env.reset()
            state = 2
            continue
        assert reward == 0.0 and obs.sum() == 1.0
        new_state = int(np.argmax(obs))
        moves.append(new_state - state)
        state = new_state
    assert set(moves) == {-1, 1}
    assert abs(np.mean(np.asarray(moves) == 1) - 0.5) < 0.05


def test_random_walk_ignores_actions() -> None:
    def trajectory(action: int) -> list[np.ndarray]:
        env = NonStationaryRandomWalk()
        out = [env.reset(seed=11)[0]]
        for _ in range(50):
            obs, _, terminated, _, _ = env.step(action)
            out.append(obs)
            if terminated:
                out.append(env.reset()[0])
        return out

    np.testing.assert_array_equal(trajectory(0), trajectory(1))


@pytest.mark.parametrize("left", [0.0, -1.0, 0.5, 2.0])
def test_true_values_closed_form(left: float) -> None:
    i = np.arange(1, 6)
    expected = left + (1 - left) * i / 6
    np.testing.assert_allclose(random_walk_true_values(left, 1.0), expected, atol=1e-12)


@pytest.mark.parametrize("gamma", [1.0, 0.9, 0.5, 0.0])
@pytest.mark.parametrize("left", [0.0, -1.0])
def test_true_values_satisfy_bellman(left: float, gamma: float) -> None:
    v = random_walk_true_values(left, gamma)
    padded = np.concatenate([[0.0], v, [0.0]])  # terminal values are 0
    exit_rewards = np.zeros(7)
    exit_rewards[0], exit_rewards[6] = left, 1.0
    for i in range(1, 6):
        backup = 0.5 * (exit_rewards[i - 1] + gamma * padded[i - 1])
        backup += 0.5 * (exit_rewards[i + 1] + gamma * padded[i + 1])
        assert v[i - 1] == pytest.approx(backup)


def test_true_values_follow_the_switch_and_monte_carlo() -> None:
    env = NonStationaryRandomWalk(switch_every=3)
    env.reset(seed=0)
    np.testing.assert_allclose(env.true_values(), np.arange(1, 6) / 6, atol=1e-12)
    for _ in range(3):
        if env.step(0)[2]:
            env.reset()
    np.testing.assert_allclose(env.true_values(), -1 + 2 * np.arange(1, 6) / 6, atol=1e-12)
    with pytest.raises(ValueError, match="gamma must be in"):
        env.true_values(1.5)
    # Monte Carlo: the mean undiscounted return from the middle state is V(s_3).
    walks = BatchedRandomWalk(4000, switch_every=10**9, left_rewards=(-1.0,), seed=0)
    walks.reset()
    returns = np.zeros(4000)
    done = np.zeros(4000, dtype=bool)
    while not done.all():
        step = walks.step(np.zeros(4000, dtype=np.int64))
        returns += np.where(done, 0.0, step.rewards)
        done |= step.terminated
    assert returns.mean() == pytest.approx(random_walk_true_values(-1.0)[2], abs=0.05)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"switch_every": 0}, "switch_every must be >= 1, got 0"),
        ({"switch_every": 9.5}, "switch_every must be an int"),
        ({"left_rewards": ()}, "left_rewards must hold at least one reward"),
        ({"left_rewards": ("a",)}, "left_rewards must be a sequence of numbers"),
        ({"left_rewards": (float("nan"),)}, "left_rewards must be finite"),
    ],
)
def test_random_walk_rejects_bad_args(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NonStationaryRandomWalk(**kwargs)
    with pytest.raises(ValueError, match=message):
        BatchedRandomWalk(2, **kwargs)


# --------------------------------------------------------------------------- batched vs single


@pytest.mark.parametrize(("rows", "columns"), CATCH_SIZES)
def test_batched_catch_equals_single_with_one_env_and_same_seed(rows: int, columns: int) -> None:
    batched, single = BatchedCatch(1, rows, columns, seed=42), Catch(rows, columns)
    obs_b = batched.reset()
    obs_s, _ = single.reset(seed=42)
    np.testing.assert_array_equal(obs_b[0], obs_s)
    rng = np.random.default_rng(0)
    for _ in range(20 * rows):
        action = int(rng.integers(3))
        step = batched.step(np.array([action]))
        obs_s, reward, terminated, truncated, _ = single.step(action)
        assert (step.rewards[0], step.terminated[0], step.truncated[0]) == (
            reward,
            terminated,
            truncated,
        )
        if terminated:
            obs_s, _ = single.reset()
        np.testing.assert_array_equal(step.obs[0], obs_s)


@pytest.mark.parametrize(("rows", "columns"), CATCH_SIZES)
def test_batched_catch_replays_on_single_envs(rows: int, columns: int) -> None:
    """Given the batched envs' start columns and actions, single envs see the same steps."""
    num_envs = 16
    batched = BatchedCatch(num_envs, rows, columns, seed=7)
    singles = [Catch(rows, columns) for _ in range(num_envs)]
    obs = batched.reset()
    for b, env in enumerate(singles):
        np.testing.assert_array_equal(
            env.reset(options={"start_column": start_column(obs[b])})[0], obs[b]
        )
    rng = np.random.default_rng(1)
    outcomes = set()
    for _ in range(5 * rows):
        actions = rng.integers(3, size=num_envs)
        step = batched.step(actions)
        assert step.obs.dtype == np.float32 and step.rewards.dtype == np.float32
        assert step.final_obs.shape == (0, rows, columns) and not step.truncated.any()
        for b, env in enumerate(singles):
            obs_s, reward, terminated, _, _ = env.step(int(actions[b]))
            assert (step.rewards[b], step.terminated[b]) == (reward, terminated)
            if terminated:
                outcomes.add(reward)
                obs_s, _ = env.reset(options={"start_column": start_column(step.obs[b])})
            np.testing.assert_array_equal(step.obs[b], obs_s)
    assert outcomes == {-1.0, 1.0}


def test_batched_catch_start_columns_vary_across_envs() -> None:
    obs = BatchedCatch(256, seed=0).reset()
    counts = np.bincount([start_column(o) for o in obs], minlength=5)
    assert counts.min() > 25


@pytest.mark.parametrize(("rows", "columns"), CATCH_SIZES)
def test_batched_catch_random_start_row_equals_single(rows: int, columns: int) -> None:
    batched = BatchedCatch(1, rows, columns, random_start_row=True, seed=3)
    single = Catch(rows, columns, random_start_row=True)
    np.testing.assert_array_equal(batched.reset()[0], single.reset(seed=3)[0])
    for _ in range(5 * rows):
        step = batched.step(np.array([1]))
        obs_s, reward, terminated, _, _ = single.step(1)
        assert (step.rewards[0], step.terminated[0]) == (reward, terminated)
        if terminated:
            obs_s, _ = single.reset()
        np.testing.assert_array_equal(step.obs[0], obs_s)


def test_catch_random_start_row_shortens_only_the_first_episode() -> None:
    env = Catch(11, 6, random_start_row=True)
    first_lengths = set()
    for seed in range(40):
        env.reset(seed=seed)
        lengths = []
        for _ in range(3):
            steps, terminated = 0, False
            while not terminated:
                _, _, terminated, _, _ = env.step(1)
                steps += 1
            lengths.append(steps)
            env.reset()
        first_lengths.add(lengths[0])
        assert lengths[1:] == [10, 10]
    assert first_lengths == set(range(1, 11))


def terminal_positions(env: BatchedCatch, unroll_length: int, unrolls: int) -> set[int]:
    """The steps t within [T, B] unrolls (random actions) at which episodes terminated."""
    unroller = Unroller(env, unroll_length, seed=0)
    rng = np.random.default_rng(0)

    def policy(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return rng.integers(3, size=len(obs)), np.zeros(len(obs), np.float32)

    positions: set[int] = set()
    for _ in range(unrolls):
        positions |= set(np.flatnonzero((unroller.unroll(policy).continues == 0).any(1)).tolist())
    return positions


def test_desynchronised_catch_ends_episodes_anywhere_in_an_unroll() -> None:
    """Lockstep starts with T a multiple of the episode length end every episode at fixed steps,
    so no target bootstraps; random start rows with T = 16 end them at every step of an unroll."""
    lockstep = terminal_positions(BatchedCatch(32, 11, 6, seed=0), 20, 10)
    assert lockstep == {9, 19}
    desync = terminal_positions(BatchedCatch(32, 11, 6, random_start_row=True, seed=0), 16, 10)
    assert desync == set(range(16))


def test_batched_random_walk_equals_single_with_one_env_and_same_seed() -> None:
    batched = BatchedRandomWalk(1, switch_every=7, seed=9)
    single = NonStationaryRandomWalk(switch_every=7)
    np.testing.assert_array_equal(batched.reset()[0], single.reset(seed=9)[0])
    for _ in range(300):
        assert batched.left_rewards[0] == single.left_reward
        np.testing.assert_array_equal(batched.true_values(0.9)[0], single.true_values(0.9))
        step = batched.step(np.array([0]))
        obs_s, reward, terminated, _, _ = single.step(0)
        assert (step.rewards[0], step.terminated[0]) == (np.float32(reward), terminated)
        if terminated:
            obs_s, _ = single.reset()
        np.testing.assert_array_equal(step.obs[0], obs_s)
    assert batched.num_steps[0] == single.num_steps == 300


def test_batched_random_walk_replays_on_single_envs() -> None:
    """Each batched walk's moves, replayed in a single env, give the same steps."""
    num_envs, switch_every = 32, 7
    batched = BatchedRandomWalk(num_envs, switch_every=switch_every, seed=3)
    singles = [NonStationaryRandomWalk(switch_every=switch_every) for _ in range(num_envs)]
    obs = batched.reset()
    states = [2] * num_envs
    for b, env in enumerate(singles):
        np.testing.assert_array_equal(env.reset(seed=0)[0], obs[b])
    np.testing.assert_array_equal(batched.state_observations(), singles[0].state_observations())
    right_moves = 0
    for t in range(100):
        assert np.all(batched.num_steps == t)
        np.testing.assert_array_equal(batched.left_rewards, [s.left_reward for s in singles])
        np.testing.assert_array_equal(batched.true_values(), [s.true_values() for s in singles])
        step = batched.step(np.ones(num_envs, dtype=np.int64))
        for b, env in enumerate(singles):
            if step.terminated[b]:
                move_right = states[b] == 4  # only possible exit from there
            else:
                move_right = int(np.argmax(step.obs[b])) > states[b]
            right_moves += move_right
            env.np_random = ScriptedUniforms([0.25 if move_right else 0.75])
            obs_s, reward, terminated, _, _ = env.step(1)
            assert (step.rewards[b], step.terminated[b]) == (np.float32(reward), terminated)
            if terminated:
                obs_s, _ = env.reset()
            np.testing.assert_array_equal(step.obs[b], obs_s)
            states[b] = int(np.argmax(obs_s))
    assert abs(right_moves / (100 * num_envs) - 0.5) < 0.03


def test_batched_envs_are_reproducible_and_reseedable() -> None:
    def run(env, seed=None) -> np.ndarray:
        out = [env.reset(seed=seed)]
        actions = np.zeros(env.num_envs, dtype=np.int64)
        out += [env.step(actions).obs for _ in range(30)]
        return np.stack(out)

    for cls in (BatchedCatch, BatchedRandomWalk):
        a, b = cls(8, seed=1), cls(8, seed=1)
        first = run(a)
        np.testing.assert_array_equal(first, run(b))
        np.testing.assert_array_equal(run(a, seed=1), first)  # reset(seed) reseeds
        assert not np.array_equal(run(cls(8, seed=2)), first)


# --------------------------------------------------------------------------- Gymnasium path


def test_gymnasium_batched_cartpole_truncation_and_autoreset() -> None:
    """Env 0 pushes right (falls: terminated), env 1 alternates (truncated at 12 steps)."""
    num_envs, seed, limit = 2, 5, 12
    batched = make_batched_env("CartPole-v1", num_envs, seed=seed, max_episode_steps=limit)
    assert isinstance(batched, GymnasiumBatchedEnv)
    assert batched.observation_shape == (4,) and batched.num_actions == 2
    seeds = np.random.SeedSequence(seed).generate_state(num_envs)  # the documented rule
    refs = [gymnasium.make("CartPole-v1", max_episode_steps=limit) for _ in range(num_envs)]
    obs = batched.reset()
    assert obs.dtype == np.float32 and obs.shape == (2, 4)
    for b, ref in enumerate(refs):
        np.testing.assert_array_equal(obs[b], ref.reset(seed=int(seeds[b]))[0])
    truncations = terminations = 0
    for t in range(3 * limit):
        actions = np.array([1, t % 2])
        step = batched.step(actions)
        expected_final = []
        for b, ref in enumerate(refs):
            ref_obs, reward, terminated, truncated, _ = ref.step(int(actions[b]))
            assert step.rewards[b] == reward and step.terminated[b] == terminated
            assert step.truncated[b] == (truncated and not terminated)
            if truncated and not terminated:
                expected_final.append(ref_obs)
            if terminated or truncated:
                ref_obs, _ = ref.reset()
                assert np.abs(step.obs[b]).max() <= 0.05  # a fresh CartPole start state
            np.testing.assert_array_equal(step.obs[b], ref_obs.astype(np.float32))
        assert step.final_obs.shape == (len(expected_final), 4)
        assert step.final_obs.dtype == np.float32
        if expected_final:
            np.testing.assert_array_equal(step.final_obs, np.stack(expected_final))
            assert not np.array_equal(step.final_obs, step.obs[step.truncated])
        truncations += step.truncated.sum()
        terminations += step.terminated.sum()
    assert truncations >= 2 and terminations >= 2  # both kinds of ending happened
    batched.close()


def test_gymnasium_batched_final_obs_rows_follow_truncated_order() -> None:
    with make_batched_env("CartPole-v1", 3, seed=0, max_episode_steps=5) as batched:
        batched.reset()
        for t in range(4):
            assert batched.step(np.full(3, t % 2)).final_obs.shape == (0, 4)
        last_obs = batched.step(np.zeros(3, dtype=np.int64))
    assert last_obs.truncated.all() and not last_obs.terminated.any()
    assert last_obs.final_obs.shape == (3, 4)


class CountdownEnv(gymnasium.Env):
    """Terminates at step 3; registered with a 3-step time limit, so both flags fire at once.

    Actions are ``Discrete(2, start=5)`` (reward = the action), observations ``Discrete(4)``.
    """

    action_space = gymnasium.spaces.Discrete(2, start=5)
    observation_space = gymnasium.spaces.Discrete(4)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return 0, {}

    def step(self, action):
        assert action in (5, 6)
        self.t += 1
        return self.t, float(action), self.t == 3, False, {}


COUNTDOWN_ID = "impala_frodo_test/Countdown-v0"
if COUNTDOWN_ID not in gymnasium.registry:
    gymnasium.register(COUNTDOWN_ID, entry_point=CountdownEnv, max_episode_steps=3)


def test_gymnasium_batched_terminated_wins_over_truncated_and_action_offset() -> None:
    with make_batched_env(COUNTDOWN_ID, 2, seed=0, disable_env_checker=True) as batched:
        assert batched.observation_shape == (4,) and batched.num_actions == 2
        np.testing.assert_array_equal(batched.reset(), np.eye(4, dtype=np.float32)[[0, 0]])
        for t in (1, 2, 3):
            step = batched.step(np.array([0, 1]))
            np.testing.assert_array_equal(step.rewards, [5.0, 6.0])
            if t < 3:
                np.testing.assert_array_equal(step.obs, np.eye(4, dtype=np.float32)[[t, t]])
        assert step.terminated.all() and not step.truncated.any()
        assert step.final_obs.shape == (0, 4)
        np.testing.assert_array_equal(step.obs, np.eye(4, dtype=np.float32)[[0, 0]])


def test_gymnasium_batched_flattens_observations() -> None:
    with GymnasiumBatchedEnv(CATCH_ID, 2, seed=0, rows=11, columns=6) as batched:
        assert batched.observation_shape == (66,)
        obs = batched.reset()
        assert obs.shape == (2, 66) and obs.sum(axis=1).tolist() == [2.0, 2.0]


def test_make_batched_env_dispatch_and_kwargs() -> None:
    catch = make_batched_env(CATCH_ID, 4, seed=0, rows=11, columns=6)
    assert isinstance(catch, BatchedCatch)
    assert (catch.observation_shape, catch.num_actions) == ((11, 6), 3)
    walk = make_batched_env(RANDOM_WALK_ID, 4, switch_every=7, left_rewards=(1.0, 2.0))
    assert isinstance(walk, BatchedRandomWalk)
    assert (walk.observation_shape, walk.num_actions, walk.switch_every) == ((5,), 2, 7)
    np.testing.assert_array_equal(walk.left_rewards, [1.0] * 4)


def test_make_batched_env_bad_ids() -> None:
    with pytest.raises(ValueError) as info:
        make_batched_env("Foo-v0", 2)
    assert str(info.value) == "unknown env id 'Foo-v0': not registered with gymnasium"
    with pytest.raises(ValueError, match="unknown env id 'impala_frodo/Nope-v0'"):
        make_batched_env("impala_frodo/Nope-v0", 2)
    with pytest.raises(ValueError, match=r"env 'Pendulum-v1' has action space Box\("):
        make_batched_env("Pendulum-v1", 2)


@pytest.mark.parametrize("env_id", [CATCH_ID, RANDOM_WALK_ID, "CartPole-v1"])
def test_batched_envs_reject_bad_use(env_id: str) -> None:
    for bad in (0, -1, 2.0):
        with pytest.raises(ValueError, match="num_envs must be"):
            make_batched_env(env_id, bad)
    with make_batched_env(env_id, 4, seed=0) as env:
        with pytest.raises(RuntimeError, match="before reset"):
            env.step(np.zeros(4, dtype=np.int64))
        env.reset()
        with pytest.raises(ValueError, match=r"actions must have shape \(4,\) .*got \(3,\)"):
            env.step(np.zeros(3, dtype=np.int64))
        with pytest.raises(ValueError, match="actions must be integers, got dtype float64"):
            env.step(np.zeros(4))
        with pytest.raises(ValueError, match=r"actions must be in \[0, \d\)"):
            env.step(np.full(4, env.num_actions))
        with pytest.raises(ValueError, match=r"actions must be in"):
            env.step(np.full(4, -1))
        env.step(np.zeros(4, dtype=np.int32))  # still usable after rejected calls
