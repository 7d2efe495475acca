"""The meta-gradient's cadence and size (``meta.every``, ``meta.batch_fraction``), in float64.

- ``every`` k: a meta step exactly once every k windows, the others' inner steps plain;
  ``"auto"`` (the default) is one window in 4 for FRODO's residual targets, every window
  for the plain ones, the extension and MGRL, whatever else the config says;
- ``batch_fraction`` f: the meta-gradient is that of the sampled columns alone; with every
  column, the sampled chain's meta-gradient is the chain's (no graph is needed for it);
- bad values: one line, exit 2, before anything starts.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from impala_frodo.acting.trajectory import Trajectory
from impala_frodo.config.presets import load_preset
from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.rule.batch import Batch, ColumnSampler
from impala_frodo.rule.metagrad import detach_params, meta_gradient
from impala_frodo.rule.schedules import ChainSchedule, SampledChainSchedule
from tests.test_cli import assert_usage_error
from tests.test_metagrad import random_batch, tiny_updater

M = 2


def meta_steps_at(updater, num_updates: int, seed: int = 0) -> list[int]:
    """The (1-based) updates that took a meta step, and checks that inner steps keep a
    graph to eta exactly in the windows that end with one."""
    rng = np.random.default_rng(seed)
    stepped = []
    for update in range(1, num_updates + 1):
        metrics = updater.update(random_batch(rng))
        if "meta/grad_norm" in metrics or "meta/lag" in metrics:
            stepped.append(update)
    return stepped


@pytest.mark.parametrize("every", [1, 2, 3])
def test_the_chain_takes_a_meta_step_exactly_every_k_windows(every):
    updater = tiny_updater("frodo", num_inner_steps=M, every=every)
    windows = 7
    # Window j ends before update M + 1 + j M (the held-out batch's inner step).
    ends = [M + 1 + j * M for j in range(windows)]
    assert meta_steps_at(updater, ends[-1]) == [u for j, u in enumerate(ends) if j % every == 0]
    assert updater.num_meta_updates == len(range(0, windows, every))


@pytest.mark.parametrize(
    ("algo", "target", "every"),
    [
        ("frodo", "residual", 4),
        ("frodo", "residual-centred", 4),
        ("frodo", "plain", 1),
        ("frodo", "plain-zero-head", 1),
        ("frodo-ext", "residual", 1),
        ("mgrl", "residual", 1),
    ],
)
def test_auto_cadence_follows_the_algorithm_and_target_form(algo, target, every):
    cfg = set_dotted(Config(), {"algo": algo, "meta.target": target})
    assert cfg.meta.every == "auto" and cfg.meta_every == every
    # The updater takes it: a meta step in the first window of every `every`.
    updater = tiny_updater(algo, num_inner_steps=M, every="auto", target=target)
    ends = [M + 1 + j * M for j in range(6)]
    assert meta_steps_at(updater, ends[-1]) == [u for j, u in enumerate(ends) if j % every == 0]
    # The paper's form one flag away from a preset whose cadence is "auto": every window.
    plain = set_dotted(load_preset("catch-frodo"), {"meta.target": "plain"})
    assert (load_preset("catch-frodo").meta_every, plain.meta_every) == (4, 1)
    # A number is taken as it is, whatever the form.
    assert set_dotted(cfg, {"meta.every": 3}).meta_every == 3


def test_windows_without_a_meta_step_keep_no_graph():
    updater = tiny_updater("frodo", num_inner_steps=M, every=2)
    rng = np.random.default_rng(1)
    graphs = []
    for _ in range(1 + 2 * M):  # window 0 (stepped), then window 1 (not stepped)
        updater.update(random_batch(rng))
        graphs.append(any(p.grad_fn is not None for p in updater.params.values()))
    # Window 0's steps (updates 1, 2) keep a graph; its end detaches; window 1's (3, 4) do
    # not; update 5 is window 2's first step, stepped again.
    assert graphs == [True, True, False, False, True]


@pytest.mark.parametrize(("mode", "every"), [("async", 2), ("sliding", 3)])
def test_async_and_sliding_follow_the_same_cadence(mode, every):
    meta = {"mode": "async"} if mode == "async" else {"schedule": "sliding"}
    updater = tiny_updater("frodo", num_inner_steps=M, every=every, **meta)
    ends = list(range(M + 1, 12)) if mode == "sliding" else [M + 1 + j * M for j in range(5)]
    stepped = meta_steps_at(updater, ends[-1])
    assert stepped == [u for j, u in enumerate(ends) if j % every == 0]


def wide_batch(rng: np.random.Generator, parts: int = 3) -> Batch:
    """A float64 batch of ``2 parts`` columns (each part with a terminal and a truncation)."""
    trajectories = []
    for _ in range(parts):
        one = random_batch(rng)
        trajectories.append(
            Trajectory(
                obs=one.obs.numpy(),
                actions=one.actions.numpy(),
                rewards=one.rewards.numpy(),
                continues=one.continues.numpy(),
                behaviour_log_probs=one.behaviour_log_probs.numpy(),
                truncation_index=one.truncation_index.numpy(),
                truncation_obs=one.truncation_obs.numpy(),
            )
        )
    return Batch.from_trajectories(trajectories, dtype=torch.float64)


def applied_meta_gradient(updater) -> dict[str, torch.Tensor]:
    """Capture the (unclipped) meta-gradient the next meta step applies."""
    captured: dict[str, torch.Tensor] = {}
    meta_step = updater.schedule.meta_step
    apply = meta_step.apply

    def capture(grads, outer_loss):
        captured.update(zip(meta_step.eta, (g.clone() for g in grads), strict=True))
        return apply(grads, outer_loss)

    meta_step.apply = capture
    return captured


def test_a_fractions_meta_gradient_is_that_of_its_columns_alone():
    updater = tiny_updater("frodo", optim="rmsprop", num_inner_steps=M, batch_fraction=0.5)
    assert isinstance(updater.schedule, SampledChainSchedule)
    rng = np.random.default_rng(2)
    batches = [wide_batch(rng) for _ in range(M + 1)]
    start = detach_params(updater.params)
    start_state = {k: v.clone() for k, v in updater.opt_state.items()}
    columns = ColumnSampler(0.5, seed=0)(batches[0].shape[1])  # the run's seed: 0
    assert columns.numel() == 3

    def by_hand(index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The meta-gradient of columns ``index`` alone, at the current eta."""
        return meta_gradient(
            start,
            start_state,
            updater.eta,
            [b.columns(index) for b in batches[:M]],
            batches[M].columns(index),
            updater.inner.optimizer,
            updater.inner_loss,
            updater.outer_loss,
        ).eta_grads

    expected = by_hand(columns)
    others = torch.tensor(sorted(set(range(6)) - set(columns.tolist())))
    differs = by_hand(others)
    captured = applied_meta_gradient(updater)
    for batch in batches:
        updater.update(batch)
    assert captured.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(captured[name], value, rtol=1e-12, atol=1e-12)
    # Another sample of the same size gives another meta-gradient: the check can fail.
    assert any(not torch.allclose(differs[k], v) for k, v in expected.items())


