"""What TensorBoard shows of a run: its charts, its HParams row, its tags."""

from __future__ import annotations

import re

from impala_frodo.config.presets import load_preset
from impala_frodo.config.schema import set_dotted
from impala_frodo.records.runlog import RunLogger
from impala_frodo.records.tensorboard import layout


def _accumulator(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"tensors": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def _layout(run_dir):
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    events = _accumulator(run_dir).Tensors(metadata.CONFIG_SUMMARY_TAG)
    parsed = layout_pb2.Layout()
    parsed.ParseFromString(events[-1].tensor_proto.string_val[0])
    return {c.title: [chart.title for chart in c.chart] for c in parsed.category}


def _matches(patterns: list[str], tag: str) -> bool:
    return any(re.search(pattern, tag) for pattern in patterns)


def test_the_full_layout_comes_in_order_and_charts_each_tag_once():
    full = layout()
    assert [t.split(". ", 1)[1] for t in full] == [
        "return",
        "losses",
        "policy lag",
        "throughput",
        "learned target",
    ]
    charts = {title: tags for category in full.values() for title, (_, tags) in category.items()}

    def where(tag: str) -> list[str]:
        return [title for title, patterns in charts.items() if _matches(patterns, tag)]

    learned = ["meta/target_minus_return_rms", "meta/target_return_corr", "meta/grad_norm"]
    learned += ["eval/target_rmse", "meta/target_mean", "meta/gamma", "meta/some_new_scalar"]
    others = ["Return/catch 10x5", "loss/inner", "loss/outer", "perf/policy_lag"]
    others += ["perf/env_steps_per_s", "perf/queue_size", "eval/value_rmse", "perf/grad_norm"]
    for tag in learned + others:
        assert len(where(tag)) == 1, (tag, where(tag))
    for tag in learned:
        assert _matches([p for _, (_, ps) in full["5. learned target"].items() for p in ps], tag)
    assert where("perf/grad_norm") == ["agent gradient norm"]  # exact: no neighbours


def test_a_run_charts_only_what_it_logs(tmp_path):
    """No random-walk chart on Catch, no learned target for IMPALA, no return chart on the
    random walk; the return chart is the env's own."""
    catch, walk = tmp_path / "catch", tmp_path / "walk"
    catch.mkdir(), walk.mkdir()
    with RunLogger(catch) as logger:
        logger.add_config(load_preset("catch-impala"))
    charts = _layout(catch)
    assert list(charts["1. return"]) == [
        "return on catch 11x6 (last returns_window episodes; evaluation)",
        "episode length",
    ]
    assert charts["5. learned target"] == ["target mean"]
    with RunLogger(walk) as logger:
        logger.add_config(load_preset("randomwalk-frodo"))
    charts = _layout(walk)
    assert charts["1. return"] == [
        "value RMSE against the true values (and in the 100 steps after a switch)"
    ]
    assert "target RMSE against the true values (random walk)" in charts["5. learned target"]


def test_the_hparams_row_reads_back_from_the_event_files(tmp_path):
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    cfg = set_dotted(load_preset("catch-frodo"), {"run.num_learners": 2, "run.seed": 3})
    with RunLogger(tmp_path) as logger:
        logger.add_config(cfg)
        logger.log(640, {"episode/return_window": 0.5, "episode/count": 7.0}, 1.0)
    accumulator = _accumulator(tmp_path)
    content = accumulator.SummaryMetadata(metadata.SESSION_START_INFO_TAG).plugin_data.content
    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    values = {
        k: v.string_value or v.number_value for k, v in data.session_start_info.hparams.items()
    }
    assert values["preset"] == "catch-frodo" and values["algo"] == "frodo"
    assert values["settings"] == "num_learners=2" and values["seed"] == 3
    assert values["num_learners"] == 2 and values["meta.mode"] == "inline"
    experiment = accumulator.SummaryMetadata(metadata.EXPERIMENT_TAG).plugin_data.content
    metrics = plugin_data_pb2.HParamsPluginData.FromString(experiment).experiment.metric_infos
    assert [m.name.tag for m in metrics] == [
        "episode/return_window",
        "eval/return",
        "eval/value_rmse",
    ]
    # The metric's values are the run's scalars; episode/count is no chart (a sawtooth).
    tags = accumulator.Tags()["scalars"]
    assert "episode/return_window" in tags and "Return/catch 11x6" in tags
    assert "episode/count" not in tags


def test_a_resumed_run_keeps_one_layout(tmp_path):
    from tensorboard.plugins.custom_scalar import metadata

    cfg = load_preset("catch-frodo")
    with RunLogger(tmp_path) as logger:
        logger.add_config(cfg)
        logger.log(640, {"episode/return": 0.5}, 1.0)
    with RunLogger(tmp_path, resume_step=640) as logger:
        logger.add_config(cfg)
        logger.log(1280, {"episode/return": 0.6}, 2.0)
    assert len(_accumulator(tmp_path).Tensors(metadata.CONFIG_SUMMARY_TAG)) == 1


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
