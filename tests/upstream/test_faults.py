"""Every upstream fault gives the client the right error, never poisons the pool, and the
next request succeeds -- through a real ``fastgw serve`` and a misbehaving upstream.

For each fault: the client's outcome is checked (502 / 504 in the envelope, or a 200
stream ending in exactly one ``data: {"error": ...}`` event and no ``[DONE]``); then the
upstream sees its connection closed by the gateway (``open_connections`` back to 0) and
the gateway's pool gauge shows nothing idle or in use for the provider (the broken
connection was not returned); then a normal request succeeds on a fresh connection.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator

import pytest
from fault_upstream import FaultUpstream
from gateway import GatewayProcess
from prometheus_client.parser import text_string_to_metric_families
from rawhttp import request

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def faulty() -> Iterator[FaultUpstream]:
    server = FaultUpstream()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gw(faulty: FaultUpstream) -> Iterator[GatewayProcess]:
    config = f"""
providers:
  - name: faulty
    type: openai
    base_url: {faulty.url}/v1
    api_key: sk-fault-upstream
    models: [m]
    timeouts: {{connect: 2, first_byte: 1, idle: 1, total: 3}}
  - name: faultclaude
    type: anthropic
    base_url: {faulty.url}
    api_key: sk-fault-claude
    models: [claude-m]
    timeouts: {{connect: 2, first_byte: 1, idle: 1, total: 3}}
logging: {{flush_interval: 0.1}}
"""
    g = GatewayProcess(config)
    yield g
    g.stop()


def call(gw: GatewayProcess, model: str, stream: bool) -> tuple[int, dict[str, str], bytes, bool]:
    """(status, headers, body, complete): ``complete`` is False when the body was cut short."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream,
                       "max_tokens": 5}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=15)
    conn.request("POST", CHAT, body=body, headers={"content-type": "application/json"})
    resp = conn.getresponse()
    try:
        data, complete = resp.read(), True
    except http.client.IncompleteRead as exc:
        data, complete = exc.partial, False
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, complete


def pool_gauges(gw: GatewayProcess, provider: str) -> tuple[float, float]:
    text = request(gw.url, "GET", "/metrics").body.decode()
    found = {"in_use": 0.0, "idle": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "fastgw_pool_connections" and sample.labels.get("provider") == provider:
                found[sample.labels["state"]] = sample.value
    return found["in_use"], found["idle"]


def wait_for(check, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def error_events(body: bytes) -> list[dict]:
    events = [e.removeprefix(b"data: ") for e in body.split(b"\n\n") if e.startswith(b"data: ")]
    return [json.loads(e)["error"] for e in events if e.startswith(b'{"error"')]


def expect_envelope(body: bytes, status: int) -> dict:
    doc = json.loads(body)
    assert set(doc) == {"error"} and set(doc["error"]) == {"message", "type", "param", "code"}, doc
    return doc["error"]


# fault, model, stream, expected outcome
CASES = [
    ("reset_before_headers", "m", False, "502"),
    ("reset_after_headers", "m", True, "error_event"),
    ("slow_headers", "m", False, "504"),
    ("silent_midstream", "m", True, "error_event"),
    ("garbage", "m", False, "502"),
    ("bad_chunked", "m", True, "error_event"),
    ("huge_header", "m", False, "502"),
    ("short_body", "m", False, "cut_short"),
    ("truncated_json", "claude-m", False, "502"),
    ("truncated_json", "m", False, "relayed"),
    ("http10_no_length", "m", False, "ok"),
    ("http10_no_length", "m", True, "ok_stream"),
    ("endless", "m", True, "error_event"),
]


@pytest.mark.parametrize(("fault", "model", "stream", "outcome"), CASES,
                         ids=[f"{c[0]}-{c[1]}-{'sse' if c[2] else 'json'}" for c in CASES])
def test_fault(gw, faulty, fault, model, stream, outcome):
    # A warm keep-alive connection first: the fault then hits a reused one too.
    faulty.fault = "ok"
    assert call(gw, "m", False)[0] == 200
    faulty.fault = fault
    t0 = time.monotonic()
    status, _headers, body, complete = call(gw, model, stream)
    elapsed = time.monotonic() - t0
    assert elapsed < 10, f"{fault}: the client waited {elapsed:.1f}s"
    if outcome in ("502", "504"):
        assert status == int(outcome), (status, body[:300])
        error = expect_envelope(body, status)
        assert error["type"] == ("timeout" if outcome == "504" else error["type"])
        assert "sk-fault" not in body.decode()
    elif outcome == "error_event":
        assert status == 200 and complete, (status, body[:300])
        errors = error_events(body)
        assert len(errors) == 1, body[-500:]
        assert body.rstrip().endswith(b"}") and b"[DONE]" not in body
        assert body.endswith(b"\n\n")
    elif outcome == "cut_short":
        # The head (with the upstream's length) went out before the body failed: closing
        # the connection short of that length is how HTTP says the body is incomplete.
        assert status == 200 and not complete
    elif outcome == "relayed":
        # The fast path relays a correctly framed body as it is (zero re-parsing).
        assert status == 200 and complete and body == b'{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'[:60]
    elif outcome == "ok":
        assert status == 200 and complete and json.loads(body)["choices"][0]["message"]["content"] == "ok"
    elif outcome == "ok_stream":
        assert status == 200 and complete and body.endswith(b"data: [DONE]\n\n")
    # The broken connection is closed by the gateway and never returned to the pool.
    if fault != "truncated_json":
        assert wait_for(lambda: faulty.open_connections == 0), f"{fault}: the gateway kept the connection open"
        assert wait_for(lambda: pool_gauges(gw, "faulty") == (0.0, 0.0)), pool_gauges(gw, "faulty")
    # The next request succeeds (on a fresh connection when the last one broke).
    accepted = faulty.connections_accepted
    faulty.fault = "ok"
    status, _, body, complete = call(gw, "m", stream)
    assert status == 200 and complete, (status, body[:300])
    if fault != "truncated_json":
        assert faulty.connections_accepted == accepted + 1
    assert wait_for(lambda: pool_gauges(gw, "faulty") == (0.0, 1.0)), pool_gauges(gw, "faulty")
    print(f"FAULT {fault:22s} {model:9s} {'sse ' if stream else 'json'} -> {outcome} ({elapsed:.2f}s)")


def test_gateway_survived_every_fault_and_logged_no_key(gw):
    assert gw.proc.poll() is None
    logs = gw.logs()
    assert "sk-fault-upstream" not in logs and "sk-fault-claude" not in logs
    # Failures are logged as one warning each; nothing reached the "failed to handle" path.
    assert "ERROR fastgw" not in logs, logs[-3000:]
