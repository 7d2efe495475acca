"""The reaper of a local Ray instance: no process of it outlives the driver that started it.

Ray starts a local instance's head processes (GCS, raylet, the autoscaler monitor, the
API server, the log monitor) fate-shared with the driver (``PR_SET_PDEATHSIG``), but not
the raylet's own children: its dashboard agent and runtime-env agent, reparented to
init when the raylet dies, stay up after a driver killed with SIGKILL (seen still
running seconds later; docs/results-distributed.md, "Measurements behind the code").

:class:`Reaper` runs this file as a small separate process (standard library only, in its
own session: the terminal's Ctrl-C does not reach it) with the head processes' pids. It
follows their descendants twice a second and holds a pipe from the driver: when the
pipe closes (the driver ends, however: a clean exit, ``os._exit``, SIGKILL), every
process of the instance still alive is SIGKILLed, and the reaper exits. It only ever
kills processes it saw descending from those pids (each checked by its start time, so
that a reused pid is not touched).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterable

#: Seconds between two looks at the instance's process tree.
POLL_S = 0.5
#: Seconds a clean shutdown waits for the reaper to finish.
CLOSE_TIMEOUT_S = 5.0


def _stat(pid: int) -> tuple[int, int, str] | None:
    """``(ppid, start time, state)`` of ``pid`` from ``/proc``; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[19]), fields[0]


def descendants(roots: Iterable[int], known: dict[int, int]) -> dict[int, int]:
    """``known`` (pid -> start time) with ``roots`` and every live descendant of them added."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (info := _stat(int(name))) is not None:
            table[int(name)] = info
    members = {pid for pid in roots if pid in table} | {
        pid for pid, start in known.items() if pid in table and table[pid][1] == start
    }
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _, _) in table.items():
            if ppid in members and pid not in members:
                members.add(pid)
                grew = True
    for pid in members:
        known.setdefault(pid, table[pid][1])
    return known


def kill_alive(known: dict[int, int]) -> list[int]:
    """SIGKILL each process of ``known`` still alive (same start time, not a zombie)."""
    killed = []
    for pid, start in known.items():
        info = _stat(pid)
        if pid == os.getpid() or info is None or info[1] != start or info[2] == "Z":
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
        killed.append(pid)
    return killed


def watch(roots: list[int], pipe_fd: int = 0) -> None:
    """Follow ``roots``' process tree until ``pipe_fd`` reaches EOF, then kill what is left."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    known: dict[int, int] = {}
    while True:
        descendants(roots, known)
        readable, _, _ = select.select([pipe_fd], [], [], POLL_S)
        if readable and not os.read(pipe_fd, 4096):
            break
    kill_alive(descendants(roots, known))


class Reaper:
    """The reaper process of a local instance whose head processes are ``roots``."""

    def __init__(self, roots: Iterable[int]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__), *map(str, roots)],
            stdin=subprocess.PIPE,
            start_new_session=True,
        )

    def close(self) -> None:
        """The instance is shut down: the reaper kills what is left of it, and exits."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=CLOSE_TIMEOUT_S)


if __name__ == "__main__":
    watch([int(pid) for pid in sys.argv[1:]])
