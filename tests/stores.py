"""Store fixtures shared by the controls tests: every store test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from pg import pg_dsn  # noqa: F401  (fixture, requested by store_url)

from fastgw.controls.store import Store, open_store


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A fresh store: a SQLite file in the test's temp dir, or a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    return str(request.getfixturevalue("pg_dsn"))


def run_with_store(url: str, fn: Callable[[Store], Coroutine[Any, Any, None]]) -> None:
    """Open the store at ``url``, run ``fn`` with it in a fresh event loop, close it."""

    async def main() -> None:
        store = await open_store(url)
        try:
            await fn(store)
        finally:
            await store.close()

    asyncio.run(main())