def test_with_every_column_the_sampled_chain_is_the_chain():
    chain = tiny_updater("frodo", optim="rmsprop", num_inner_steps=M)
    sampled = tiny_updater("frodo", optim="rmsprop", num_inner_steps=M)
    assert isinstance(chain.schedule, ChainSchedule)
    sampled.schedule = SampledChainSchedule(
        M, sampled.objective, sampled.inner, sampled.schedule.meta_step, 1, ColumnSampler(1.0)
    )
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(3 * M + 1):
        chain.update(random_batch(rng_a))
        sampled.update(random_batch(rng_b))
    assert chain.num_meta_updates == sampled.num_meta_updates == 3
    for name, value in chain.eta.items():
        torch.testing.assert_close(sampled.eta[name], value, rtol=0, atol=1e-12)
    for name, value in chain.params.items():
        torch.testing.assert_close(sampled.params[name], value, rtol=0, atol=1e-12)


def test_columns_keep_their_truncations():
    rng = np.random.default_rng(4)
    batch = wide_batch(rng)
    assert batch.truncation_index.tolist() == [13, 15, 17]  # t = 2, b = 1, 3, 5 of B = 6
    picked = batch.columns(torch.tensor([1, 2, 5]))
    assert picked.shape == (4, 3)
    assert picked.truncation_index.tolist() == [2 * 3 + 0, 2 * 3 + 2]
    torch.testing.assert_close(picked.truncation_obs, batch.truncation_obs[[0, 2]])
    torch.testing.assert_close(picked.obs, batch.obs[:, [1, 2, 5]])


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("meta.every=0", "meta.every must be an integer >= 1 or 'auto', got 0"),
        ("meta.every=often", "meta.every must be an integer >= 1 or 'auto', got 'often'"),
        ("meta.batch_fraction=0", "meta.batch_fraction must be a number in (0.0, 1.0]"),
        ("meta.batch_fraction=1.5", "meta.batch_fraction must be a number in (0.0, 1.0]"),
        ("meta.batch_fraction=0.01", "leaves no column of a batch of 32 columns"),
    ],
)
def test_bad_cadence_or_fraction_is_one_line_and_exit_2(capsys, tmp_path, setting, fragment):
    argv = ["train", "--logdir", str(tmp_path / "runs"), "--set", setting, "--no-progress"]
    assert_usage_error(capsys, argv, fragment)
    assert not (tmp_path / "runs").exists()
