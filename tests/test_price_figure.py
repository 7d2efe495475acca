"""experiments/price_figure.py: each setting's point is its own figures (issue 29's figure)."""

from __future__ import annotations

import json

import pytest

from tests.scripts import load_script
from tests.test_minatar_summary import write_run


@pytest.fixture(scope="module")
def figure():
    return load_script("experiments/price_figure.py", "price_figure")


def seeds(steps: list[int | None], rmse: list[float] | None = None) -> list[dict]:
    return [
        {"steps_to_0.8": s, "rmse_after_switch": None if rmse is None else rmse[i]}
        for i, s in enumerate(steps)
    ]


def test_each_panel_holds_each_settings_own_figures(figure, tmp_path):
    e2e = tmp_path / "e2e.json"
    rates = {"impala": 100.0, "base": 35.0, "k4": 57.0}
    e2e.write_text(
        json.dumps(
            {
                "e2e_catch_11x6": {
                    "rates": {k: {"ratio_to_impala": v / 100} for k, v in rates.items()}
                }
            }
        )
    )
    assert figure.e2e_ratios(e2e) == {"base": 0.35, "k4": 0.57}

    catch = tmp_path / "catch.json"
    catch.write_text(
        json.dumps(
            {
                "residual-base": seeds([10, 20, 30, 40]),
                "residual-k4": seeds([50, None, None, 70]),
                "plain-base": seeds([10, None, 30, None]),
                "plain-k4": seeds([None, None, None, 5]),
            }
        )
    )
    (_, _, residual), (_, _, plain) = figure.catch_panels(catch)
    # The median of those that reached 0.8, its quartiles as the bar, how many did.
    assert residual["base"] == (25.0, (7.5, 7.5), "4/4")
    assert residual["k4"] == (60.0, (5.0, 5.0), "2/4")
    assert plain == {"base": (2.0, None, "of 4"), "k4": (1.0, None, "of 4")}

    walk = tmp_path / "walk.json"
    walk.write_text(json.dumps({"residual-k4": seeds([0, 0], rmse=[0.3, 0.5])}))
    _, _, points = figure.randomwalk_panel([walk])
    mean, (below, above), _ = points["k4"]
    assert mean == pytest.approx(0.4) and below == above == pytest.approx(0.1)

    out = tmp_path / "price.png"
    panels = [*figure.catch_panels(catch), figure.randomwalk_panel([walk])]
    figure.draw(figure.e2e_ratios(e2e), panels, out, "test")
    assert out.stat().st_size > 10_000


def test_minatar_points_are_frodo_over_impala_per_setting_never_mixed(figure, tmp_path):
    for game in ("breakout", "spaceinvaders"):
        for seed in (0, 1):
            write_run(tmp_path, f"minatar-{game}-impala", seed, (1.0, 2.0, 4.0), 4.0)
            every1 = {"meta.every": 1}  # "base": every window, off the presets' "auto"
            write_run(tmp_path, f"minatar-{game}-frodo", seed, (1.0, 2.0, 2.0), 2.0, every1)
            late = 3.0 if game == "breakout" else 1.0
            every4 = {"meta.every": 4}
            write_run(tmp_path, f"minatar-{game}-frodo", seed, (1.0, 1.0, late), late, every4)
    _, _, points = figure.minatar_panel(tmp_path)
    # base: 2/4 on both games; k4: 3/4 and 1/4, mean 0.5, the bar their range.
    assert points["base"] == (0.5, (0.0, 0.0), "2 games")
    assert points["k4"] == (0.5, (0.25, 0.25), "2 games")
    assert set(points) == {"base", "k4"}
