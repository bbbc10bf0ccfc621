"""A request that never went upstream costs its key nothing, through a real ``fastgw serve`` (in
process and on a real ``redis-server``): refused because every target's limit is full (at once or
after its wait), left while waiting for room, or refused by its budget; its rpm, tpm, concurrency
slot and budget reservation are all given back, and the key's limits still hold afterwards."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from gateway import GatewayProcess
from limits_support import ADMIN, MASTER, create_key, provider_with_usage
from rawhttp import RawResponse, post, request
from upstream_server import Received, Reply, UpstreamServer, json_reply

from fastgw.admission.limits import Rule, RuleSet, Ticket
from fastgw.admission.memory_limits import MemoryBackend
from fastgw.admission.redis_limits import RedisBackend
from fastgw.config_shared import RedisConfig
from fastgw.shared.redis import SharedRedis

HI = [{"role": "user", "content": "hi"}]
# 15 prompt + 25 completion tokens per served request, priced 1000 USD per million each way.
USAGE = (15, 25)
COST = (USAGE[0] + USAGE[1]) * 1000 / 1e6


def config(a: str, b: str, queue: str, redis_url: str | None) -> str:
    redis = f"redis: {{url: '{redis_url}', timeout: 3}}" if redis_url else ""
    return f"""
master_key: {MASTER}
keys_cache_ttl: 0.5
providers:
  - {{name: p, type: openai, base_url: "{a}/v1", api_key: sk-p, models: [m]}}
  - {{name: q, type: openai, base_url: "{b}/v1", api_key: sk-q, models: [m]}}
routes:
  pair: {{targets: [p/m, q/m]}}
pricing:
  m: {{input: 1000, output: 1000}}
{redis}
limits:
  {queue}
  providers:
    p: {{concurrency: 1}}
    q: {{concurrency: 1}}
"""


@pytest.fixture(autouse=True)
def reset(a: UpstreamServer, b: UpstreamServer) -> None:
    for server in (a, b):
        server.handler = provider_with_usage(*USAGE)
        server.requests.clear()


@pytest.fixture(params=["memory", "redis"])
def refusing(request: pytest.FixtureRequest, a: UpstreamServer, b: UpstreamServer) -> Iterator[GatewayProcess]:
    """``queue_s: 0``: a full target refuses at once; in process, or limits shared through Redis."""
    redis_url = request.getfixturevalue("redis_server").url if request.param == "redis" else None
    g = GatewayProcess(config(a.url, b.url, "queue_s: 0", redis_url))
    yield g
    g.stop()


@pytest.fixture(scope="module")
def queued(a: UpstreamServer, b: UpstreamServer) -> Iterator[GatewayProcess]:
    """Waits up to 5 s for room (in process)."""
    g = GatewayProcess(config(a.url, b.url, "queue_s: 5", None))
    yield g
    g.stop()


def chat(g: GatewayProcess, token: str, model: str = "p/m", **over: Any) -> RawResponse:
    return post(g.url, "/v1/chat/completions", {"model": model, "messages": HI, **over},
                headers={"authorization": f"Bearer {token}"})


def slow(seconds: float) -> Callable[[Received], Reply]:
    def handler(r: Received) -> Reply:
        reply = json_reply(b'{"id":"x","object":"chat.completion","choices":[]}')
        reply.delay_before_headers = seconds
        return reply

    return handler


def hold(g: GatewayProcess, upstream: UpstreamServer, model: str = "p/m",
         seconds: float = 1.5) -> threading.Thread:
    """A master-key request holding ``model``'s only slot (it is upstream when this returns)."""
    upstream.handler = slow(seconds)
    out: list[RawResponse] = []
    t = threading.Thread(target=lambda: out.append(chat(g, MASTER, model)))
    t.start()
    until(lambda: len(upstream.requests) >= 1, "the holder upstream")
    return t


def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def spend(g: GatewayProcess, key_id: str) -> float:
    return float(request(g.url, "GET", f"/admin/keys/{key_id}", headers=ADMIN).json()["spend_usd"])


