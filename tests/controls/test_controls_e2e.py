"""Production controls end to end: virtual keys, budgets, usage, the request log, the
audit log and metrics, through a real ``fastgw serve`` process, the real ``openai`` SDK
and raw HTTP (for byte equality).

One gateway per module scope where the configuration allows it (start-up costs ~1 s);
every wait is a bounded poll.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
from conftest import basic_config
from gateway import GatewayProcess, free_port
from prometheus_client.parser import text_string_to_metric_families
from rawhttp import RawResponse, post, request
from upstream_server import (
    UPSTREAM_JSON,
    Received,
    Reply,
    json_reply,
    provider_like_stream,
    sse_events,
    sse_reply,
)

MASTER = "sk-master-e2e-0123456789"
ADMIN = {"authorization": f"Bearer {MASTER}"}
# USD per million tokens: UPSTREAM_JSON's usage (3 prompt + 2 completion) costs 0.005.
PRICE_IN = 1000.0
PRICE_OUT = 1000.0
ERROR_JSON = b'{"error":{"message":"upstream exploded","type":"server_error","param":null,"code":null}}'


def provider(r: Received) -> Reply:
    """A provider-like upstream: JSON or SSE (usage chunk only when asked); ``err-model`` -> 500."""
    if b'"err-model"' in r.body:
        return json_reply(ERROR_JSON, status=500)
    if b'"stream":true' in r.body.replace(b" ", b""):
        return provider_like_stream(r, n=5)
    return json_reply(UPSTREAM_JSON)


def main_config(url: str) -> str:
    return f"""
providers:
  - name: local
    type: openai
    base_url: {url}/v1
    api_key: sk-test
    models: [gpt-4o-mini, err-model, other-model]
  - name: dead
    type: openai-compatible
    base_url: http://127.0.0.1:{free_port()}/v1
    models: [dead-model]
    timeouts: {{connect: 2}}
master_key: {MASTER}
keys_cache_ttl: 0.5
logging:
  audit: true
  flush_interval: 0.1
pricing:
  gpt-4o-mini: {{input: {PRICE_IN}, output: {PRICE_OUT}}}
"""


@pytest.fixture(scope="module")
def gw(upstream_server) -> Iterator[GatewayProcess]:
    g = GatewayProcess(main_config(upstream_server.url))
    yield g
    g.stop()


@pytest.fixture
def up(upstream):
    upstream.handler = provider
    return upstream


# -- helpers ------------------------------------------------------------------------


def admin(gw: GatewayProcess, method: str, path: str, body: dict[str, Any] | None = None) -> RawResponse:
    return request(gw.url, method, path, body, headers=ADMIN)


def create_key(gw: GatewayProcess, **fields: Any) -> dict[str, Any]:
    fields.setdefault("name", "k")
    resp = admin(gw, "POST", "/admin/keys", fields)
    assert resp.status == 201, resp.body
    return resp.json()


def client(gw: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=10)


def chat(gw: GatewayProcess, key: str | None = MASTER, body: dict[str, Any] | bytes | None = None,
         **over: Any) -> RawResponse:
    if body is None:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **over}
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return post(gw.url, "/v1/chat/completions", body, headers=headers)


def poll(fn: Callable[[], Any], timeout: float = 5.0, interval: float = 0.05) -> Any:
    """``fn()`` until it returns something truthy (bounded); the last value otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def log_entry(gw: GatewayProcess, request_id: str, cond: Callable[[dict[str, Any]], bool] = bool,
              timeout: float = 5.0) -> dict[str, Any]:
    def get() -> dict[str, Any] | None:
        resp = admin(gw, "GET", f"/admin/logs/{request_id}")
        if resp.status == 200 and cond(resp.json()):
            return resp.json()
        return None

    entry = poll(get, timeout)
    assert entry, f"no log entry for {request_id} within {timeout}s"
    return entry


