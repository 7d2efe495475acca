"""Runs read back from their directories, and the names of their curves.

:func:`load_runs` reads run directories (``config.json``, ``metrics.jsonl``);
:func:`label_runs` names each run's curve by what sets it apart from the runs it is
compared with: its algorithm and preset, and the settings
(:mod:`impala_frodo.config.describe`) that differ between them, e.g.
``FRODO (catch-frodo), num_learners=2`` beside ``FRODO (catch-frodo), meta.mode=async``.
Runs of one setting share a label: they are seeds of one curve.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from impala_frodo.config.checks import ConfigError
from impala_frodo.config.describe import describe, distinct_settings, flat_settings, setting_key
from impala_frodo.config.schema import Config
from impala_frodo.records.runlog import METRICS_FILE, read_config, read_metrics

#: Written by a sweep into its directory: ``{"name": preset or "config", "seeds": [...]}``.
SWEEP_FILE = "sweep.json"
ALGO_NAMES = {
    ("impala", "control"): "IMPALA (V-trace target)",
    ("impala", "prediction"): "fixed n-step target",
    ("frodo", "control"): "FRODO",
    ("frodo", "prediction"): "FRODO",
    ("frodo-ext", "control"): "FRODO + extension",
    ("frodo-ext", "prediction"): "FRODO + extension",
    ("mgrl", "control"): "MGRL",
}


def sweep_name(run_dir: Path) -> str | None:
    """The preset of the sweep that ``run_dir`` belongs to (None outside a sweep)."""
    try:
        name = json.loads((run_dir.parent / SWEEP_FILE).read_text()).get("name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and name and name != "config" else None


@dataclass
class Run:
    path: Path
    config: Config
    records: list[dict[str, Any]]
    #: The preset the run started from (its config's, else its sweep's name), if any.
    preset: str | None = None
    #: Its curve's name among the runs loaded with it (:func:`label_runs`).
    label: str = ""

    @property
    def name(self) -> str:
        """The algorithm, and the preset if any: ``FRODO (catch-frodo)``."""
        algo = ALGO_NAMES[(self.config.algo, self.config.task)]
        return f"{algo} ({self.preset})" if self.preset else algo

    @property
    def setting(self) -> str:
        """Equal for runs of one setting (seeds of one experiment)."""
        return setting_key(self.config)

    @property
    def seed(self) -> int:
        return self.config.run.seed

    @property
    def env_key(self) -> tuple[str, str, str]:
        """What must be equal for runs to share a panel: env id, its kwargs, the task."""
        kwargs = json.dumps(self.config.env.kwargs, sort_keys=True)
        return self.config.env.id, kwargs, self.config.task

    @property
    def env_title(self) -> str:
        env = self.config.env
        details = ", ".join(f"{k}={v}" for k, v in env.kwargs.items())
        return f"{env.id.split('/')[-1]} {details}".strip()

    def series(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(env steps, values) of the records that have ``metric``."""
        points = [(r["env_steps"], r[metric]) for r in self.records if r.get(metric) is not None]
        if not points:
            return np.zeros(0), np.zeros(0)
        steps, values = zip(*points, strict=True)
        return np.asarray(steps, float), np.asarray(values, float)


def expand_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories as given, with any other directory replaced by the runs below it.

    A run directory holds ``metrics.jsonl``; ``runs/`` or a sweep directory holds run
    directories, at any depth (``runs/sweep-x-<time>/<run>/``). Anything else is a
    :class:`ConfigError`.
    """
    out: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if (path / METRICS_FILE).is_file():
            found = [path]
        elif path.is_dir():
            found = sorted(p.parent for p in path.rglob(METRICS_FILE))
        else:
            found = []
        if not found:
            raise ConfigError(
                f"{str(path)!r} is not a run directory (no {METRICS_FILE}) "
                "nor a directory holding runs"
            )
        out.extend(p for p in found if p not in out)
    return out


def load_runs(run_dirs: Sequence[str | Path]) -> list[Run]:
    """Read run directories; a clear :class:`ConfigError` for one that is not a run."""
    runs = []
    for run_dir in run_dirs:
        path = Path(run_dir)
        metrics = path / METRICS_FILE
        if not metrics.is_file():
            raise ConfigError(f"{str(path)!r} is not a run directory: no {METRICS_FILE}")
        cfg = read_config(path)
        runs.append(Run(path, cfg, read_metrics(metrics), cfg.preset or sweep_name(path)))
    label_runs(runs)
    return runs


def label_runs(runs: Sequence[Run]) -> None:
    """Set each run's :attr:`Run.label`: its :attr:`Run.name`, and the settings that vary
    among ``runs`` (the env's aside: envs get panels of their own) where the run's differ
    from its preset's or the defaults. Runs of one setting get one label, distinct
    settings distinct labels (all varying settings are named where fewer would not do)."""
    named: dict[str, Run] = {}  # a run per setting, one with a preset where there is one
    for run in sorted(runs, key=lambda r: r.preset is None):
        named.setdefault(run.setting, run)
    settings = {key: flat_settings(run.config) for key, run in named.items()}
    keys = sorted({k for flat in settings.values() for k in flat if not k.startswith("env.")})
    varying = [
        k
        for k in keys
        if len({json.dumps(flat.get(k), default=str) for flat in settings.values()}) > 1
    ]

    def label(key: str, all_varying: bool) -> str:
        run, flat = named[key], settings[key]
        own = flat if all_varying else distinct_settings(run.config)
        shown = {k: flat.get(k) for k in varying if k in own and k != "algo"}
        return f"{run.name}, {describe(shown)}" if shown else run.name

    labels = {key: label(key, all_varying=False) for key in named}
    if len(set(labels.values())) < len(labels):  # two settings, one label: name them all
        labels = {key: label(key, all_varying=True) for key in named}
    for run in runs:
        run.label = labels[run.setting]