def metric(g: GatewayProcess, line: str) -> float:
    for row in request(g.url, "GET", "/metrics").body.decode().splitlines():
        if row.startswith(line + " "):
            return float(row.split()[-1])
    return 0.0


def test_target_refusals_give_back_the_keys_rpm_tpm_slot_and_budget(refusing, a, b):
    # Each request estimates about 70 tokens (its body / 4 + max_tokens 50): the four refused ones
    # alone would use 280 of tpm 250, and 4 of rpm 3.
    key = create_key(refusing, rpm_limit=3, tpm_limit=250, concurrency_limit=1, budget_usd=10)
    token = key["key"]
    holder = hold(refusing, a)
    for _ in range(4):
        r = chat(refusing, token, max_tokens=50)
        assert r.status == 429, r.body
        # Refused by the target, not by the key's concurrency slot left taken by the one before.
        assert r.error()["code"] == "provider_concurrency_limit"
        # The key's headers show what it has left without this request.
        assert r.headers["x-ratelimit-limit-requests"] == "3"
        assert r.headers["x-ratelimit-remaining-requests"] == "3"
        assert r.headers["x-ratelimit-remaining-tokens"] == "250"
    holder.join(20)
    a.handler = provider_with_usage(*USAGE)
    served = [chat(refusing, token, max_tokens=50) for _ in range(3)]
    assert [r.status for r in served] == [200, 200, 200], [r.body for r in served]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in served] == ["2", "1", "0"]
    # The key's own limit still holds.
    over = chat(refusing, token, max_tokens=50)
    assert over.status == 429 and over.error()["code"] == "key_rpm_limit"
    # Only the served requests were spent: the refused ones' reservations came back.
    until(lambda: spend(refusing, key["id"]) == pytest.approx(3 * COST), "the spend of 3 served requests")


def test_an_earlier_attempt_that_went_upstream_keeps_its_request_counted(refusing, a, b):
    # p answers 404 (an attempt went upstream; the route falls back), q is full: refused.
    key = create_key(refusing, rpm_limit=2)
    token = key["key"]
    holder = hold(refusing, b, "q/m")
    a.handler = lambda r: json_reply(b'{"error":{"message":"no such model","type":"invalid_request_error"}}',
                                     status=404)
    r = chat(refusing, token, "pair")
    assert r.status == 429 and r.error()["code"] == "provider_concurrency_limit"
    assert r.headers["x-ratelimit-remaining-requests"] == "1"
    assert r.headers["x-fastgw-attempts"] == "1, q/m:provider_concurrency_limit"
    holder.join(20)
    a.handler = provider_with_usage(*USAGE)
    assert chat(refusing, token).status == 200
    assert chat(refusing, token).error()["code"] == "key_rpm_limit"


def test_a_refusal_after_waiting_gives_the_key_back_too(queued, a):
    # queue_s 5, but p stays busy longer: the wait ends at its bound and the request is refused.
    key = create_key(queued, rpm_limit=1)
    holder = hold(queued, a, seconds=7.0)
    started = time.monotonic()
    r = chat(queued, key["key"])
    assert r.status == 429 and r.error()["code"] == "provider_concurrency_limit"
    assert time.monotonic() - started >= 4.5  # it waited
    holder.join(20)
    a.handler = provider_with_usage(*USAGE)
    assert chat(queued, key["key"]).status == 200
    assert chat(queued, key["key"]).error()["code"] == "key_rpm_limit"


def test_a_client_leaving_the_wait_gives_the_key_back(queued, a):
    key = create_key(queued, rpm_limit=2)
    holder = hold(queued, a, seconds=4.0)
    body = b'{"model":"p/m","messages":[{"role":"user","content":"hi"}]}'
    for _ in range(2):
        sock = socket.create_connection(("127.0.0.1", queued.port), timeout=5)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
                     + key["key"].encode() + b"\r\ncontent-length: " + str(len(body)).encode()
                     + b"\r\n\r\n" + body)
        until(lambda: metric(queued, "fastgw_limit_queue_waiting") == 1, "the request waiting")
        sock.close()
        until(lambda: metric(queued, "fastgw_limit_queue_waiting") == 0, "the request leaving")
    holder.join(20)
    a.handler = provider_with_usage(*USAGE)
    assert [chat(queued, key["key"]).status for _ in range(2)] == [200, 200]
    assert chat(queued, key["key"]).error()["code"] == "key_rpm_limit"
    assert len(a.requests) == 3  # the holder and the two served: the ones that left never went


