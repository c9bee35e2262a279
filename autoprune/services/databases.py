"""Database URLs as autoprune uses them (a study's ``--storage``, a ``--tracking-uri``): checked once,
before anything is created, with one-line errors that never show the password.

* :func:`check_url`: a URL SQLAlchemy can open, whose driver is installed (``create_engine`` would
  import the driver later, outside any check, and end in a traceback);
* :func:`check_connects`: the server answers, within a few seconds;
* :func:`database_failure`: whether an error means the database failed under us (its server went away,
  refused us, or its disk is full or read-only);
* :func:`server_lock`: a lock held in the database server itself, so that drivers on several machines
  take turns (a file lock orders the processes of one machine only).
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Dict, Iterator, Optional

import sqlalchemy
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from autoprune.errors import ConfigError
from autoprune.services.urls import has_password, shown

__all__ = ["check_url", "check_connects", "database_failure", "server_lock", "PASSWORD_HINT"]

#: where a password comes from when a stored URL (never holding one) is used again
PASSWORD_HINT = "no password is ever stored: give the URL with it again, or set PGPASSWORD / ~/.pgpass"


def check_url(url: str, option: str, accepted: str) -> None:
    """Refuse a URL SQLAlchemy cannot open, or whose database driver is not installed.

    Raises:
        ConfigError: one line naming ``option`` and the URL (password hidden).
    """
    try:
        make_url(url).get_dialect().import_dbapi()
    except (ArgumentError, NoSuchModuleError, ValueError) as err:
        reason = str(err).splitlines()[0][:160]
        raise ConfigError(f"{option} {shown(url)}: not a database URL SQLAlchemy can open ({reason}); accepted: {accepted}") from None
    except ImportError as err:  # a known dialect whose driver is not installed (psycopg2, MySQLdb, pg8000, ...)
        raise ConfigError(f"{option} {shown(url)}: the database driver is not installed ({err}); install it, or use one of: {accepted}") from None


def check_connects(url: str, option: str, timeout_s: int = 5) -> None:
    """Fail fast, with one line, when the database server cannot be reached or refuses us.

    Raises:
        ConfigError: naming ``option``, the URL (password hidden) and the server's reason.
    """
    parsed = make_url(url)
    connect_args = {"connect_timeout": timeout_s} if parsed.get_backend_name() in ("postgresql", "mysql") else {}
    engine = sqlalchemy.create_engine(parsed, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)
    try:
        engine.connect().close()
    except Exception as err:  # OperationalError and friends: all mean "cannot use it"
        reason = shown(str(getattr(err, "orig", None) or err).strip().splitlines()[0][:200])
        hint = "" if has_password(url) else f"; {PASSWORD_HINT}"
        raise ConfigError(f"{option} {shown(url)}: cannot connect to the database ({reason}); start the server, create the database, or fix the URL{hint}") from None
    finally:
        engine.dispose()


def database_failure(err: BaseException) -> Optional[str]:
    """The first line (password hidden) of the database error ``err`` is or was raised from (its cause /
    context chain): a connection lost or refused, a disk full or read-only under SQLite; else None."""
    seen, link = set(), err
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)) or (
            isinstance(link, sqlalchemy.exc.DBAPIError) and link.connection_invalidated
        ):
            text = str(getattr(link, "orig", None) or link).strip()
            return shown(text.splitlines()[0][:200] if text else type(link).__name__)
        link = link.__cause__ or link.__context__
    return None


_ENGINES: Dict[str, sqlalchemy.engine.Engine] = {}


def _engine(url: str) -> sqlalchemy.engine.Engine:
    """One small engine per URL and process for :func:`server_lock` (the lock lives as long as its connection)."""
    if url not in _ENGINES:
        _ENGINES[url] = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    return _ENGINES[url]


@contextlib.contextmanager
def server_lock(url: str, name: str) -> Iterator[None]:
    """Hold the lock ``name`` in the database server of ``url`` for the block: PostgreSQL's session advisory
    lock (``pg_advisory_lock``), MySQL's ``GET_LOCK``. Other databases (SQLite: one machine) hold none here.

    The lock belongs to this block's connection: a driver that dies (even by SIGKILL) loses its
    connection, and the server releases the lock. Waiting is unbounded, as for a file lock: the
    holder only counts trials and asks one, or creates a study.
    """
    backend = make_url(url).get_backend_name()
    if backend not in ("postgresql", "mysql"):
        yield
        return
    key = int.from_bytes(hashlib.sha256(f"autoprune:{name}".encode()).digest()[:8], "big", signed=True)
    with _engine(url).connect() as conn:
        if backend == "postgresql":
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        else:  # MySQL lock names are at most 64 characters
            conn.execute(sqlalchemy.text("SELECT GET_LOCK(:n, -1)"), {"n": f"autoprune:{key:x}"})
        conn.commit()
        try:
            yield
        finally:
            with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):  # a lost connection has released it already
                if backend == "postgresql":
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                else:
                    conn.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:n)"), {"n": f"autoprune:{key:x}"})
                conn.commit()

