"""Shared persistence plumbing for keys, spend and the request log.

Contract
--------
``await open_store(url)`` returns a :class:`Store` for either

* ``sqlite:///relative/or/absolute/path.db`` (the embedded default,
  ``sqlite:///./fastgw.db``; ``sqlite:///:memory:`` works for throwaway use), or
* ``postgresql://user@host:port/db`` (also ``postgres://``), for several instances.

The schema (tables ``keys``, ``spend``, ``request_log``) is created on open, idempotently.

All methods are coroutines and never block the event loop:

* SQLite: one connection, owned by one dedicated thread (a single-worker executor), so
  calls are serialised and ``sqlite3`` is never touched from the loop. WAL mode and a
  busy timeout let several worker processes share the file.
* PostgreSQL: one psycopg 3 ``AsyncConnection`` in autocommit mode, guarded by an
  ``asyncio.Lock``, reconnected once on a broken connection.

SQL is written once with ``?`` placeholders; the PostgreSQL backend rewrites them to
``%s``. Queries must therefore contain no literal ``?`` or ``%``. ``store.dialect`` is
``"sqlite"`` or ``"postgresql"`` for the rare dialect-specific statement.

Callers (keys, reqlog, admin) use the store only off the request hot path: key checks are
served from the KeyManager's cache, the request log is written in batches by a background
task.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_URL = "sqlite:///./fastgw.db"

_SCHEMA_COMMON = [
    """CREATE TABLE IF NOT EXISTS keys (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        prefix TEXT NOT NULL,
        models TEXT NOT NULL,
        budget_usd {REAL},
        budget_period TEXT,
        expires_at {REAL},
        metadata TEXT NOT NULL,
        rpm_limit {INT},
        tpm_limit {INT},
        revoked {INT} NOT NULL DEFAULT 0,
        created_at {REAL} NOT NULL,
        revoked_at {REAL},
        concurrency_limit {INT}
    )""",
    "CREATE INDEX IF NOT EXISTS keys_prefix ON keys (prefix)",
    # Spend is additive per (key, budget period start) so that several instances can
    # add to it with an upsert and never lose each other's increments.
    """CREATE TABLE IF NOT EXISTS spend (
        key_id TEXT NOT NULL,
        period_start {REAL} NOT NULL,
        usd {REAL} NOT NULL DEFAULT 0,
        PRIMARY KEY (key_id, period_start)
    )""",
    """CREATE TABLE IF NOT EXISTS request_log (
        id {SERIAL},
        ts {REAL} NOT NULL,
        day TEXT NOT NULL,
        request_id TEXT NOT NULL,
        key_id TEXT,
        key_name TEXT,
        provider TEXT,
        model TEXT,
        path TEXT,
        stream {INT} NOT NULL DEFAULT 0,
        status {INT} NOT NULL,
        error_type TEXT,
        ttfb_ms {REAL},
        total_ms {REAL},
        prompt_tokens {INT},
        completion_tokens {INT},
        cached_tokens {INT},
        reasoning_tokens {INT},
        cost_usd {REAL},
        usage_estimated {INT} NOT NULL DEFAULT 0,
        conversation_id TEXT,
        attempts TEXT,
        request_body TEXT,
        response_body TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS request_log_ts ON request_log (ts)",
    "CREATE INDEX IF NOT EXISTS request_log_rid ON request_log (request_id)",
    "CREATE INDEX IF NOT EXISTS request_log_conv ON request_log (conversation_id, ts)",
    "CREATE INDEX IF NOT EXISTS request_log_key ON request_log (key_id, id)",
]

_TYPES = {
    "sqlite": {"REAL": "REAL", "INT": "INTEGER", "SERIAL": "INTEGER PRIMARY KEY AUTOINCREMENT"},
    "postgresql": {"REAL": "DOUBLE PRECISION", "INT": "BIGINT", "SERIAL": "BIGSERIAL PRIMARY KEY"},
}


# Columns added after a table was first released: (table, column, definition). Added to
# existing databases on open (PostgreSQL: IF NOT EXISTS; SQLite: when table_info lacks it).
_ADDED_COLUMNS = [
    ("request_log", "usage_estimated", "{INT} NOT NULL DEFAULT 0"),
    ("request_log", "attempts", "TEXT"),
    ("keys", "concurrency_limit", "{INT}"),
]


def schema(dialect: str) -> list[str]:
    stmts = [s.format(**_TYPES[dialect]) for s in _SCHEMA_COMMON]
    if dialect == "postgresql":
        stmts += [f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {c} {d.format(**_TYPES[dialect])}"
                  for t, c, d in _ADDED_COLUMNS]
    return stmts


