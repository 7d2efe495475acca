"""One directory per run: its config, TensorBoard events, checkpoints and ``metrics.jsonl``.

Layout of ``<logdir>/<name>-s<seed>-<YYYYmmdd-HHMMSS>/`` (the name: the preset, or the
algorithm and env, and the settings that make the run distinct; :func:`run_name`)::

    config.json        Config.to_dict() of the run (rewritten on resume with the new budget,
                       once the resumed session has saved its first checkpoint)
    events.out.tfevents.*   TensorBoard scalars (global step = env steps), the config as text,
                       the run's custom-scalars layout and HParams row
                       (impala_frodo.records.tensorboard)
    metrics.jsonl      one JSON object per log interval: env_steps, wall_time_s, time, scalars
    checkpoints/       latest.pt, previous.pt (see impala_frodo.records.checkpoint); made by the
                       first checkpoint (a sweep's synchronous runs have none)
    run.lock           held (``flock``) by the session training in this directory

On resume the same directory is reused: records past the checkpoint's env
steps are dropped from ``metrics.jsonl`` and purged from TensorBoard (they
belong to steps the resumed run does again), so no env step is counted twice.
Only one session at a time may train in a directory (:class:`RunLock`): a second
``--resume`` of a run that is still going is refused instead of interleaving two
histories. The lock is an ``flock``, so the kernel drops it when its process dies,
however it dies: there is never a stale lock to clear by hand.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from impala_frodo.config.checks import ConfigError
from impala_frodo.config.describe import run_stem
from impala_frodo.config.schema import Config
from impala_frodo.records.tensorboard import hparams_summaries, tensorboard_tags
from impala_frodo.records.tensorboard import layout as tensorboard_layout
from impala_frodo.utils import os_error_reason, write_text_atomic

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
LOCK_FILE = "run.lock"
#: Bytes written (and fsync'ed) by the writability probe: enough to hit a full disk.
_PROBE_BYTES = 64 * 1024


class RunDirError(RuntimeError):
    """A run directory cannot be used: not writable, or in use by another session."""


class StorageError(RuntimeError):
    """A write into the run directory failed mid-run (disk full, read-only); one line."""


def env_short_name(env_id: str) -> str:
    """``impala_frodo/Catch-v0`` -> ``catch``, ``CartPole-v1`` -> ``cartpole``."""
    name = env_id.rsplit("/", 1)[-1]
    name = re.sub(r"-v\d+$", "", name)
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "env"


def run_name(cfg: Config, now: float | None = None) -> str:
    """``<preset or algo-env>[-<distinct settings>]-s<seed>-<timestamp>``, e.g.
    ``catch-frodo-num_learners=2-s0-20250101-120000`` or ``frodo-catch-s0-20250101-120000``
    (:func:`~impala_frodo.config.describe.run_stem`): TensorBoard's name of the run."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"{run_stem(cfg, env_short_name(cfg.env.id))}-s{cfg.run.seed}-{stamp}"


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON with :func:`~impala_frodo.utils.write_text_atomic`."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def create_run_dir(cfg: Config, logdir: str | Path, now: float | None = None) -> Path:
    """Make a fresh run directory (suffix ``-1``, ``-2``... if the name is taken), save config.

    Raises :class:`RunDirError` (one line) if ``logdir`` cannot hold one.
    """
    logdir = Path(logdir)
    base = run_name(cfg, now)
    try:
        logdir.mkdir(parents=True, exist_ok=True)
        for i in range(1000):
            path = logdir / (base if i == 0 else f"{base}-{i}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            write_config(path, cfg)  # checkpoints/ comes with the first checkpoint
            return path
    except OSError as e:
        raise RunDirError(
            f"cannot create a run directory under logdir {str(logdir)!r}: {os_error_reason(e)}"
        ) from None
    raise RunDirError(f"could not create a run directory for {base!r} under {str(logdir)!r}")


def check_writable(run_dir: str | Path) -> None:
    """Write, fsync and remove a probe file in the run dir and its checkpoints folder.

    Run before training so that a read-only or full disk is a clear error at once,
    not a traceback at the first checkpoint minutes later. Raises :class:`RunDirError`.
    A run dir without ``checkpoints/`` yet (it comes with the first checkpoint) is not
    given one: the probe of the run dir stands for it (the folder is made there).
    """
    run_dir = Path(run_dir)
    path = run_dir
    try:
        for path in (run_dir, run_dir / CHECKPOINT_DIR):
            if path != run_dir and not path.exists():
                continue
            fd, name = tempfile.mkstemp(prefix=".write-probe.", suffix=".tmp", dir=path)
            try:
                os.write(fd, bytes(_PROBE_BYTES))
                os.fsync(fd)
            finally:
                os.close(fd)
                os.unlink(name)
        path = run_dir / METRICS_FILE
        if path.exists():  # appended to at every log record
            open(path, "a").close()
    except OSError as e:
        raise RunDirError(f"cannot write to {str(path)!r}: {os_error_reason(e)}") from None


class RunLock:
    """An exclusive ``flock`` on ``<run_dir>/run.lock`` for the session training there.

    ``acquire`` raises :class:`RunDirError` if another live process holds it (the
    message names its pid and host). The kernel releases the lock when the holder
    exits or is killed, so a crash never leaves a stale lock. The file itself stays.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunDirError(f"cannot write to {str(self.path)!r}: {os_error_reason(e)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunDirError(f"cannot lock {str(self.path)!r}: {os_error_reason(e)}") from None
            raise RunDirError(
                f"run directory {str(self.path.parent)!r} is in use by another training "
                f"session ({holder}); stop it first, or wait for it to end"
            ) from None
        note = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%F %T')}"
        with contextlib.suppress(OSError):  # the note is informative only
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{note}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def write_config(run_dir: str | Path, cfg: Config) -> None:
    write_json_atomic(Path(run_dir) / CONFIG_FILE, cfg.to_dict())


def read_config(run_dir: str | Path) -> Config:
    """The config a run was started with; :class:`ConfigError` if absent or invalid."""
    path = Path(run_dir) / CONFIG_FILE
    if not Path(run_dir).is_dir():
        raise ConfigError(f"run directory {str(run_dir)!r} does not exist")
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read {str(path)!r}: {os_error_reason(e)}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{str(path)!r} is not valid JSON: {e}") from None
    return Config.from_dict(data)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` (a torn last line from a crash is skipped).

    Raises :class:`RunDirError` (bad input) if the file is not UTF-8 text.
    """
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except UnicodeDecodeError as e:
        raise RunDirError(
            f"{str(path)!r} is not UTF-8 text (byte {e.start}): not a metrics file of a run"
        ) from None
    for line in lines:
        line = line.strip()
        if line:
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
    return records


def truncate_metrics(path: str | Path, max_env_steps: int) -> int:
    """Drop records with ``env_steps > max_env_steps`` (and torn lines); returns how many."""
    path = Path(path)
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("env_steps", 0) <= max_env_steps:
            kept.append(line)
    if len(kept) != len(lines):
        write_text_atomic(path, "".join(f"{line}\n" for line in kept))
    return len(lines) - len(kept)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


class RunLogger:
    """Writes scalars to TensorBoard and ``metrics.jsonl`` at the same global step (env steps).

    ``resume_step``: the env steps of the checkpoint a resumed run starts from;
    later records (from after that checkpoint) are dropped from both sinks.
    """

    def __init__(
        self, run_dir: str | Path, resume_step: int | None = None, tensorboard: bool = True
    ) -> None:
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / METRICS_FILE
        if resume_step is not None:
            truncate_metrics(self.metrics_path, resume_step)
        self._metrics = open(self.metrics_path, "a", buffering=1)  # noqa: SIM115 (lives long)
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self._writer = SummaryWriter(str(self.run_dir), purge_step=purge, flush_secs=10)
        self._resumed = resume_step is not None
        self._cfg: Config | None = None  # known from add_config on

    @contextlib.contextmanager
    def _writing(self, what: Path) -> Iterator[None]:
        """OSError (disk full, read-only, also from TensorBoard's writer thread) -> StorageError."""
        try:
            yield
        except OSError as e:
            raise StorageError(f"cannot write to {str(what)!r}: {os_error_reason(e)}") from None

    def log(self, env_steps: int, scalars: Mapping[str, float], wall_time_s: float) -> None:
        """One record: every scalar to TensorBoard, and one JSON line to ``metrics.jsonl``."""
        with self._writing(self.run_dir):
            self._log(env_steps, scalars, wall_time_s)

    def _log(self, env_steps: int, scalars: Mapping[str, float], wall_time_s: float) -> None:
        record: dict[str, Any] = {
            "env_steps": int(env_steps),
            "wall_time_s": round(float(wall_time_s), 3),
            "time": round(time.time(), 3),
        }
        for name, value in scalars.items():
            record[name] = _finite_or_none(float(value))
            if self._writer is not None:
                for tag in tensorboard_tags(self._cfg, name):
                    self._writer.add_scalar(tag, float(value), global_step=int(env_steps))
        self._metrics.write(json.dumps(record) + "\n")

    def add_text(self, tag: str, text: str, env_steps: int = 0) -> None:
        if self._writer is not None:
            with self._writing(self.run_dir):
                self._writer.add_text(tag, text, global_step=int(env_steps))

    def add_gif(self, tag: str, gif: bytes, size: tuple[int, int], env_steps: int) -> None:
        """An animated GIF (a video of the agent) in TensorBoard's IMAGES tab."""
        if self._writer is None:
            return
        from tensorboard.compat.proto.summary_pb2 import Summary

        height, width = size
        image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=gif)
        with self._writing(self.run_dir):
            summary = Summary(value=[Summary.Value(tag=tag, image=image)])
            self._writer.file_writer.add_summary(summary, global_step=int(env_steps))

    def add_config(self, cfg: Config, env_steps: int = 0) -> None:
        """The config as a JSON code block (TensorBoard renders text as markdown), the run's
        HParams row and, in its first session, its custom-scalars layout."""
        self._cfg = cfg
        text = json.dumps(cfg.to_dict(), indent=2, sort_keys=True)
        self.add_text("config", "\n".join(f"    {line}" for line in text.splitlines()), env_steps)
        if self._writer is None:
            return
        with self._writing(self.run_dir):
            if not self._resumed:  # a resumed run has its layout from the first session
                self._writer.add_custom_scalars(tensorboard_layout(cfg))
            for summary in hparams_summaries(cfg):
                self._writer.file_writer.add_summary(summary)

    def flush(self) -> None:
        with self._writing(self.run_dir):
            self._metrics.flush()
            if self._writer is not None:
                self._writer.flush()

    def close(self) -> None:
        """Close both sinks; raises :class:`StorageError` if unflushed data could not be written."""
        writer, self._writer = self._writer, None
        with self._writing(self.run_dir):
            try:
                with contextlib.suppress(ValueError):  # already closed
                    self._metrics.close()
            finally:
                if writer is not None:
                    writer.close()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
