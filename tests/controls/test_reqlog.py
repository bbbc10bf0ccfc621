from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from stores import run_with_store

from fastgw.controls.reqlog import (
    RequestLogger,
    RequestRecord,
    cap_and_redact,
    derive_conversation_id,
    get_log,
    query_logs,
    redact,
    usage_summary,
)
from fastgw.controls.store import Store


def rec(i: int, **kw: Any) -> RequestRecord:
    base: dict[str, Any] = dict(
        request_id=f"req-{i}",
        key_id="key_a",
        key_name="alice",
        provider="openai",
        model="gpt-4o",
        path="fast",
        stream=False,
        status=200,
        ttfb_ms=10.0,
        total_ms=20.0,
        prompt_tokens=10,
        completion_tokens=5,
        cached_tokens=0,
        reasoning_tokens=0,
        cost_usd=0.001,
    )
    base.update(kw)
    return RequestRecord(**base)


def test_batched_writes_and_graceful_stop_loses_nothing(store_url: str) -> None:
    async def t(store: Store) -> None:
        lg = RequestLogger(store, batch_size=50, flush_interval=0.05)
        lg.start()
        t0 = time.perf_counter()
        for i in range(1000):
            lg.log(rec(i))
        assert time.perf_counter() - t0 < 0.5  # enqueueing is cheap and never waits
        await asyncio.sleep(0.01)
        await lg.stop()
        assert lg.depth == 0 and lg.dropped == 0 and lg.written == 1000
        n = await store.fetchone("SELECT COUNT(*) FROM request_log")
        assert n is not None and n[0] == 1000

    run_with_store(store_url, t)


def test_bounded_queue_counts_drops(tmp_path: Any) -> None:
    async def t(store: Store) -> None:
        lg = RequestLogger(store, queue_size=100, batch_size=10)
        for i in range(150):  # writer not started: the store "lags"
            lg.log(rec(i))
        assert lg.depth == 100 and lg.dropped == 50
        await lg.stop()
        assert lg.depth == 0

    run_with_store(f"sqlite:///{tmp_path}/q.db", t)


def test_failed_writes_are_retried(tmp_path: Any) -> None:
    async def t(store: Store) -> None:
        lg = RequestLogger(store, batch_size=10)
        real = store.executemany
        calls = 0

        async def flaky(sql: str, rows: Any) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("disk full")
            await real(sql, rows)

        store.executemany = flaky  # type: ignore[method-assign]
        for i in range(5):
            lg.log(rec(i))
        with pytest.raises(RuntimeError):
            await lg.flush()
        assert lg.depth == 5
        await lg.flush()
        assert lg.written == 5 and lg.dropped == 0

    run_with_store(f"sqlite:///{tmp_path}/f.db", t)


def test_bodies_only_when_enabled_capped_and_redacted(store_url: str) -> None:
    async def t(store: Store) -> None:
        body = b'{"api_key":"abc123","messages":[{"role":"user","content":"my key is sk-proj-AAAAAAAAAAAAAAAA ok"}]}'
        off = RequestLogger(store)
        off.log(rec(1, request_body=body, response_body=b"resp"))
        await off.stop()
        on = RequestLogger(store, log_bodies=True, body_cap=60)
        on.log(rec(2, request_body=body, response_body="Authorization: Bearer sk-fgw-XYZXYZXYZXYZ"))
        await on.stop()
        e1 = await get_log(store, "req-1")
        e2 = await get_log(store, "req-2")
        assert e1 is not None and e1["request_body"] is None and e1["response_body"] is None
        assert e2 is not None
        assert "abc123" not in e2["request_body"] and "sk-proj" not in e2["request_body"]
        assert e2["request_body"].startswith('{"api_key":"[REDACTED]"')
        assert "truncated" in e2["request_body"]
        assert "XYZ" not in e2["response_body"]

    run_with_store(store_url, t)


def test_redaction() -> None:
    s = redact('{"Authorization": "Bearer abcdefghij", "x": "sk-ant-api03-zzzzzzzzzz", "password":"p\\"w"}')
    assert "abcdefghij" not in s and "zzzz" not in s and 'p\\"w' not in s
    assert redact("key=AIzaSyA1234567890abcdefghijklmnop") == "key=[REDACTED]"
    assert redact("no secrets here, sk- alone") == "no secrets here, sk- alone"
    # a key cut by the cap leaks none of its characters
    out = cap_and_redact("x" * 95 + "sk-abcdefghijklmnop", 100)
    assert out is not None and "sk-ab" not in out and "abcdef" not in out
    out = cap_and_redact("x" * 95 + "sk-abcdefghijklmnop", 200)
    assert out == "x" * 95 + "[REDACTED]"


