"""Per-seed summaries and tables of learning runs (docs/results.md's numbers).

Pure functions over what :func:`learner.training.sync.train_sync` records (its ``history``):

- Catch: env steps until the mean return of the last ``window`` episodes first
  reaches 0.8, and the final return (the mean over the episodes that ended in
  the last 10 % of the budget).
- The random walk: the RMS value error over all updates, over the second half,
  and over the ``after`` env steps that follow each reward switch (the report's
  claim is about how fast a learner recovers there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SOLVED_RETURN = 0.8
#: The report's random-walk claim is about the value error in these env steps after a switch.
AFTER_SWITCH_STEPS = 100
SUMMARY_KEYS = ("steps_to_0.8", "final_return", "rmse_after_switch", "rmse_second_half")


def steps_to_threshold(
    returns: Sequence[float], end_steps: Sequence[int], threshold: float, window: int
) -> int | None:
    """First env step at which the mean return of the last ``window`` episodes is >= threshold."""
    if len(returns) < window:
        return None
    cumulative = np.concatenate([[0.0], np.cumsum(returns)])
    means = (cumulative[window:] - cumulative[:-window]) / window  # ends at episode window-1 ..
    hits = np.flatnonzero(means >= threshold)
    return None if hits.size == 0 else int(end_steps[hits[0] + window - 1])


def catch_summary(
    returns: Sequence[float], end_steps: Sequence[int], total_steps: int, window: int = 500
) -> dict[str, Any]:
    """``steps_to_0.8`` (None if never) and ``final_return`` (last 10 % of the budget)."""
    ends = np.asarray(end_steps)
    last = np.asarray(returns)[ends > 0.9 * total_steps]
    return {
        "steps_to_0.8": steps_to_threshold(returns, end_steps, SOLVED_RETURN, window),
        "final_return": float(last.mean()) if last.size else float("nan"),
    }


def random_walk_summary(
    value_rmse: Sequence[tuple[int, float]],
    switch_every: int,
    total_steps: int,
    after: int = AFTER_SWITCH_STEPS,
) -> dict[str, float]:
    """RMS value errors from ``(env steps, rmse)`` pairs taken after each update.

    ``rmse_after_switch``: the mean over updates that end within ``after`` env steps
    after a reward switch (0 < steps mod switch_every <= after), the first period's
    start excluded; ``rmse_all`` and ``rmse_second_half`` over all updates and over
    the second half of the budget.
    """
    steps = np.asarray([s for s, _ in value_rmse])
    errors = np.asarray([e for _, e in value_rmse])
    phase = steps % switch_every
    after_switch = (steps > switch_every) & (phase > 0) & (phase <= after)
    return {
        "rmse_all": float(errors.mean()),
        "rmse_second_half": float(errors[steps > total_steps / 2].mean()),
        "rmse_after_switch": float(errors[after_switch].mean()),
    }


def value_error_metrics(
    predicted: np.ndarray, true_values: np.ndarray, steps_since_switch: int | None
) -> dict[str, float]:
    """``eval/value_rmse``: the RMS error of V on every state against the true values;
    also ``eval/value_rmse_after_switch`` when the reward switched at most
    :data:`AFTER_SWITCH_STEPS` env steps ago (the random walk's non-stationarity)."""
    rmse = float(np.sqrt(np.mean((np.asarray(predicted) - np.asarray(true_values)) ** 2)))
    metrics = {"eval/value_rmse": rmse}
    if steps_since_switch is not None and 0 < steps_since_switch <= AFTER_SWITCH_STEPS:
        metrics["eval/value_rmse_after_switch"] = rmse
    return metrics


def curve(points: Sequence[tuple[int, float]], total_steps: int, bins: int) -> list[float | None]:
    """Means of ``(env step, value)`` points in ``bins`` equal bins of [0, total_steps]."""
    if not points:
        return [None] * bins
    steps = np.asarray([s for s, _ in points], dtype=np.float64)
    values = np.asarray([v for _, v in points], dtype=np.float64)
    index = np.minimum((steps / total_steps * bins).astype(int), bins - 1)
    sums = np.bincount(index, values, minlength=bins)
    counts = np.bincount(index, minlength=bins)
    return [float(s / c) if c else None for s, c in zip(sums, counts, strict=True)]


def mean_se(values: Sequence[float]) -> str:
    """``mean +- s.e.`` over seeds, 3 decimals."""
    array = np.asarray(values, dtype=np.float64)
    se = array.std(ddof=1) / np.sqrt(array.size) if array.size > 1 else 0.0
    return f"{array.mean():.3f} +- {se:.3f}"


def solved_cell(steps: Sequence[int | None]) -> str:
    """``k/n (median)``: seeds that reached 0.8 and the median step among them."""
    reached = [s for s in steps if s is not None]
    median = f" ({np.median(reached) / 1000:.0f}k)" if reached else ""
    return f"{len(reached)}/{len(steps)}{median}"


def table_rows(suite: str, results: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """A markdown table, one row per variant (the random walk's columns for a suite of
    random-walk runs: ``randomwalk``, ``price-randomwalk``...)."""
    if suite.endswith("randomwalk"):
        lines = [
            "| variant | RMS error after switches | second half | all steps |",
            "|---|---|---|---|",
        ]
        for name, seeds in results.items():
            cells = [
                mean_se([s[k] for s in seeds])
                for k in ("rmse_after_switch", "rmse_second_half", "rmse_all")
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return "\n".join(lines)
    lines = [
        "| variant | seeds reaching 0.8 (median step) | final return |",
        "|---|---|---|",
    ]
    for name, seeds in results.items():
        solved = solved_cell([s["steps_to_0.8"] for s in seeds])
        lines.append(f"| {name} | {solved} | {mean_se([s['final_return'] for s in seeds])} |")
    return "\n".join(lines)
