"""Repair of Optuna journal files.

An Optuna journal is one JSON record per line, appended by every worker. A process
killed mid-write (power loss, SIGKILL, OOM) leaves a *torn* last line. Optuna's reader
skips it, but the next append lands on the same line, and from then on every reader
fails with a ``JSONDecodeError``. ``repair_journal`` runs before a search appends
anything (under the study lock): it keeps a backup of the file, drops the torn bytes,
recovers records glued behind a torn fragment, and says so.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from autoprune.errors import TrialError

__all__ = ["repair_journal", "JournalRepair", "remove_stale_journal_lock"]

log = logging.getLogger(__name__)

#: every record Optuna's JournalStorage writes starts with this key (``json.dumps`` of its log dicts)
_RECORD_START = b'{"op_code":'

@dataclass
class JournalRepair:
    """What ``repair_journal`` did."""

    path: str
    backup: Optional[str] = None
    dropped_bytes: int = 0
    recovered_records: int = 0
    notes: List[str] = field(default_factory=list)

    @property
    def repaired(self) -> bool:
        return self.backup is not None


def _valid(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def repair_journal(path: str | os.PathLike) -> JournalRepair:
    """Make a journal file readable and appendable again; call only while no one writes to it.

    * a last line without its newline, or one that is not valid JSON, is torn: dropped;
    * a line made of a torn fragment followed by a whole record (what the next append did to
      a torn tail) keeps the record and drops the fragment.

    The original file is copied to ``<journal>.torn-<time>.bak`` before anything changes.

    Raises:
        TrialError: a line in the middle that cannot be recovered (names the file and line).
    """
    path = Path(path)
    report = JournalRepair(str(path))
    if not path.is_file():
        return report
    raw = path.read_bytes()
    if not raw:
        return report
    lines = raw.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    out: List[bytes] = []
    changed = False
    if tail:
        report.dropped_bytes += len(tail)
        report.notes.append(f"a torn last record of {len(tail)} bytes")
        changed = True
    for i, line in enumerate(lines):
        if _valid(line):
            out.append(line)
            continue
        last = i == len(lines) - 1 and not tail
        start = line.rfind(_RECORD_START)
        if start > 0 and _valid(line[start:]):
            out.append(line[start:])
            report.dropped_bytes += start
            report.recovered_records += 1
            report.notes.append(f"line {i + 1}: a torn fragment of {start} bytes before a whole record")
            changed = True
        elif last:
            report.dropped_bytes += len(line) + 1
            report.notes.append(f"a torn last record of {len(line)} bytes")
            changed = True
        else:
            raise TrialError(
                f"{path}: line {i + 1} is not a journal record and cannot be recovered; "
                f"the study storage is damaged (move the file away to start the study afresh)"
            )
    if not changed:
        return report
    backup = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.bak")
    shutil.copy2(path, backup)
    tmp = path.with_name(path.name + ".repair.tmp")
    with open(tmp, "wb") as fh:
        fh.write(b"".join(line + b"\n" for line in out))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    report.backup = str(backup)
    return report


def remove_stale_journal_lock(path: str | os.PathLike) -> bool:
    """Remove Optuna's journal lock (``<journal>.lock``) left by a killed writer.

    Call only while holding the study lock with no worker running: then no one can hold it.
    """
    lock = Path(str(path) + ".lock")
    if lock.is_symlink() or lock.exists():
        lock.unlink()
        return True
    return False