def scrape(url: str, answered_by: set[str] | None = None) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``/metrics`` as {sample name: {sorted labels: value}}; adds the answering worker's
    request-id prefix to ``answered_by``."""
    resp = request(url, "GET", "/metrics")
    assert resp.status == 200
    if answered_by is not None:
        answered_by.add(resp.headers["x-fastgw-request-id"][:-8])
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(resp.body.decode()):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def metric(m: dict[str, Any], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for k, v in m.get(name, {}).items() if want <= set(k))


def cost(prompt: int, completion: int) -> float:
    return (prompt * PRICE_IN + completion * PRICE_OUT) / 1e6


# -- 1. keys ------------------------------------------------------------------------


def test_admin_key_works_with_the_openai_sdk_and_is_listed_without_secrets(gw, up):
    created = create_key(gw, name="sdk-user", models=["gpt-4o-*"], metadata={"team": "a"})
    token = created["key"]
    assert token.startswith("sk-fgw-") and created["name"] == "sdk-user"
    completion = client(gw, token).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "hi \U0001f44b"
    assert completion.usage.prompt_tokens == 3
    # Listed, with its prefix but never its plaintext or hash.
    listing = admin(gw, "GET", "/admin/keys")
    assert listing.status == 200
    rec = next(k for k in listing.json()["data"] if k["id"] == created["id"])
    assert rec["name"] == "sdk-user" and rec["models"] == ["gpt-4o-*"] and rec["metadata"] == {"team": "a"}
    assert token[:len(rec["prefix"])] == rec["prefix"]
    text = listing.body.decode()
    assert token not in text and "hash" not in rec and "key" not in rec
    one = admin(gw, "GET", f"/admin/keys/{created['id']}")
    assert one.status == 200 and token not in one.body.decode()


def test_cli_key_is_accepted_by_the_running_gateway(gw, up):
    store = f"sqlite:///{gw.dir}/fastgw.db"
    out = subprocess.run([sys.executable, "-m", "fastgw", "keys", "create", "--name", "cli-user", "--store", store],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert token.startswith("sk-fgw-") and "\n" not in token
    assert "not shown again" in out.stderr and token not in out.stderr
    completion = client(gw, token).chat.completions.create(model="gpt-4o-mini", messages=[])
    assert completion.id == "chatcmpl-1"
    names = [k["name"] for k in admin(gw, "GET", "/admin/keys").json()["data"]]
    assert "cli-user" in names
    listed = subprocess.run([sys.executable, "-m", "fastgw", "keys", "list", "--store", store],
                            capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0 and "cli-user" in listed.stdout and token not in listed.stdout


def test_key_rejections(gw, up):
    limited = create_key(gw, name="limited", models=["other-model"])["key"]
    with pytest.raises(openai.PermissionDeniedError) as exc:
        client(gw, limited).chat.completions.create(model="gpt-4o-mini", messages=[])
    assert exc.value.status_code == 403 and exc.value.code == "model_not_allowed"
    assert client(gw, limited).chat.completions.create(model="other-model", messages=[]).id == "chatcmpl-1"

    expired = create_key(gw, name="old", expires_at=time.time() - 5)["key"]
    with pytest.raises(openai.AuthenticationError) as exc:
        client(gw, expired).chat.completions.create(model="gpt-4o-mini", messages=[])
    assert exc.value.status_code == 401 and exc.value.code == "expired_api_key"

    with pytest.raises(openai.AuthenticationError) as exc:
        client(gw, "sk-fgw-" + "x" * 43).chat.completions.create(model="gpt-4o-mini", messages=[])
    assert exc.value.code == "invalid_api_key"
    resp = chat(gw, "sk-not-a-gateway-key")
    assert resp.status == 401 and resp.error()["code"] == "invalid_api_key"
    resp = chat(gw, None)
    assert resp.status == 401


def test_admin_api_needs_the_master_key(gw, up):
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {MASTER}"}):
        resp = request(gw.url, "GET", "/admin/keys", headers=headers)
        assert resp.status == 401 and resp.error()["type"] == "authentication_error"
    # A virtual key is no admin credential either.
    token = create_key(gw, name="not-admin")["key"]
    resp = request(gw.url, "GET", "/admin/keys", headers={"authorization": f"Bearer {token}"})
    assert resp.status == 401


# -- 2. budgets ---------------------------------------------------------------------


def test_budget_exhaustion_gives_insufficient_quota(gw, up):
    # A request reserves its worst case before it goes upstream: 13 prompt tokens (52 body
    # bytes / 4) + max_tokens 5 at 1000 USD per million = 0.018; it really costs 0.005.
    key = create_key(gw, name="tiny", budget_usd=0.02)
    c = client(gw, key["key"])
    statuses = []
    error = None
    for _ in range(5):
        try:
            c.chat.completions.create(model="gpt-4o-mini", messages=[], max_tokens=5)
            statuses.append(200)
        except openai.RateLimitError as exc:
            statuses.append(429)
            error = exc
            break
    # The second one's reservation (0.005 spent + 0.018) would pass the budget.
    assert statuses == [200, 429], statuses
    assert error is not None and error.code == "insufficient_quota"
    assert error.body["type"] == "insufficient_quota"
    # The spend is visible on the key (after the background flush at the latest).
    # (the reservation corrected to the real cost).
    rec = poll(lambda: (r := admin(gw, "GET", f"/admin/keys/{key['id']}").json())["spend_usd"]
               == pytest.approx(cost(3, 2)) and r)
    assert rec and rec["spend_usd"] == pytest.approx(cost(3, 2))
    # The SDK's default retries do not hammer an exhausted key.
    t0 = time.monotonic()
    with pytest.raises(openai.RateLimitError) as exc:
        openai.OpenAI(base_url=gw.url + "/v1", api_key=key["key"]).chat.completions.create(
            model="gpt-4o-mini", messages=[])
    assert exc.value.response.headers["x-should-retry"] == "false"
    assert time.monotonic() - t0 < 0.4  # a retry would have slept >= 0.5 s first
    # Only two 429s reached the gateway (rejected requests carry no key id in the log).
    rejected = poll(lambda: len(d := admin(gw, "GET", "/admin/logs?status=429").json()["data"]) >= 2 and d)
    assert rejected and len(rejected) == 2
    assert {e["error_type"] for e in rejected} == {"insufficient_quota"}


# -- 3. revoke during traffic ---------------------------------------------------------


def test_revoke_during_traffic_takes_effect_within_the_cache_ttl(gw, up):
    key = create_key(gw, name="revoked-live")
    token = key["key"]
    results: list[tuple[float, float, int]] = []  # (sent, answered, status)
    stop = threading.Event()

    def traffic() -> None:
        deadline = time.monotonic() + 8
        while not stop.is_set() and time.monotonic() < deadline:
            t = time.monotonic()
            status = chat(gw, token).status
            results.append((t, time.monotonic(), status))

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    assert poll(lambda: len(results) >= 5, 3)
    revoking_at = time.monotonic()
    resp = admin(gw, "DELETE", f"/admin/keys/{key['id']}")
    assert resp.status == 200 and resp.json() == {"id": key["id"], "revoked": True}
    revoked_at = time.monotonic()
    time.sleep(0.5 + 0.5)  # cache TTL plus slack
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    # Answered before the revoke was sent: allowed. Sent after it plus the cache TTL: refused.
    # (A request in flight while the revoke lands may get either.)
    before = [s for _, done, s in results if done < revoking_at]
    after = [s for sent, _, s in results if sent > revoked_at + 0.5]
    assert before and set(before) == {200}
    assert after and set(after) == {401}, results
    assert set(s for _, _, s in results) <= {200, 401}
    assert admin(gw, "GET", f"/admin/keys/{key['id']}").json()["revoked"] is True


def test_cli_revoke_reaches_the_gateway_after_the_cache_ttl(gw, up):
    key = create_key(gw, name="cli-revoked")
    assert chat(gw, key["key"]).status == 200  # cached now
    out = subprocess.run([sys.executable, "-m", "fastgw", "keys", "revoke", key["id"],
                          "--store", f"sqlite:///{gw.dir}/fastgw.db"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    revoked = time.monotonic()
    statuses = []
    while time.monotonic() - revoked < 3:
        statuses.append(chat(gw, key["key"]).status)
        if statuses[-1] == 401:
            break
        time.sleep(0.05)
    assert statuses[-1] == 401, statuses
    assert time.monotonic() - revoked < 0.5 + 0.5  # keys_cache_ttl plus slack


# -- 4. usage for streams and non-streams ---------------------------------------------


@pytest.mark.parametrize(
    ("stream", "client_usage", "usage_path"),
    [(False, False, "body"), (True, True, "client"), (True, False, "injected")],
)
def test_usage_is_logged_while_the_client_sees_the_provider_bytes(gw, up, stream, client_usage, usage_path):
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
    if stream:
        body["stream"] = True
    if client_usage:
        body["stream_options"] = {"include_usage": True}
    raw = json.dumps(body, separators=(",", ":")).encode()
    before = scrape(gw.url)
    resp = chat(gw, body=raw)
    assert resp.status == 200
    # Exactly what the provider would have sent this client.
    expected = sse_events(5, usage=client_usage) if stream else UPSTREAM_JSON
    assert resp.body == expected
    sent = up.requests[-1].body
    if usage_path == "injected":
        assert sent == b'{"stream_options":{"include_usage":true},' + raw[1:]
    else:
        assert sent == raw
    prompt, completion = (1, 2) if stream else (3, 2)
    entry = log_entry(gw, resp.headers["x-fastgw-request-id"])
    assert entry["stream"] is stream and entry["status"] == 200
    assert (entry["prompt_tokens"], entry["completion_tokens"]) == (prompt, completion)
    assert entry["cost_usd"] == pytest.approx(cost(prompt, completion))
    # The audit copy of the answer is what the client got (the injected usage chunk removed).
    assert entry["response_body"] == expected.decode()
    after = scrape(gw.url)
    assert metric(after, "fastgw_usage_path_total", path=usage_path) - metric(
        before, "fastgw_usage_path_total", path=usage_path) == 1


def test_openai_sdk_stream_with_and_without_usage(gw, up):
    c = client(gw, MASTER)
    chunks = list(c.chat.completions.create(model="gpt-4o-mini", messages=[], stream=True))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "".join(
        f"w{i} " for i in range(5))
    assert all(ch.usage is None for ch in chunks)  # not asked: not shown
    chunks = list(c.chat.completions.create(model="gpt-4o-mini", messages=[], stream=True,
                                            stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2


RESPONSES_STREAM = (
    b'event: response.created\ndata: {"type":"response.created","response":{"id":"resp_1","status":"in_progress"}}\n\n'
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"hi"}\n\n'
    b'event: response.completed\ndata: {"type":"response.completed","response":{"id":"resp_1",'
    b'"status":"completed","usage":{"input_tokens":7,"output_tokens":4,"total_tokens":11,'
    b'"input_tokens_details":{"cached_tokens":0},"output_tokens_details":{"reasoning_tokens":1}}}}\n\n'
)


def test_responses_stream_usage_is_logged_and_bytes_untouched(gw, up):
    up.handler = lambda r: sse_reply(RESPONSES_STREAM)
    raw = b'{"model":"gpt-4o-mini","stream":true,"input":"hello"}'
    resp = post(gw.url, "/v1/responses", raw, headers=ADMIN)
    assert resp.status == 200 and resp.body == RESPONSES_STREAM
    assert up.requests[-1].body == raw
    e = log_entry(gw, resp.headers["x-fastgw-request-id"])
    assert (e["prompt_tokens"], e["completion_tokens"], e["reasoning_tokens"]) == (7, 4, 1)
    assert e["cost_usd"] == pytest.approx(cost(7, 4))


def test_mock_usage_is_logged(gw, up):
    resp = chat(gw, model="mock-gpt")
    assert resp.status == 200
    reported = resp.json()["usage"]
    e = log_entry(gw, resp.headers["x-fastgw-request-id"])
    assert (e["prompt_tokens"], e["completion_tokens"]) == (reported["prompt_tokens"],
                                                              reported["completion_tokens"])


# -- 5. request log fields, pagination, filters, usage summaries ---------------------


def test_request_log_fields(gw, up):
    key = create_key(gw, name="logged")
    ok = chat(gw, key["key"])
    rewritten = chat(gw, key["key"], model="local/gpt-4o-mini", stream=True)
    failed = chat(gw, key["key"], model="err-model")
    assert (ok.status, rewritten.status, failed.status) == (200, 200, 500)
    assert failed.error()["message"] == "upstream exploded"

    e = log_entry(gw, ok.headers["x-fastgw-request-id"])
    assert e["request_id"] == ok.headers["x-fastgw-request-id"]
    assert (e["key_id"], e["key_name"]) == (key["id"], "logged")
    assert (e["provider"], e["model"], e["path"], e["stream"], e["status"]) == (
        "local", "gpt-4o-mini", "fast", False, 200)
    assert e["error_type"] is None
    assert 0 < e["ttfb_ms"] <= e["total_ms"] < 5000

    e = log_entry(gw, rewritten.headers["x-fastgw-request-id"])
    assert (e["path"], e["stream"], e["model"], e["provider"]) == ("rewritten", True, "gpt-4o-mini", "local")
    assert e["completion_tokens"] == 2

    e = log_entry(gw, failed.headers["x-fastgw-request-id"])
    assert (e["status"], e["model"], e["provider"], e["key_id"]) == (500, "err-model", "local", key["id"])
    assert e["error_type"] == "api_error"
    assert e["prompt_tokens"] is None and e["cost_usd"] is None


def test_request_log_unreachable_provider_error_type(gw, up):
    resp = chat(gw, model="dead-model")
    assert resp.status == 502 and resp.error()["code"] == "upstream_unreachable"
    e = log_entry(gw, resp.headers["x-fastgw-request-id"])
    assert (e["status"], e["provider"], e["error_type"]) == (502, "dead", "upstream_error")


def test_request_log_pagination_and_filters(gw, up):
    key = create_key(gw, name="pager")
    ids = [chat(gw, key["key"]).headers["x-fastgw-request-id"] for _ in range(5)]
    err = chat(gw, key["key"], model="err-model").headers["x-fastgw-request-id"]
    log_entry(gw, err)
    pages: list[str] = []
    cursor = None
    for _ in range(5):
        q = f"/admin/logs?key={key['id']}&limit=2" + (f"&cursor={cursor}" if cursor else "")
        doc = admin(gw, "GET", q).json()
        assert len(doc["data"]) <= 2
        assert all("request_body" not in r for r in doc["data"])
        pages += [r["request_id"] for r in doc["data"]]
        cursor = doc["next_cursor"]
        if cursor is None:
            break
    assert pages == [err, *reversed(ids)]  # newest first, no gaps, no repeats
    by_name = admin(gw, "GET", "/admin/logs?key=pager&status=200").json()["data"]
    assert sorted(r["request_id"] for r in by_name) == sorted(ids)
    failed = admin(gw, "GET", "/admin/logs?model=err-model&status=500&limit=1000").json()["data"]
    assert err in [r["request_id"] for r in failed] and {r["status"] for r in failed} == {500}
    assert admin(gw, "GET", "/admin/logs?status=abc").status == 400


def test_usage_summaries(gw, up):
    key = create_key(gw, name="summed")
    rid = ""
    for _ in range(3):
        rid = chat(gw, key["key"]).headers["x-fastgw-request-id"]
    log_entry(gw, rid)
    rows = admin(gw, "GET", "/admin/usage?group_by=key").json()["data"]
    mine = next(r for r in rows if r["key"] == key["id"])
    assert mine["key_name"] == "summed" and mine["requests"] == 3 and mine["errors"] == 0
    assert (mine["prompt_tokens"], mine["completion_tokens"]) == (9, 6)
    assert mine["cost_usd"] == pytest.approx(3 * cost(3, 2))
    models = {r["model"]: r for r in admin(gw, "GET", "/admin/usage?group_by=model").json()["data"]}
    assert models["gpt-4o-mini"]["requests"] >= 3 and models["gpt-4o-mini"]["cost_usd"] > 0
    providers = {r["provider"] for r in admin(gw, "GET", "/admin/usage?group_by=provider").json()["data"]}
    assert "local" in providers
    today = time.strftime("%Y-%m-%d", time.gmtime())
    days = admin(gw, "GET", f"/admin/usage?group_by=day&since={today}").json()["data"]
    assert [r["day"] for r in days] == [today] and days[0]["requests"] >= 3
    bad = admin(gw, "GET", "/admin/usage?group_by=color")
    assert bad.status == 400 and bad.error()["param"] == "group_by"


# -- 6. audit log -------------------------------------------------------------------


def test_audit_entry_has_redacted_bodies_and_the_conversation_thread(gw, up):
    secret = "sk-proj-LEAKED0123456789abcdef"
    turn1 = [{"role": "system", "content": "be brief"},
             {"role": "user", "content": f"my key is {secret}, keep it"}]
    r1 = chat(gw, body={"model": "gpt-4o-mini", "messages": turn1})
    turn2 = [*turn1, {"role": "assistant", "content": "hi"}, {"role": "user", "content": "and now?"}]
    r2 = chat(gw, body={"model": "gpt-4o-mini", "messages": turn2})
    other = chat(gw, body={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "unrelated"}]})
    id1, id2 = r1.headers["x-fastgw-request-id"], r2.headers["x-fastgw-request-id"]
    log_entry(gw, other.headers["x-fastgw-request-id"])
    e = log_entry(gw, id2, lambda d: bool(d["thread"]))
    assert secret not in json.dumps(e)
    assert "[REDACTED]" in e["request_body"] and "and now?" in e["request_body"]
    assert e["response_body"] == UPSTREAM_JSON.decode()
    assert [t["request_id"] for t in e["thread"]] == [id1]
    assert "[REDACTED]" in e["thread"][0]["request_body"]
    assert log_entry(gw, id1)["thread"] == []
    assert admin(gw, "GET", "/admin/logs/fgw-nope").status == 404


def test_audit_thread_follows_the_conversation_header(gw, up):
    headers = {"authorization": f"Bearer {MASTER}", "x-fastgw-conversation-id": "conv-42"}
    first = post(gw.url, "/v1/chat/completions",
                 {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "topic A"}]}, headers=headers)
    second = post(gw.url, "/v1/chat/completions",
                  {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a different opening"}]},
                  headers=headers)
    entry = log_entry(gw, second.headers["x-fastgw-request-id"], lambda d: bool(d["thread"]))
    assert [t["request_id"] for t in entry["thread"]] == [first.headers["x-fastgw-request-id"]]


# -- 7. metrics ---------------------------------------------------------------------


def test_metrics_cover_requests_latency_tokens_cost_errors_pools_and_streams(gw, up):
    before = scrape(gw.url)
    assert chat(gw).status == 200
    assert chat(gw, model="err-model").status == 500
    assert chat(gw, model="dead-model").status == 502
    # A slow stream: scraped while it is open, then finished.
    up.handler = lambda r: provider_like_stream(r, n=10, interval=0.1) if b'"stream"' in r.body else provider(r)
    done: list[RawResponse] = []
    t = threading.Thread(target=lambda: done.append(chat(gw, stream=True)), daemon=True)
    t.start()
    during = poll(lambda: (m := scrape(gw.url)) and metric(m, "fastgw_active_streams") >= 1 and m, 3)
    assert during, "no active stream seen"
    assert metric(during, "fastgw_pool_connections", provider="local", state="in_use") >= 1
    t.join(10)
    assert done and done[0].status == 200
    m = scrape(gw.url)

    def delta(name: str, **labels: str) -> float:
        return metric(m, name, **labels) - metric(before, name, **labels)

    assert delta("fastgw_requests_total", provider="local", model="gpt-4o-mini", status="200", path="fast") == 2
    assert delta("fastgw_requests_total", provider="local", model="err-model", status="500") == 1
    assert delta("fastgw_requests_total", provider="dead", model="dead-model", status="502") == 1
    for hist in ("fastgw_request_duration_seconds", "fastgw_ttfb_seconds"):
        assert delta(hist + "_count", provider="local", model="gpt-4o-mini") == 2
        assert metric(m, hist + "_bucket", provider="local", model="gpt-4o-mini", le="+Inf") == metric(
            m, hist + "_count", provider="local", model="gpt-4o-mini")
    assert delta("fastgw_overhead_seconds_count", path="fast") >= 2
    assert delta("fastgw_tokens_total", provider="local", model="gpt-4o-mini", kind="prompt") == 3 + 1
    assert delta("fastgw_tokens_total", provider="local", model="gpt-4o-mini", kind="completion") == 2 + 2
    assert delta("fastgw_cost_usd_total", provider="local", model="gpt-4o-mini") == pytest.approx(
        cost(3, 2) + cost(1, 2))
    assert delta("fastgw_upstream_errors_total", provider="local", kind="status_500") == 1
    assert delta("fastgw_upstream_errors_total", provider="dead") == 1
    assert metric(m, "fastgw_active_streams") == 0
    assert metric(m, "fastgw_pool_connections", provider="local", state="in_use") == 0
    assert metric(m, "fastgw_pool_connections", provider="local", state="idle") >= 1
    assert "fastgw_log_queue_depth" in m and "fastgw_log_dropped_total" in m
    assert metric(m, "fastgw_log_dropped_total") == 0


# -- 8. overhead header -----------------------------------------------------------------


def test_overhead_header_on_every_answer(gw, up):
    answers = {
        "fast": chat(gw),
        "stream": chat(gw, stream=True),
        "upstream 500": chat(gw, model="err-model"),
        "unreachable": chat(gw, model="dead-model"),
        "unknown model": chat(gw, model="nope"),
        "bad key": chat(gw, "sk-fgw-wrong"),
        "bad json": chat(gw, body=b"{nope"),
        "mock": chat(gw, model="mock-gpt"),
        "mock stream": chat(gw, model="mock-gpt-stream", stream=True),
        "admin": admin(gw, "GET", "/admin/keys"),
    }
    for what, resp in answers.items():
        value = resp.headers.get("x-fastgw-overhead-ms")
        assert value is not None, what
        assert 0 <= float(value) < 1000, (what, value)


# -- 9 + multi-worker: gateways with their own configuration ---------------------------


def test_no_master_key_disables_admin_and_multi_worker_metrics_add_up(upstream):
    upstream.handler = provider
    g = GatewayProcess(basic_config(upstream.url, "usage:\n  inject_stream_usage: false\n"), workers=2)
    try:
        resp = request(g.url, "GET", "/admin/keys")
        assert resp.status == 403 and resp.error()["code"] == "admin_disabled"
        assert float(resp.headers["x-fastgw-overhead-ms"]) >= 0
        # No injection: the upstream gets the client's body unchanged.
        raw = b'{"model":"gpt-4o-mini","stream":true,"messages":[]}'
        resp = post(g.url, "/v1/chat/completions", raw)
        assert resp.status == 200 and resp.body == sse_events(5, usage=False)
        assert upstream.requests[-1].body == raw
        # Concurrent fresh connections until both workers served some (each has its own
        # request-id prefix); bounded.
        served: dict[str, int] = {}
        n = 1  # the stream above
        with ThreadPoolExecutor(8) as pool:
            for _ in range(40):
                for resp in pool.map(lambda _: post(g.url, "/v1/chat/completions",
                                                    {"model": "gpt-4o-mini", "messages": []}), range(8)):
                    assert resp.status == 200
                    prefix = resp.headers["x-fastgw-request-id"][:-8]
                    served[prefix] = served.get(prefix, 0) + 1
                    n += 1
                if len(served) == 2:
                    break
        assert len(served) == 2, served
        time.sleep(1.5)  # every worker wrote a snapshot
        totals = []
        scraped: set[str] = set()
        with ThreadPoolExecutor(4) as pool:
            for _ in range(25):
                for m in pool.map(lambda _: scrape(g.url, scraped), range(4)):
                    totals.append((metric(m, "fastgw_requests_total"),
                                   metric(m, "fastgw_usage_path_total", path="none"),
                                   metric(m, "fastgw_usage_path_total", path="body")))
                if len(scraped) == 2:
                    break
        assert all(t == (n, 1, n - 1) for t in totals), (n, totals)
        assert scraped == set(served)  # both workers answered scrapes with the same totals
        assert len(g.worker_pids()) == 2
    finally:
        g.stop()


def test_postgres_store_keys_and_request_log(upstream):
    from pg import create_database

    dsn = create_database()  # skips (outside CI) when PostgreSQL is unavailable
    upstream.handler = provider
    g = GatewayProcess(basic_config(upstream.url, f"store_url: {dsn}\nmaster_key: {MASTER}\n"
                                    "logging: {flush_interval: 0.1}\n"))
    try:
        key = create_key(g, name="pg-user", models=["gpt-4o-mini"])
        completion = client(g, key["key"]).chat.completions.create(model="gpt-4o-mini", messages=[])
        assert completion.usage.total_tokens == 5
        stream = list(client(g, key["key"]).chat.completions.create(model="gpt-4o-mini", messages=[], stream=True))
        assert stream
        entries = poll(lambda: (d := admin(g, "GET", f"/admin/logs?key={key['id']}").json()["data"])
                       and len(d) == 2 and d)
        assert entries, "request log rows did not reach PostgreSQL"
        assert [(e["stream"], e["prompt_tokens"], e["key_name"]) for e in entries] == [
            (True, 1, "pg-user"), (False, 3, "pg-user")]
        assert admin(g, "GET", "/admin/keys").json()["data"][0]["name"] == "pg-user"
        assert admin(g, "DELETE", f"/admin/keys/{key['id']}").status == 200
        resp = chat(g, key["key"])
        assert resp.status == 401
        usage = admin(g, "GET", "/admin/usage?group_by=key").json()["data"]
        assert usage[0]["requests"] == 2
    finally:
        g.stop()


def test_revoke_with_two_workers_reaches_both_within_the_cache_ttl(upstream):
    upstream.handler = provider
    g = GatewayProcess(basic_config(upstream.url, f"master_key: {MASTER}\nkeys_cache_ttl: 0.5\n"), workers=2)
    try:
        key = create_key(g, name="two-workers")

        def answered_by(expect: int, rounds: int = 30) -> set[str]:
            # Concurrent requests so that both workers' accept loops get some (bounded).
            workers: set[str] = set()
            with ThreadPoolExecutor(8) as pool:
                for _ in range(rounds):
                    for resp in pool.map(lambda _: chat(g, key["key"]), range(8)):
                        assert resp.status == expect, resp.body
                        workers.add(resp.headers["x-fastgw-request-id"][:-8])
                    if len(workers) == 2:
                        break
            return workers

        seen = answered_by(200)  # warms both workers' caches
        assert len(seen) == 2
        assert admin(g, "DELETE", f"/admin/keys/{key['id']}").status == 200
        time.sleep(0.5 + 0.3)
        assert answered_by(401) == seen
    finally:
        g.stop()