def _sqlite_migrate(conn: sqlite3.Connection) -> None:
    for table, column, definition in _ADDED_COLUMNS:
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition.format(**_TYPES['sqlite'])}")


class Store:
    """Async facade over one database. See the module docstring for the contract."""

    dialect: str = ""
    url: str = ""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return the affected row count."""
        raise NotImplementedError

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for many parameter rows in a single transaction."""
        raise NotImplementedError

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def close(self) -> None:
        raise NotImplementedError


def _retry_busy(fn: Callable[[], object], limit: float = 15.0) -> None:
    """Run ``fn``, retrying while SQLite reports the file busy or locked (start-up races)."""
    deadline = time.monotonic() + limit
    while True:
        try:
            fn()
            return
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class SQLiteStore(Store):
    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.url = "sqlite:///" + path
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastgw-sqlite")
        self._conn: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise RuntimeError("store is closed")
        return fn(conn)

    def _open(self) -> None:
        if self.path != ":memory:":
            parent = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(parent, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 10000")
        if self.path != ":memory:":
            _retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL"))
        conn.execute("PRAGMA synchronous = NORMAL")

        def create_schema() -> None:
            # IMMEDIATE: take the write lock before reading the schema, so several
            # workers opening a fresh file at once wait for each other instead of one
            # failing on a stale read snapshot ("database is locked" at once).
            conn.execute("BEGIN IMMEDIATE")
            try:
                for stmt in schema("sqlite"):
                    conn.execute(stmt)
                _sqlite_migrate(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        _retry_busy(create_schema)
        self._conn = conn

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._open)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return await self._run(lambda c: c.execute(sql, tuple(params)).rowcount)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)

        def work(c: sqlite3.Connection) -> None:
            c.execute("BEGIN IMMEDIATE")
            try:
                c.executemany(sql, rows)
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")

        await self._run(work)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await self._run(lambda c: c.execute(sql, tuple(params)).fetchall())

    async def close(self) -> None:
        if self._conn is None:
            self._pool.shutdown(wait=True)
            return

        def work(c: sqlite3.Connection) -> None:
            c.close()

        with contextlib.suppress(Exception):
            await self._run(work)
        self._conn = None
        self._pool.shutdown(wait=True)


def _pg_sql(sql: str) -> str:
    return sql.replace("?", "%s")


class PostgresStore(Store):
    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None
        self._lock = asyncio.Lock()

    async def _connect(self) -> None:
        import psycopg  # optional dependency, imported only when PostgreSQL is configured

        self._conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)

    async def open(self) -> None:
        await self._connect()
        async with self._lock, self._conn.transaction():
            # Several instances may start at once: serialise schema creation.
            await self._conn.execute("SELECT pg_advisory_xact_lock(7243012)")
            for stmt in schema("postgresql"):
                await self._conn.execute(stmt)

    async def _with_conn(self, fn: Callable[[Any], Any]) -> Any:
        import psycopg

        async with self._lock:
            if self._conn is None or self._conn.closed:
                await self._connect()
            try:
                return await fn(self._conn)
            except psycopg.OperationalError:
                if not self._conn.closed:
                    raise
                # Broken connection (server restart, idle kill): reconnect once and retry.
                await self._connect()
                return await fn(self._conn)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        async def work(conn: Any) -> int:
            cur = await conn.execute(_pg_sql(sql), tuple(params))
            return cur.rowcount

        return await self._with_conn(work)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(r) for r in rows]

        async def work(conn: Any) -> None:
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(_pg_sql(sql), rows)

        await self._with_conn(work)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async def work(conn: Any) -> list[tuple[Any, ...]]:
            cur = await conn.execute(_pg_sql(sql), tuple(params))
            return await cur.fetchall()

        return await self._with_conn(work)

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None and not self._conn.closed:
                await self._conn.close()
            self._conn = None


async def open_store(url: str = DEFAULT_URL) -> Store:
    """Open (and create the schema of) the store at ``url``. See the module docstring."""
    store: SQLiteStore | PostgresStore
    if url.startswith("sqlite://"):
        path = url[len("sqlite://") :]
        if path.startswith("/"):
            path = path[1:]  # sqlite:///rel.db -> rel.db ; sqlite:////abs.db -> /abs.db
        if not path:
            raise ValueError("sqlite URL needs a path: sqlite:///path/to/file.db")
        store = SQLiteStore(path)
    elif url.startswith(("postgresql://", "postgres://")):
        store = PostgresStore(url)
    else:
        raise ValueError(
            f"unsupported store URL scheme (use sqlite:/// or postgresql://): {url.split(':', 1)[0]}"
        )
    await store.open()
    return store