def test_conversation_thread(store_url: str) -> None:
    async def t(store: Store) -> None:
        lg = RequestLogger(store, log_bodies=True)
        sys_ = {"role": "system", "content": "be brief"}
        u1 = {"role": "user", "content": "hi"}
        turns = [
            [sys_, u1],
            [sys_, u1, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "more"}],
            [
                sys_,
                u1,
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "more"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "bye"},
            ],
        ]
        import msgspec

        now = time.time()
        ids = set()
        for i, msgs in enumerate(turns):
            body = msgspec.json.encode({"model": "m", "messages": msgs})
            cid = derive_conversation_id("key_a", body)
            ids.add(cid)
            lg.log(rec(i, ts=now + i, conversation_id=cid, request_body=body, response_body=b"{}"))
        other = msgspec.json.encode({"messages": [{"role": "user", "content": "different"}]})
        lg.log(rec(9, ts=now + 9, conversation_id=derive_conversation_id("key_a", other), request_body=other))
        # same messages, other key: another conversation
        lg.log(rec(8, ts=now + 8, key_id="key_b", conversation_id=derive_conversation_id("key_b", body)))
        await lg.stop()
        assert len(ids) == 1
        e = await get_log(store, "req-2")
        assert e is not None
        assert [x["request_id"] for x in e["thread"]] == ["req-0", "req-1"]
        assert '"bye"' in e["request_body"]
        first = await get_log(store, "req-0")
        assert first is not None and first["thread"] == []
        assert await get_log(store, "nope") is None
        # Responses API input shapes
        assert derive_conversation_id("k", b'{"input":"hello"}') == derive_conversation_id(
            "k", b'{"input":[{"role":"user","content":"hello"}]}'
        )
        assert derive_conversation_id("k", b'{"messages":[]}') is None

    run_with_store(store_url, t)


def test_query_pagination_filters_and_summaries(store_url: str) -> None:
    async def t(store: Store) -> None:
        lg = RequestLogger(store)
        day = 86400.0
        t0 = 1_700_000_000.0
        for i in range(25):
            lg.log(
                rec(
                    i,
                    ts=t0 + (i % 2) * day,
                    model="gpt-4o" if i % 5 else "claude-x",
                    provider="openai" if i % 5 else "anthropic",
                    status=200 if i % 7 else 429,
                    key_id="key_a" if i < 20 else "key_b",
                    key_name="alice" if i < 20 else "bob",
                    cost_usd=None if i == 0 else 0.5,
                )
            )
        await lg.stop()
        seen: list[str] = []
        cursor = None
        while True:
            rows, cursor = await query_logs(store, limit=10, cursor=cursor)
            seen += [r["request_id"] for r in rows]
            assert all("request_body" not in r for r in rows)
            if cursor is None:
                break
        assert seen == [f"req-{i}" for i in reversed(range(25))]
        rows, _ = await query_logs(store, model="claude-x")
        assert {r["request_id"] for r in rows} == {f"req-{i}" for i in (0, 5, 10, 15, 20)}
        rows, _ = await query_logs(store, key="bob", status=200)
        assert {r["request_id"] for r in rows} == {"req-20", "req-22", "req-23", "req-24"}
        rows, _ = await query_logs(store, provider="anthropic", since=t0 + day / 2)
        assert {r["request_id"] for r in rows} == {"req-5", "req-15"}
        by_key = {r["key"]: r for r in await usage_summary(store, "key")}
        assert by_key["key_a"]["requests"] == 20 and by_key["key_a"]["key_name"] == "alice"
        assert by_key["key_a"]["unpriced_requests"] == 1
        assert by_key["key_a"]["cost_usd"] == pytest.approx(19 * 0.5)
        assert by_key["key_b"]["prompt_tokens"] == 50
        by_day = await usage_summary(store, "day")
        assert [(r["day"], r["requests"]) for r in by_day] == [("2023-11-14", 13), ("2023-11-15", 12)]
        by_model = {r["model"]: r for r in await usage_summary(store, "model", since=t0, until=t0 + 1)}
        assert by_model["claude-x"]["requests"] == 3  # 0, 10, 20
        errs = {r["provider"]: r["errors"] for r in await usage_summary(store, "provider")}
        assert errs == {"openai": 3, "anthropic": 1}  # 7, 14, 21 / 0
        with pytest.raises(ValueError):
            await usage_summary(store, "color")

    run_with_store(store_url, t)


def test_retention(store_url: str) -> None:
    async def t(store: Store) -> None:
        lg = RequestLogger(store, retention_days=1)
        now = time.time()
        lg.log(rec(1, ts=now - 3 * 86400))
        lg.log(rec(2, ts=now - 60))
        await lg.flush()
        assert await lg.purge() == 1
        rows, _ = await query_logs(store)
        assert [r["request_id"] for r in rows] == ["req-2"]

    run_with_store(store_url, t)
