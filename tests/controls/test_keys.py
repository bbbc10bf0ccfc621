from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from stores import run_with_store

from fastgw.controls.keys import KeyManager, hash_key, model_allowed, period_start
from fastgw.controls.store import Store, open_store
from fastgw.errors import GatewayError


def err(e: pytest.ExceptionInfo[GatewayError]) -> tuple[int, str, str | None]:
    return e.value.status, e.value.type, e.value.code


def test_create_authenticate_and_hashing(store_url: str) -> None:
    async def t(store: Store) -> None:
        km = KeyManager(store)
        token, rec = await km.create("alice", models=["gpt-4o*", "openai/*"], metadata={"team": "x"})
        assert token.startswith("sk-fgw-") and len(token) >= 7 + 43
        assert rec.prefix == token[:11]
        got = await km.authenticate(token, "gpt-4o-mini")
        assert got.id == rec.id and got.metadata == {"team": "x"}
        # only the hash is stored, never the plaintext
        rows = await store.fetchall("SELECT * FROM keys")
        assert len(rows) == 1
        assert token not in repr(rows)
        assert hash_key(token) in rows[0]
        with pytest.raises(GatewayError) as e:
            await km.authenticate(token, "claude-3-5-sonnet")
        assert err(e) == (403, "permission_error", "model_not_allowed")
        for bad in ("sk-fgw-nope", "not-a-key", token + "x", ""):
            with pytest.raises(GatewayError) as e:
                await km.authenticate(bad, "gpt-4o")
            assert err(e) == (401, "invalid_request_error", "invalid_api_key")
            assert bad not in e.value.message or not bad
        listed = await km.list()
        assert [k.name for k in listed] == ["alice"]

    run_with_store(store_url, t)


def test_expired_and_revoked(store_url: str) -> None:
    async def t(store: Store) -> None:
        km = KeyManager(store)
        tok, _ = await km.create("old", expires_at=time.time() - 1)
        with pytest.raises(GatewayError) as e:
            await km.authenticate(tok, "m")
        assert err(e) == (401, "invalid_request_error", "expired_api_key")
        tok2, rec2 = await km.create("live")
        await km.authenticate(tok2, "m")
        assert await km.revoke(rec2.id)
        with pytest.raises(GatewayError) as e:
            await km.authenticate(tok2, "m")
        assert err(e)[0] == 401
        assert not await km.revoke("key_doesnotexist")
        # revoke by display prefix
        tok3, rec3 = await km.create("third")
        assert await km.revoke(rec3.prefix)
        with pytest.raises(GatewayError):
            await km.authenticate(tok3, "m")
        assert (await km.get(rec3.id)).revoked  # type: ignore[union-attr]

    run_with_store(store_url, t)


def test_cache_hits_do_no_io_and_misses_coalesce(store_url: str) -> None:
    async def t(store: Store) -> None:
        km = KeyManager(store, cache_ttl=60)
        tok, _ = await km.create("c")
        results = await asyncio.gather(*(km.authenticate(tok, "m") for _ in range(50)))
        assert len(results) == 50
        assert km.store_reads == 1
        for _ in range(100):
            await km.authenticate(tok, "m")
        assert km.store_reads == 1
        assert km.lookup_cached(tok) is not None
        # unknown keys are negatively cached: repeated attempts don't hammer the store
        for _ in range(20):
            with pytest.raises(GatewayError):
                await km.authenticate("sk-fgw-unknown", "m")
        assert km.store_reads == 2

    run_with_store(store_url, t)