def test_a_budget_refusal_gives_the_keys_rpm_back(queued, a):
    # A request reserving more than the budget is refused before anything goes upstream.
    key = create_key(queued, rpm_limit=2, budget_usd=10)
    for _ in range(3):
        r = chat(queued, key["key"], max_tokens=2_000_000)
        assert r.status == 429 and r.error()["code"] == "insufficient_quota"
    assert [chat(queued, key["key"]).status for _ in range(2)] == [200, 200]
    assert chat(queued, key["key"]).error()["code"] == "key_rpm_limit"


def test_the_memory_backend_gives_back_what_a_ticket_counted_and_never_below_zero() -> None:
    backend = MemoryBackend()
    rules = RuleSet([Rule("key:k:rpm", "w", 10, "key", "rpm"), Rule("key:k:tpm", "w", 1000, "key", "tpm"),
                     Rule("key:k:concurrency", "c", 5, "key", "concurrency")])
    first = backend.acquire(rules, [1, 100, 1], "r1")
    second = backend.acquire(rules, [1, 50, 1], "r2")
    assert second.used == [2, 150, 2]
    ticket = Ticket(rules, "r2", 50, int(second.now))
    backend.give_back(ticket)
    after = backend.acquire(rules, [0, 0, 0], "r3")
    assert after.used == [1, 100, 1] and first.failed == 0
    # A second-old bucket that holds less than the ticket says (corrected since): emptied, not negative.
    lone = MemoryBackend()
    windows = RuleSet(rules[:2])
    counted = lone.acquire(windows, [1, 30], "r")
    lone.give_back(Ticket(windows, "r", 100, int(counted.now)))
    assert lone.acquire(windows, [0, 0], "r4").used == [0, 0]


def test_the_redis_backend_gives_back_never_below_zero_and_creates_no_key(redis_server) -> None:
    rules = RuleSet([Rule("key:k:rpm", "w", 10, "key", "rpm"), Rule("key:k:tpm", "w", 1000, "key", "tpm"),
                     Rule("key:k:concurrency", "c", 5, "key", "concurrency")])

    async def main() -> tuple[list[int], list[int], list[int], object]:
        shared = SharedRedis(RedisConfig(url=redis_server.url, timeout=3))
        backend = RedisBackend(shared)
        try:
            await backend.acquire(rules, [1, 100, 1], "r1")
            second = await backend.acquire(rules, [1, 50, 1], "r2")
            backend.give_back(Ticket(rules, "r2", 50, int(second.now)))
            after = (await backend.acquire(rules, [0, 0, 0], "r3")).used
            # More than its bucket holds (a corrected estimate): the bucket empties, no further.
            backend.give_back(Ticket(rules[:2], "r1", 500, int(second.now)))
            emptied = (await backend.acquire(RuleSet(rules[:2]), [0, 0], "r4")).used
            # A bucket that is gone (a counter never used): nothing is created.
            gone = RuleSet([Rule("key:gone:rpm", "w", 10, "key", "rpm")])
            backend.give_back(Ticket(gone, "r5", 0, int(second.now) - 120))
            exists = await shared.fast.execute("EXISTS", shared.prefix + "rl:key:gone:rpm")
            return second.used, after, emptied, exists
        finally:
            await shared.close()

    counted, after, emptied, exists = asyncio.run(main())
    assert counted == [2, 150, 2]
    assert after == [1, 100, 1]  # r2's request, tokens and slot given back, r1's kept
    assert emptied == [0, 0]
    assert exists == 0
