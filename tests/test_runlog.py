"""TensorBoard's custom-scalars layout of a run directory."""

from __future__ import annotations

import re

from impala_frodo.records.runlog import TENSORBOARD_LAYOUT, RunLogger


def _layout(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    accumulator = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    accumulator.Reload()
    events = accumulator.Tensors(metadata.CONFIG_SUMMARY_TAG)
    layout = layout_pb2.Layout()
    layout.ParseFromString(events[-1].tensor_proto.string_val[0])
    return layout


def _matches(chart, tag: str) -> bool:
    return any(re.search(pattern, tag) for pattern in chart.multiline.tag)


def test_layout_groups_come_in_order_and_match_their_tags(tmp_path):
    with RunLogger(tmp_path) as logger:
        logger.log(640, {"episode/return": 0.5, "meta/target_minus_return_rms": 0.1}, 1.0)
    layout = _layout(tmp_path)
    titles = [category.title for category in layout.category]
    assert titles == list(TENSORBOARD_LAYOUT)
    assert [t.split(". ", 1)[1] for t in titles] == [
        "return",
        "losses",
        "policy lag",
        "throughput",
        "learned target",
    ]
    charts = {c.title: c for category in layout.category for c in category.chart}

    def where(tag: str) -> list[str]:
        return [title for title, chart in charts.items() if _matches(chart, tag)]

    # Every tag the learner writes that matters is in exactly one chart.
    learned = [
        "meta/target_minus_return_mean",
        "meta/target_minus_return_rms",
        "meta/target_return_corr",
        "meta/grad_norm",
        "eval/target_rmse",
        "meta/target_mean",
        "meta/gamma",
        "meta/some_new_scalar",
    ]
    others = ["episode/return", "loss/inner", "loss/outer", "perf/policy_lag"]
    others += ["perf/env_steps_per_s", "perf/queue_size", "eval/value_rmse", "perf/grad_norm"]
    for tag in learned + others:
        assert len(where(tag)) == 1, (tag, where(tag))
    target_group = next(c for c in layout.category if c.title.endswith("learned target"))
    for tag in learned:
        assert any(_matches(chart, tag) for chart in target_group.chart), tag
    # Exact tags do not catch their neighbours.
    assert where("episode/return_window") == where("episode/return")
    assert where("perf/grad_norm") == ["agent gradient norm"]


def test_a_resumed_run_keeps_one_layout(tmp_path):
    with RunLogger(tmp_path) as logger:
        logger.log(640, {"episode/return": 0.5}, 1.0)
    with RunLogger(tmp_path, resume_step=640) as logger:
        logger.log(1280, {"episode/return": 0.6}, 2.0)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import metadata

    accumulator = EventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
    accumulator.Reload()
    assert len(accumulator.Tensors(metadata.CONFIG_SUMMARY_TAG)) == 1


def test_json_is_replaced_whole_and_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    from impala_frodo import utils
    from impala_frodo.records.runlog import write_json_atomic

    path = tmp_path / "sub" / "info.json"
    write_json_atomic(path, {"a": 1})
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # as open() would make it

    def refuse(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(utils.os, "fsync", refuse)
    try:
        write_json_atomic(path, {"a": 2})
    except OSError as e:
        assert utils.os_error_reason(e) == "No space left on device"
    else:
        raise AssertionError("the write should have failed")
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in path.parent.iterdir()] == ["info.json"]  # no temp file left


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