def test_revoke_reaches_other_instances_within_ttl(store_url: str) -> None:
    async def t(store: Store) -> None:
        store_b = await open_store(store.url)
        try:
            a = KeyManager(store, cache_ttl=0.3)
            b = KeyManager(store_b, cache_ttl=0.3)
            tok, rec = await a.create("shared")
            await a.authenticate(tok, "m")
            await b.authenticate(tok, "m")

            stop = asyncio.Event()
            ok_after_revoke = 0
            revoked_at = 0.0

            async def traffic() -> None:
                nonlocal ok_after_revoke
                while not stop.is_set():
                    try:
                        await b.authenticate(tok, "m")
                        if revoked_at:
                            assert time.monotonic() - revoked_at < 0.3 + 0.2
                            ok_after_revoke += 1
                    except GatewayError as e:
                        assert e.status == 401
                        return
                    await asyncio.sleep(0.005)

            task = asyncio.create_task(traffic())
            await asyncio.sleep(0.05)
            assert await a.revoke(rec.id)
            revoked_at = time.monotonic()
            with pytest.raises(GatewayError):  # the revoking instance: at once
                await a.authenticate(tok, "m")
            await asyncio.wait_for(task, 2.0)  # the other one: within the TTL
            stop.set()
        finally:
            await store_b.close()

    run_with_store(store_url, t)


def test_budget_local_spend_counts_at_once_and_flushes(store_url: str) -> None:
    async def t(store: Store) -> None:
        a = KeyManager(store, flush_interval=0.05)
        tok, rec = await a.create("budget", budget_usd=1.0, budget_period="monthly")
        await a.authenticate(tok, "m")
        a.record_spend(rec.id, 0.6)
        await a.authenticate(tok, "m")  # 0.6 < 1.0
        a.record_spend(rec.id, 0.5)
        with pytest.raises(GatewayError) as e:  # this process: immediately
            await a.authenticate(tok, "m")
        assert err(e) == (429, "insufficient_quota", "insufficient_quota")
        await asyncio.sleep(0.3)  # background flush
        row = await store.fetchone("SELECT usd FROM spend WHERE key_id = ?", (rec.id,))
        assert row is not None and abs(row[0] - 1.1) < 1e-9
        # after the flush the amount is not lost nor counted twice
        assert abs(a.current_spend(a.lookup_cached(tok)) - 1.1) < 1e-9  # type: ignore[arg-type]
        # another instance (fresh cache) sees the stored spend
        b = KeyManager(store)
        with pytest.raises(GatewayError) as e:
            await b.authenticate(tok, "m")
        assert e.value.status == 429
        # spend from several instances adds up
        b.record_spend(rec.id, 0.25)
        await b.close()
        await a.close()
        row = await store.fetchone("SELECT usd FROM spend WHERE key_id = ?", (rec.id,))
        assert row is not None and abs(row[0] - 1.35) < 1e-9
        listed = {k.id: k for k in await KeyManager(store).list()}
        assert abs(listed[rec.id].spend_usd - 1.35) < 1e-9

    run_with_store(store_url, t)


def test_budget_resets_with_the_period(tmp_path: Any) -> None:
    async def t(store: Store) -> None:
        km = KeyManager(store)
        tok, rec = await km.create("daily", budget_usd=1.0, budget_period="daily")
        cached = await km.authenticate(tok, "m")
        km.record_spend(rec.id, 2.0)
        await km.flush()
        cached = km.lookup_cached(tok)
        assert cached is not None
        with pytest.raises(GatewayError):
            km.check(cached, "m")
        tomorrow = time.time() + 86400
        assert km.check(cached, "m", now=tomorrow) is cached  # new period, fresh budget
        await km.close()

    run_with_store(f"sqlite:///{tmp_path}/p.db", t)


def test_period_start_and_patterns() -> None:
    # 2024-05-15 (a Wednesday) 13:45:10 UTC
    now = 1715780710.0
    assert period_start("daily", now) == 1715731200.0
    assert period_start("weekly", now) == 1715558400.0  # Monday 2024-05-13
    assert period_start("monthly", now) == 1714521600.0  # 2024-05-01
    assert period_start(None, now) == 0.0
    assert model_allowed([], "anything")
    assert model_allowed(["gpt-4o*"], "gpt-4o-mini")
    assert not model_allowed(["gpt-4o"], "gpt-4o-mini")
    assert model_allowed(["anthropic/*", "x"], "anthropic/claude")


def test_create_validates(tmp_path: Any) -> None:
    async def t(store: Store) -> None:
        km = KeyManager(store)
        with pytest.raises(ValueError):
            await km.create("")
        with pytest.raises(ValueError):
            await km.create("n", budget_period="yearly")  # type: ignore[arg-type]

    run_with_store(f"sqlite:///{tmp_path}/v.db", t)
