"""URLs as autoprune shows and writes them: never with their password.

A storage URL (``postgresql://USER:PASSWORD@HOST/DB``) or a tracking URI may carry a password.
:func:`shown` is the one way such a URL is printed (the password as ``***``); :func:`written`
is the one way it is stored (``search.json``, the summary, a Ray experiment): the password
dropped. Where the password comes from when a stored URL is used again: the same URL given
again (``--storage`` / ``AUTOPRUNE_STORAGE``, ``--tracking-uri`` / ``MLFLOW_TRACKING_URI``), or
the driver's own sources (PostgreSQL's ``PGPASSWORD`` or ``~/.pgpass``). Plain paths pass
unchanged. Light on purpose (``re`` only): the CLI and the edge use it before anything heavy.
"""

from __future__ import annotations

import re

__all__ = ["shown", "written", "same_place", "has_password"]

#: ``scheme://user:password@`` as SQLAlchemy's URL parser reads it (the password runs to the first ``@``)
_USERINFO = re.compile(r"^(?P<head>[A-Za-z][\w+.-]*://[^:/@]*):(?P<password>[^@]*)@")
#: a password given as a query parameter (``?password=...``, as psycopg and PyMySQL accept)
_QUERY = re.compile(r"(?P<key>[?&](?:password|passwd|pwd)=)(?P<password>[^&#]*)", re.IGNORECASE)


def shown(url: str) -> str:
    """``url`` as it may be printed: a password replaced by ``***``."""
    url = _USERINFO.sub(lambda m: f"{m['head']}:***@", url, count=1)
    return _QUERY.sub(lambda m: f"{m['key']}***", url)


def written(url: str) -> str:
    """``url`` as it may be stored: its password dropped (``user@host``, no password parameter)."""
    url = _USERINFO.sub(lambda m: f"{m['head']}@", url, count=1)
    url = _QUERY.sub("", url)
    if "?" not in url and "&" in url:  # the first parameter was the password: the next one starts the query
        url = url.replace("&", "?", 1)
    return url


def has_password(url: str) -> bool:
    return written(url) != url


def same_place(a: str, b: str) -> bool:
    """Whether two URLs name the same store once their passwords are set aside."""
    return written(a) == written(b)
