"""What TensorBoard shows of a run beyond its scalars: charts, the HParams table, tags.

- :func:`layout`: the CUSTOM SCALARS tab, made from the run's config so that it holds
  charts of what the run logs only (no random-walk chart on Catch, no learned target for
  IMPALA, no evaluation chart without evaluation): return, losses, policy lag,
  throughput, learned target, in that order.
- :func:`hparams_summaries`: the run's row in the HParams tab: its main settings, and as
  metrics the mean return of the last episodes and the evaluation's return (TensorBoard
  shows each one's last value).
- :func:`tensorboard_tags`: the TensorBoard tags of a record's scalars: ``episode/count``
  (a sawtooth of no use as a chart) is left out, and the returns of a control task are
  written again as ``Return/<env>`` (the mean of the last ``returns_window`` episodes) and
  ``Return/<env>/evaluation``: the TIME SERIES tab opens on that group (upper case sorts
  before the other groups), a card per env, so that runs of different envs never share an
  axis.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from impala_frodo.config.describe import describe, distinct_settings
from impala_frodo.config.schema import Config

#: Record scalars that TensorBoard does not get (metrics.jsonl keeps them).
NOT_CHARTED = frozenset({"episode/count"})
#: Record scalars written again per env, ``Return/<env>`` and ``Return/<env>/evaluation``:
#: the group TensorBoard's TIME SERIES opens on (upper case sorts first), a card per env.
RETURN_ALIASES = {"episode/return_window": "", "eval/return": "/evaluation"}
RETURN_GROUP = "Return"
#: The HParams tab's metrics: TensorBoard shows the last value of each.
HPARAM_METRICS = ("episode/return_window", "eval/return", "eval/value_rmse")


def env_tag(cfg: Config) -> str:
    """The env as a TensorBoard tag part: ``catch 11x6``, ``randomwalk``, ``pong``."""
    name = cfg.env.id.rsplit("/", 1)[-1]
    name = re.sub(r"-v\d+$", "", name).lower()
    if name == "catch":
        kwargs = cfg.env.kwargs
        return f"catch {kwargs.get('rows', 10)}x{kwargs.get('columns', 5)}"
    return name


def tensorboard_tags(cfg: Config | None, name: str) -> Iterator[str]:
    """The tags a record's scalar ``name`` is written under (none for :data:`NOT_CHARTED`;
    no per-env alias before the config is known)."""
    if name in NOT_CHARTED:
        return
    yield name
    if cfg is not None and name in RETURN_ALIASES and cfg.task == "control":
        yield f"{RETURN_GROUP}/{env_tag(cfg)}{RETURN_ALIASES[name]}"


def _exactly(*tags: str) -> list[str]:
    """Custom-scalar charts take regular expressions: these match the tags and nothing else."""
    return [f"^{re.escape(tag)}$" for tag in tags]


Predicate = Callable[[Config], bool]


def _always(cfg: Config) -> bool:
    return True


def _control(cfg: Config) -> bool:
    return cfg.task == "control"


def _prediction(cfg: Config) -> bool:
    return cfg.task == "prediction"


def _meta(cfg: Config) -> bool:
    return cfg.is_meta


_OTHER_META = (
    r"^meta/(?!(target_minus_return_mean|target_minus_return_rms|target_return_corr"
    r"|grad_norm|target_mean|gamma|lambda|beta)$)"
)

#: ``(category, chart title, tag patterns, whether a run of a config writes them)``; the
#: return chart's title and tags are the env's (:func:`_return_chart`).
CHARTS: tuple[tuple[str, str, list[str], Predicate], ...] = (
    ("1. return", "value RMSE against the true values (and in the 100 steps after a switch)",
     _exactly("eval/value_rmse", "eval/value_rmse_after_switch"), _prediction),
    ("1. return", "episode length", _exactly("episode/length"), _control),
    ("2. losses", "inner and outer losses",
     [r"^loss/(inner|outer|outer_canonical|revise)$"], _always),
    ("2. losses", "loss terms", _exactly("loss/policy", "loss/value", "loss/entropy"), _always),
    ("2. losses", "agent gradient norm", _exactly("perf/grad_norm"), _always),
    ("3. policy lag", "policy lag (updates between acting and learning)",
     _exactly("perf/policy_lag", "perf/policy_lag_max"), _always),
    ("4. throughput", "env steps/s", _exactly("perf/env_steps_per_s"), _always),
    ("4. throughput", "updates/s", _exactly("perf/updates_per_s"), _always),
    ("4. throughput", "queue and in-flight unrolls",
     _exactly("perf/queue_size", "perf/in_flight"), _always),
    ("4. throughput", "fraction of time the learner waits",
     _exactly("perf/learner_wait_frac"), _always),
    ("4. throughput", "data-parallel update (s)",
     _exactly("perf/learner_update_s", "perf/collective_s", "perf/learner_call_s"),
     lambda cfg: cfg.run.num_learners > 1),
    ("5. learned target", "target minus return (mean, RMS)",
     _exactly("meta/target_minus_return_mean", "meta/target_minus_return_rms"), _meta),
    ("5. learned target", "correlation of target and return",
     _exactly("meta/target_return_corr"), _meta),
    ("5. learned target", "target RMSE against the true values (random walk)",
     _exactly("eval/target_rmse"), lambda cfg: cfg.is_meta and cfg.task == "prediction"),
    ("5. learned target", "meta-gradient norm", _exactly("meta/grad_norm"), _meta),
    ("5. learned target", "target mean", _exactly("meta/target_mean"), _always),
    ("5. learned target", "meta-parameters (MGRL's gamma, lambda; beta)",
     _exactly("meta/gamma", "meta/lambda", "meta/beta"),
     lambda cfg: cfg.algo in ("mgrl", "frodo-ext")),
    ("5. learned target", "other meta/ scalars", [_OTHER_META], _meta),
)  # fmt: skip


def _return_chart(cfg: Config) -> tuple[str, list[str]]:
    """The return chart of the run's env (one title and one pattern for every run of it,
    evaluating or not): runs of other envs never share its axis."""
    env = re.escape(f"{RETURN_GROUP}/{env_tag(cfg)}")
    return f"return on {env_tag(cfg)} (last returns_window episodes; evaluation)", [
        rf"^{env}(/evaluation)?$"
    ]


def layout(cfg: Config | None = None) -> dict[str, dict[str, list]]:
    """The custom-scalars layout (``{category: {chart: ["Multiline", [tag regexes]]}}``) of
    a run of ``cfg``: the charts of the tags it writes; every chart for ``None``."""
    out: dict[str, dict[str, list]] = {}
    if cfg is None or _control(cfg):
        title, tags = _return_chart(cfg or Config())
        out["1. return"] = {title: ["Multiline", tags]}
    for category, title, tags, writes in CHARTS:
        if cfg is None or writes(cfg):
            out.setdefault(category, {})[title] = ["Multiline", tags]
    return out


def hparams(cfg: Config) -> dict[str, Any]:
    """The HParams tab's columns for a run: its main settings (numbers, text, booleans)."""
    run, kwargs = cfg.run, cfg.env.kwargs
    env = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return {
        "preset": cfg.preset or "-",
        "algo": cfg.algo,
        "env": f"{cfg.env.id} ({env})" if env else cfg.env.id,
        "settings": describe(distinct_settings(cfg)) or "-",
        "seed": run.seed,
        "total_env_steps": run.total_env_steps,
        "num_actors": run.num_actors,
        "envs_per_actor": run.envs_per_actor,
        "num_learners": run.num_learners,
        "unroll_length": run.unroll_length,
        "batches_per_update": run.batches_per_update,
        "meta.mode": cfg.meta.mode if cfg.is_meta else "-",
        "meta.target": cfg.meta.target if cfg.algo.startswith("frodo") else "-",
        "meta.lr": cfg.meta.lr if cfg.is_meta else 0.0,
        "optim.lr": cfg.optim.lr,
        "loss.gamma": cfg.loss.gamma,
        "hidden_sizes": "x".join(map(str, cfg.agent.hidden_sizes)) or "-",
    }


def hparams_summaries(cfg: Config) -> list[Any]:
    """The summaries that put a run in the HParams tab (an experiment naming the columns,
    and the run's session with its values), for ``FileWriter.add_summary``."""
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    experiment, start, _end = hparams_summary(hparams(cfg), dict.fromkeys(HPARAM_METRICS, 0.0))
    return [experiment, start]
