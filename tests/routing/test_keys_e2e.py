"""API-key rotation end to end: a provider with several keys, one of them revoked upstream (401)
or rate limited (429); the real ``openai`` SDK sees ordinary answers, the log names keys masked."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from gateway import GatewayProcess
from rawhttp import request
from upstream_server import UPSTREAM_JSON, UpstreamServer, json_reply

from bench.wire import anthropic_json

HI = [{"role": "user", "content": "hi"}]
REVOKED = "sk-revoked-0000000001"
GOOD = "sk-good-00000000000002"
LIMITED = "sk-limited-000000000003"
MASTER = "sk-master-keys-test"


@pytest.fixture(scope="module")
def gw(upstream_server: UpstreamServer) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(f"""
master_key: {MASTER}
providers:
  - name: rot
    type: openai
    base_url: "{upstream_server.url}/v1"
    api_keys: [{REVOKED}, {GOOD}]
    models: [m]
  - name: lim
    type: openai
    base_url: "{upstream_server.url}/v2"
    api_keys: [{LIMITED}, {GOOD}]
    models: [m2]
  - name: claude
    type: anthropic
    base_url: "{upstream_server.url}"
    api_keys: [{REVOKED}, {GOOD}]
    models: [claude-haiku-4-5]
""")
    yield gateway
    gateway.stop()


def by_key(r):
    key = r.headers.get("authorization", "").removeprefix("Bearer ") or r.headers.get("x-api-key", "")
    if key == REVOKED:
        return json_reply(b'{"error":{"message":"Incorrect API key","type":"invalid_request_error",'
                          b'"param":null,"code":"invalid_api_key"}}', status=401)
    if key == LIMITED:
        return json_reply(b'{"error":{"message":"Rate limit","type":"requests","param":null,"code":null}}',
                          status=429)
    if r.target.startswith("/v1/messages"):
        return json_reply(anthropic_json([("text", "hi 👋")]))
    return json_reply(UPSTREAM_JSON)


@pytest.fixture
def client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0)


def keys_used(upstream: UpstreamServer) -> list[str]:
    return [(r.headers.get("authorization", "").removeprefix("Bearer ") or r.headers.get("x-api-key", ""))
            for r in upstream.requests]


def test_a_revoked_key_is_skipped_and_logged_masked(gw, upstream, client):
    upstream.handler = by_key
    for _ in range(4):
        raw = client.chat.completions.with_raw_response.create(model="rot/m", messages=HI)
        assert raw.parse().choices[0].message.content == "hi 👋"
    used = keys_used(upstream)
    assert used.count(REVOKED) == 1 and used.count(GOOD) == 4  # set aside after its 401
    logs = gw.logs()
    assert "sk-r…01 refused (401)" in logs
    assert REVOKED not in logs and GOOD not in logs
    state = request(gw.url, "GET", "/admin/routes", headers={"authorization": f"Bearer {MASTER}"}).json()
    cooling = {k["key"]: k["cooling_down_s"] for k in state["keys"]["rot"]}
    assert cooling["sk-r…01"] > 0 and cooling["sk-g…02"] == 0


def test_a_rate_limited_key_is_rotated_and_set_aside_after_repeated_429s(gw, upstream, client):
    upstream.handler = by_key
    for _ in range(6):
        assert client.chat.completions.create(model="lim/m2", messages=HI).choices[0].message.content == "hi 👋"
    used = keys_used(upstream)
    assert used.count(LIMITED) == 2 and used.count(GOOD) == 6
    assert "sk-l…03 2 rate limits in a row" in gw.logs()


def test_translated_providers_rotate_keys_too(gw, upstream, client):
    upstream.handler = by_key
    for _ in range(3):
        assert client.chat.completions.create(model="claude-haiku-4-5", messages=HI,
                                              max_tokens=10).choices[0].message.content == "hi 👋"
    used = keys_used(upstream)
    assert used.count(REVOKED) == 1 and used.count(GOOD) == 3
