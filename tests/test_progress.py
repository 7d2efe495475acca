"""The progress display: plain lines for logs, a bar whose end matches the summary."""

from __future__ import annotations

import io

from learner.control.progress import Progress, summary_fields


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


RECORD = {"episode/return_window": 0.8531, "perf/policy_lag": 1.24, "loss/inner": 0.3}


def test_lines_mode_prints_a_plain_line_every_every_s():
    clock, out = FakeClock(), io.StringIO()
    progress = Progress("lines", 500_000, stream=out, clock=clock, every_s=10.0)
    for step in range(1, 40):  # 39 updates of 4,000 steps, one per second
        clock.now += 1.0
        progress.update(4_000 * step)
        if step == 15:
            progress.show(RECORD)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # at 10, 20 and 30 s
    assert "\r" not in out.getvalue()
    assert lines[0].startswith("[impala-frodo] 40,000/500,000 env steps (8%), 4.0k steps/s")
    assert "ret" not in lines[0] and "ret 0.853, lag 1.2" in lines[1]
    assert lines[1].endswith("0:20 elapsed, ~1:45 left")
    progress.close({**RECORD, "episode/return_window": 0.9})
    final = out.getvalue().splitlines()[-1]
    assert "156,000/500,000" in final and "ret 0.900" in final and "left" in final


def test_lines_mode_is_silent_when_nothing_ran():
    out = io.StringIO()
    Progress("lines", 1000, stream=out, clock=FakeClock()).close()
    assert out.getvalue() == ""


def test_bar_keeps_its_total_past_the_budget_and_ends_on_the_final_record():
    out = io.StringIO()
    progress = Progress("bar", 1000, stream=out, clock=FakeClock())
    progress.update(640)
    progress.show({"episode/return_window": 0.5})
    progress.update(1280)  # the last update overshoots the 1,000-step budget
    progress.close({"episode/return_window": 0.75})
    final = out.getvalue().split("\r")[-1]
    assert "1.28k/1.28k" in final and "100%" in final
    assert "ret=0.750" in final


def test_off_mode_writes_nothing():
    out = io.StringIO()
    progress = Progress("off", 1000, stream=out, clock=FakeClock())
    progress.update(2000)
    progress.close(RECORD)
    assert out.getvalue() == ""


def test_summary_fields_skip_missing_and_non_finite_values():
    fields = summary_fields({"episode/return_window": float("nan"), "eval/value_rmse": 0.2})
    assert fields == {"rmse": "0.200"}
