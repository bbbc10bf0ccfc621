"""Several workers open the same fresh SQLite store at once (as `fastgw serve --workers N` does)."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import sqlite3
from pathlib import Path

from fastgw.controls.store import open_store


def _open_and_write(url: str, start: object, n: int) -> None:
    start.wait(10)  # type: ignore[attr-defined]

    async def run() -> None:
        store = await open_store(url)
        await store.execute("INSERT INTO spend (key_id, period_start, usd) VALUES (?, ?, ?)", (f"k{n}", 0.0, 1.0))
        await store.close()

    asyncio.run(run())


def test_concurrent_first_open_creates_the_schema_once(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    for round_ in range(10):
        url = f"sqlite:///{tmp_path}/race-{round_}.db"
        start = ctx.Event()
        procs = [ctx.Process(target=_open_and_write, args=(url, start, n)) for n in range(8)]
        for p in procs:
            p.start()
        start.set()
        for p in procs:
            p.join(30)
        assert [p.exitcode for p in procs] == [0] * 8, f"round {round_}: a concurrent open failed"

        async def count(url: str = url) -> int:
            store = await open_store(url)
            row = await store.fetchone("SELECT COUNT(*) FROM spend")
            await store.close()
            assert row is not None
            return int(row[0])

        assert asyncio.run(count()) == 8


def test_a_store_from_before_the_concurrency_limit_gains_the_column(tmp_path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    # The keys table as it shipped before concurrency_limit existed.
    conn.execute("""CREATE TABLE keys (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
        prefix TEXT NOT NULL, models TEXT NOT NULL, budget_usd REAL, budget_period TEXT, expires_at REAL,
        metadata TEXT NOT NULL, rpm_limit INTEGER, tpm_limit INTEGER, revoked INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL, revoked_at REAL)""")
    conn.commit()
    conn.close()

    async def main() -> None:
        from fastgw.controls.keys import KeyManager
        from fastgw.controls.store import open_store

        store = await open_store(f"sqlite:///{path}")
        try:
            km = KeyManager(store)
            token, _ = await km.create("old", concurrency_limit=2)
            loaded = await km.authenticate(token, "m")
            assert loaded.concurrency_limit == 2
        finally:
            await store.close()

    asyncio.run(main())
