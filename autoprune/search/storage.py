"""Where a study lives, parsed once: a journal file (the default) or a database URL.

Optuna takes a URL string for a relational database (``sqlite:///PATH``,
``postgresql://USER:PASSWORD@HOST/DB``, ``mysql://...``), a ``JournalStorage`` object for a
journal file, and a ``GrpcStorageProxy`` for Optuna's gRPC storage proxy (``grpc://HOST:PORT``: one
``optuna.storages.run_grpc_proxy_server`` in front of a database, for many workers; README
"Scaling out"). :class:`Storage` is the one value the rest of the search passes around: it
knows which kind it is, whether searches on other machines may share it (a database
server), how to open it, how to show it without its password, and how to make a journal
safe to append to after a killed writer (:mod:`autoprune.search.journal`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from optuna.exceptions import ExperimentalWarning
from optuna.storages import GrpcStorageProxy, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from autoprune.services.databases import check_connects, check_url, server_lock
from autoprune.errors import ConfigError
from autoprune.search.interrupts import SignalScope
from autoprune.search.journal import remove_stale_journal_lock, repair_journal
from autoprune.services.urls import shown, written

__all__ = ["Storage", "HeldJournalFile", "storage_for", "storage_of", "is_shared_storage", "ACCEPTED"]

log = logging.getLogger(__name__)

#: what ``--storage`` accepts, for messages
ACCEPTED = (
    "a journal file path (the default: runs/<study>/optuna.journal), "
    "sqlite:///PATH, postgresql://USER:PASSWORD@HOST/DB, mysql://USER:PASSWORD@HOST/DB "
    "or grpc://HOST:PORT (Optuna's gRPC storage proxy)"
)
GRPC = "grpc://"


class HeldJournalFile(JournalFileBackend):
    """Optuna's journal file, with SIGINT / SIGTERM held while records are appended (:meth:`SignalScope.held`).

    Optuna's file lock is not safe against an exception raised by a signal handler: raised as
    ``acquire()`` tries the lock, it makes it remove the lock file another process holds (two writers
    at once); raised inside ``release()``, it comes out as a ``FileNotFoundError`` (seen in CI); raised
    while it waits, the record is lost. Reading takes no lock.
    """

    def append_logs(self, logs: List[Dict[str, Any]]) -> None:
        with SignalScope.held():
            super().append_logs(logs)


@dataclass(frozen=True)
class Storage:
    """A study's storage: ``text`` is the journal file path or the database URL, as given."""

    text: str

    @classmethod
    def parse(cls, text: Optional[str], default_journal: Optional[Path] = None) -> "Storage":
        """Check ``text`` (None: ``default_journal``) once, before anything is created.

        Raises:
            ConfigError: a folder instead of a journal file, a URL Optuna cannot open, or a
                database driver that is not installed (one line, the password hidden).
        """
        if text is None:
            if default_journal is None:
                raise ConfigError(f"--storage: no storage given; accepted: {ACCEPTED}")
            return cls(str(default_journal))
        storage = cls(text)
        if storage.is_journal:
            if text.strip() == "" or text.endswith(os.sep) or Path(text).is_dir():
                raise ConfigError(f"--storage {text!r}: a journal file path is needed, not a folder; accepted: {ACCEPTED}")
            return storage
        if storage.is_grpc:
            storage.grpc_address()
            return storage
        check_url(text, "--storage", ACCEPTED)
        return storage

    @property
    def is_journal(self) -> bool:
        return "://" not in self.text

    @property
    def is_grpc(self) -> bool:
        return self.text.startswith(GRPC)

    def grpc_address(self) -> tuple[str, int]:
        """``(host, port)`` of a ``grpc://HOST:PORT`` storage.

        Raises:
            ConfigError: not HOST:PORT.
        """
        host, _, port = self.text[len(GRPC):].rstrip("/").rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in host or "@" in host:
            shown = self.text if "@" not in self.text else GRPC + "***"  # never echo what may be a password
            raise ConfigError(f"--storage {shown}: Optuna's gRPC storage proxy is given as grpc://HOST:PORT (e.g. grpc://10.0.0.5:13000); accepted: {ACCEPTED}")
        return host.strip("[]"), int(port)

    @property
    def is_sqlite(self) -> bool:
        return self.text.startswith("sqlite")

    @property
    def shared(self) -> bool:
        """A database server: searches on other machines may add trials at the same time
        (the study lock file only keeps out searches on this machine)."""
        return not self.is_journal and not self.is_sqlite

    @property
    def journal_path(self) -> Optional[Path]:
        return Path(self.text) if self.is_journal else None

    def display(self) -> str:
        """The storage as it may be shown: a URL's password replaced by ``***`` (:func:`autoprune.services.urls.shown`)."""
        return shown(self.text)

    @property
    def recorded(self) -> str:
        """The storage as it may be written (``search.json``, a Ray experiment): without its password."""
        return written(self.text)

    def same_as(self, other: "Storage") -> bool:
        """The same study storage, passwords set aside (journal paths compared resolved)."""
        if self.is_journal or other.is_journal:
            return self.is_journal and other.is_journal and Path(self.text).resolve() == Path(other.text).resolve()
        return self.recorded == other.recorded

    def open(self) -> Any:
        """What ``optuna.create_study`` / ``load_study`` take: a ``JournalStorage`` on the file, an ``RDBStorage``
        on a database server (created under the server's lock: two drivers creating Optuna's tables in a fresh
        database at once made one fail with an IntegrityError), or the URL (SQLite)."""
        if self.is_journal:
            return JournalStorage(HeldJournalFile(self.text))
        if self.is_grpc:
            host, port = self.grpc_address()
            try:
                with warnings.catch_warnings():  # "experimental" since Optuna 4.2: the README says so once, not every open
                    warnings.simplefilter("ignore", ExperimentalWarning)
                    return GrpcStorageProxy(host=host, port=port)
            except ImportError as err:  # grpcio: the 'cluster' extra
                raise ConfigError(f"--storage {self.text}: {err}; install it: pip install -c constraints.txt -e '.[cluster]'") from None
        if self.shared:
            with server_lock(self.text, "optuna-schema"):
                return RDBStorage(self.text)
        return self.text

    def study_lock(self, study: str) -> Any:
        """A lock that every driver of ``study`` on this storage takes to count and ask trials or to create the
        study: held in the database server (:func:`autoprune.services.databases.server_lock`) when drivers on several
        machines may share it; nothing here for a journal or SQLite (the runs folder's file locks order one machine)."""
        return server_lock(self.text, f"study:{study}") if self.shared else contextlib.nullcontext()

    def relocated(self, own_journal: Path) -> "Storage":
        """The study's own journal, wherever the runs folder is now: ``search.json`` may hold a path
        relative to another working directory, or the runs folder may have been copied or mounted."""
        if self.is_journal and Path(self.text).name == own_journal.name and own_journal.is_file():
            return Storage(str(own_journal))
        return self

    def check_reachable(self, timeout_s: int = 5) -> None:
        """Fail fast, with one line, when a database server cannot be reached (before any training).

        Raises:
            ConfigError: naming the URL (password hidden) and what went wrong.
        """
        if self.is_grpc:
            host, port = self.grpc_address()
            try:
                socket.create_connection((host, port), timeout=timeout_s).close()
            except OSError as err:
                raise ConfigError(
                    f"--storage {self.text}: no gRPC storage proxy answers there ({type(err).__name__}: {err}); start one "
                    f"(optuna.storages.run_grpc_proxy_server, README \"Scaling out\") or fix the address"
                ) from None
            return
        if self.shared:
            check_connects(self.text, "--storage", timeout_s)

    def prepare(self) -> None:
        """Before anything appends to a journal (hold the study lock, no worker running): clear a dead
        writer's lock and drop a torn tail (a backup is kept). Nothing to do for a database."""
        if not self.is_journal:
            return
        if remove_stale_journal_lock(self.text):
            log.info("removed the journal lock %s.lock left by a killed search", self.text)
        report = repair_journal(self.text)
        if report.repaired:
            log.warning(
                "repaired the study journal %s: %s (%d bytes dropped, %d records recovered); the original is kept as %s",
                self.text, "; ".join(report.notes), report.dropped_bytes, report.recovered_records, Path(report.backup).name,
            )


def storage_for(storage: str) -> Any:
    """An Optuna storage from a URL or a journal file path (``Storage(storage).open()``)."""
    return Storage(storage).open()


def storage_of(study: Any) -> Optional[Storage]:
    """The storage an opened study lives in (None for a journal: its file is known from the runs folder)."""
    url = str(getattr(getattr(study._storage, "_backend", study._storage), "url", "") or "")
    return Storage(url) if url else None


def is_shared_storage(study: Any) -> bool:
    """True when an opened study lives in a database server, directly or through a gRPC proxy (see :attr:`Storage.shared`)."""
    if isinstance(study._storage, GrpcStorageProxy):
        return True
    store = storage_of(study)
    return store is not None and store.shared
