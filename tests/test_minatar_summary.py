"""experiments/minatar_summary.py: FRODO's arms apart, and the thirds of the budget, from run
directories alone (issue 32's long runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from impala_frodo.config.presets import load_preset
from impala_frodo.config.schema import Config, set_dotted
from impala_frodo.records.runlog import RunLogger, create_run_dir
from tests.scripts import load_script

BUDGET = 3_000
#: Log records every 300 env steps: 3 in the first third, 3 in the second, 4 in the last
#: (none on a third's edge).
STEPS = range(300, BUDGET + 1, 300)
SELF = {"meta.consistency_cost": 0.1, "meta.consistency_form": "self"}


@pytest.fixture(scope="module")
def summary():
    return load_script("experiments/minatar_summary.py", "minatar_summary")


def write_run(
    logdir: Path,
    preset: str,
    seed: int,
    thirds: tuple[float, float, float],
    last: float,
    settings: dict | None = None,
    last_step: int = BUDGET,
) -> Path:
    """A run directory as a run leaves it (config.json by create_run_dir, metrics.jsonl by
    RunLogger): each record's episode/return is its third's value, the last record's
    episode/return_window is ``last``."""
    overrides = {"run.seed": seed, "run.total_env_steps": BUDGET, **(settings or {})}
    cfg = set_dotted(load_preset(preset), overrides)
    run_dir = create_run_dir(cfg, logdir)
    with RunLogger(run_dir, tensorboard=False) as logger:
        for step in STEPS:
            if step > last_step:
                break
            scalars = {"episode/return": thirds[3 * step // (BUDGET + 1)]}
            scalars["episode/return_window"] = last if step == BUDGET else 0.0
            logger.log(step, scalars, wall_time_s=step / 100)
    return run_dir


def test_the_arm_is_the_algorithm_with_its_consistency_term_and_other_meta_settings(summary):
    arm = summary.arm_label
    assert arm(load_preset("minatar-breakout-impala")) == "impala"
    assert arm(load_preset("minatar-breakout-frodo")) == "frodo"
    assert arm(set_dotted(load_preset("minatar-breakout-frodo"), SELF)) == "frodo+self w=0.1"
    assert arm(load_preset("minatar-breakout-frodo-self")) == "frodo+self w=0.1"
    canonical = set_dotted(load_preset("minatar-breakout-frodo"), {"meta.consistency_cost": 1.0})
    assert arm(canonical) == "frodo+canonical w=1"
    # Asterix's preset keeps a meta step in every window, off the default cadence "auto".
    assert arm(load_preset("minatar-asterix-frodo")) == "frodo, meta.every=1"
    # A form without a weight is no term; other meta settings are arms of their own.
    assert arm(set_dotted(Config(), {"algo": "frodo", "meta.consistency_form": "self"})) == "frodo"
    centred = set_dotted(load_preset("minatar-breakout-frodo"), {"meta.target": "residual-centred"})
    assert arm(centred) == "frodo, meta.target=residual-centred"


def test_frodo_arms_are_not_mixed_and_each_third_is_its_own(summary, tmp_path):
    """Three arms on Breakout (frodo+self both from --set, as the long runs are started, and
    from its preset), two on SpaceInvaders, seeds whose returns differ by a factor of 3;
    an unfinished run is left out."""
    logdir = tmp_path / "minatar-2m"
    arms = {  # preset, settings, thirds, last 100 episodes (seed 0; seed 1 is 3 times it)
        "impala": ("impala", None, (1.0, 2.0, 4.0), 5.0),
        "frodo": ("frodo", None, (2.0, 2.0, 2.0), 5.0),
        "frodo-self": ("frodo", SELF, (1.0, 4.0, 8.0), 10.0),
    }
    for name, (algo, settings, thirds, last) in arms.items():
        for seed in (0, 1):
            scaled = tuple((1 + 2 * seed) * v for v in thirds)
            preset = "minatar-breakout-frodo-self" if name == "frodo-self" and seed else None
            write_run(
                logdir / "breakout" / name,
                preset or f"minatar-breakout-{algo}",
                seed,
                scaled,
                (1 + 2 * seed) * last,
                None if preset else settings,
            )
    write_run(logdir / "breakout" / "frodo", "minatar-breakout-frodo", 2, (9, 9, 9), 9, None, 1500)
    write_run(logdir / "spaceinvaders" / "impala", "minatar-spaceinvaders-impala", 0, (1, 1, 1), 1)
    write_run(logdir / "spaceinvaders" / "frodo", "minatar-spaceinvaders-frodo", 0, (4, 3, 1), 2)

    found = [summary.summarise(m.parent) for m in sorted(logdir.rglob("metrics.jsonl"))]
    runs = [r for r in found if r is not None]
    assert len(found) == 9 and len(runs) == 8  # the unfinished seed 2 is left out
    groups = summary.group_runs(runs)
    assert {key: len(group) for key, group in groups.items()} == {
        ("Breakout", "frodo", BUDGET): 2,
        ("Breakout", "frodo+self w=0.1", BUDGET): 2,
        ("Breakout", "impala", BUDGET): 2,
        ("SpaceInvaders", "frodo", BUDGET): 1,
        ("SpaceInvaders", "impala", BUDGET): 1,
    }
    (impala_0,) = [r for r in groups[("Breakout", "impala", BUDGET)] if r["seed"] == 0]
    assert [impala_0[p] for p in summary.PHASES] == [1.0, 2.0, 4.0, 5.0]

    ratios = summary.ratios(groups)
    assert ratios == {
        ("frodo", BUDGET): {
            "Breakout": {"early": 2.0, "middle": 1.0, "late": 0.5, "last": 1.0},
            "SpaceInvaders": {"early": 4.0, "middle": 3.0, "late": 1.0, "last": 2.0},
        },
        ("frodo+self w=0.1", BUDGET): {
            "Breakout": {"early": 1.0, "middle": 2.0, "late": 2.0, "last": 2.0},
        },
    }
    lines = summary.report(runs)
    assert "| Breakout | frodo+self w=0.1 | 2 | 3,000 | " in "\n".join(lines)
    assert "| middle (second third) | late (last third) | last 100 episodes |" in lines[0]
    start = lines.index("frodo / IMPALA at 3,000 env steps, the ratio of the seed means:")
    assert lines[start + 4 : start + 7] == [
        "| Breakout | 2.00 | 1.00 | 0.50 | 1.00 |",
        "| SpaceInvaders | 4.00 | 3.00 | 1.00 | 2.00 |",
        "| median over games | 3.00 | 2.00 | 0.75 | 1.50 |",
    ]
    start = lines.index(
        "frodo+self w=0.1 / IMPALA at 3,000 env steps, the ratio of the seed means:"
    )
    assert lines[start + 4 : start + 6] == [
        "| Breakout | 1.00 | 2.00 | 2.00 | 2.00 |",
        "| median over games | 1.00 | 2.00 | 2.00 | 2.00 |",
    ]


def test_runs_from_before_the_consistency_form_are_read_and_budgets_kept_apart(summary, tmp_path):
    """A config.json without the keys added since the 1M runs is the plain FRODO arm; a 1M
    run and a 2M-style run of one arm are not averaged together."""
    old = write_run(tmp_path / "old", "minatar-asterix-frodo", 0, (1, 2, 3), 4)
    config = json.loads((old / "config.json").read_text())
    for key in ("consistency_cost", "consistency_form", "batch_fraction", "every", "mode"):
        del config["meta"][key]
    (old / "config.json").write_text(json.dumps(config))
    run = summary.summarise(old)
    assert (run["arm"], run["budget"], run["last"]) == ("frodo", BUDGET, 4)
    other = dict(run, budget=2 * BUDGET)
    assert len(summary.group_runs([run, other])) == 2
