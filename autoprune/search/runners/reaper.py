"""A watchdog that stops every process a driver's local Ray instance started, however the driver ends.

Ray starts its GCS and raylet so that they die with the driver, but the raylet's own children (the
dashboard and runtime-env agents, idle workers) only notice minutes later: after a ``kill -9`` of the
driver two agents stayed alive for 86 s, one still listening (an agent reports the raylet's death to
the GCS, which is gone too, and waits 60 s for an answer). No code runs in a killed process, so the
clean-up has to live in another one: :class:`Reaper` starts this file as a small process of its own
(standard library only, its own session so that a Ctrl-C to the terminal does not stop it first).

The watchdog reads the driver's pipe. While the driver lives, it notes the processes of the driver's
Ray instance: the driver's descendants whose command line names the instance's own temp folder (the
GCS, the raylet, the agents, a worker before it renames itself) and their descendants (the workers),
each by pid and start time, so that a reused pid is never touched; other children of the driver (a
server a test started, say) are left alone. When the pipe closes, that is when the driver has ended,
cleanly or not, it waits a few seconds for those processes to exit by themselves (a clean
``ray.shutdown()``) and kills those still running.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from typing import Dict, Optional, Set, Tuple

__all__ = ["Reaper"]

#: how often the watchdog notes the driver's descendants: often while Ray starts its processes, then rarely
FAST_S, SLOW_S, FAST_FOR_S = 0.2, 2.0, 30.0
#: how long processes get to exit by themselves after the driver ended
GRACE_S = 5.0

Key = Tuple[int, str]  # (pid, start time in clock ticks)


def _processes() -> Dict[int, Tuple[int, str]]:
    """pid -> (parent pid, start time) of every process (Linux /proc)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        out[int(entry)] = (int(fields[1]), fields[19])
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _instance(driver: int, marker: str, table: Dict[int, Tuple[int, str]], known: Set[Key]) -> Set[Key]:
    """The processes of the Ray instance under ``driver``: its descendants whose command line holds
    ``marker`` (the instance's temp folder), the descendants of those, and those ``known`` already."""
    children: Dict[int, list] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: Set[Key] = set()
    todo = [(pid, False) for pid in children.get(driver, []) if pid != os.getpid()]  # not this watchdog: its command line holds the marker too
    while todo:
        pid, inside = todo.pop()
        key = (pid, table[pid][1])
        inside = inside or key in known or marker in _cmdline(pid)
        if inside:
            found.add(key)
        todo.extend((child, inside) for child in children.get(pid, []))
    return found


def _alive(keys: Set[Key]) -> Set[Key]:
    table = _processes()
    return {(pid, start) for pid, start in keys if pid in table and table[pid][1] == start}


def watch(driver: int, marker: str, stream=None) -> int:
    """The watchdog's loop (runs in its own process): note the processes of the driver's Ray instance
    (:func:`_instance`) until the driver's pipe closes, then give them :data:`GRACE_S` seconds and kill
    those left. Returns how many it killed."""
    stream = stream if stream is not None else sys.stdin
    seen: Set[Key] = set()
    started = time.monotonic()
    while True:
        every = FAST_S if time.monotonic() - started < FAST_FOR_S else SLOW_S
        ready, _, _ = select.select([stream], [], [], every)
        seen |= _instance(driver, marker, _processes(), seen)
        if ready and not os.read(stream.fileno(), 4096):
            break  # the pipe closed: the driver ended (or stopped Ray and closed it)
    deadline = time.monotonic() + GRACE_S
    left = _alive(seen)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _alive(seen)
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return len(left)


class Reaper:
    """Starts the watchdog for this (the driver's) process; :meth:`close` ends it after a clean stop.

    The watchdog also fires when this process is killed: the pipe closes with it.
    """

    def __init__(self) -> None:
        self._proc: Optional[subprocess.Popen] = None

    def start(self, marker: str) -> None:
        """Start watching the processes of the Ray instance whose command lines hold ``marker`` (its temp folder)."""
        if self._proc is not None or not sys.platform.startswith("linux"):
            return
        self._proc = subprocess.Popen(
            # -I -S: the standard library only, nothing from the environment or the working directory
            [sys.executable, "-I", "-S", os.path.abspath(__file__), str(os.getpid()), marker],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the terminal's process group leaves it to clean up
            close_fds=True,
        )

    def close(self, wait: bool = False) -> None:
        """Close the pipe: the watchdog gives the driver's Ray processes :data:`GRACE_S` seconds, kills those
        left and exits. ``wait``: return only when it has (tests)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        if wait:
            proc.wait(GRACE_S + 10)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch(int(sys.argv[1]), sys.argv[2])
