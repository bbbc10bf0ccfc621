"""Rate and concurrency limits with the in-process backend, through a real ``fastgw serve``:
a key's rpm, tpm (corrected from real usage, streams and not) and concurrency, model,
provider and default limits, OpenAI's rate-limit headers, the refusal envelope, budgets on
unpriced models, and several workers without Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import openai
import pytest
from gateway import GatewayProcess
from limits_support import MASTER, burst, chat, create_key, provider_with_usage, statuses
from rawhttp import post

# 15 prompt tokens + 25 completion tokens = 40 per request, whatever the estimate said.
USAGE = (15, 25)


def config(url: str, extra: str = "") -> str:
    return f"""
providers:
  - name: local
    type: openai
    base_url: {url}/v1
    api_key: sk-test
    models: [gpt-4o-mini, other-model, capped-model]
master_key: {MASTER}
keys_cache_ttl: 0.5
pricing:
  gpt-4o-mini: {{input: 1, output: 1}}
  capped-model: {{input: 1, output: 1}}
limits:
  models:
    capped-model: {{rpm: 3}}
{extra}"""


@pytest.fixture(scope="module")
def gw(upstream_server) -> Iterator[GatewayProcess]:
    g = GatewayProcess(config(upstream_server.url))
    yield g
    g.stop()


@pytest.fixture
def up(upstream):
    upstream.handler = provider_with_usage(*USAGE)
    return upstream


def test_key_rpm_lets_exactly_the_limit_through_and_refuses_the_rest_with_headers(gw, up):
    token = create_key(gw, rpm_limit=5)["key"]
    responses = burst([gw.url], token, 12)
    assert statuses(responses) == {200: 5, 429: 7}
    ok = [r for r in responses if r.status == 200]
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok) == [0, 1, 2, 3, 4]
    for r in ok:
        assert r.headers["x-ratelimit-limit-requests"] == "5"
        assert r.headers["x-ratelimit-reset-requests"].endswith("s")
        assert "x-ratelimit-limit-tokens" not in r.headers  # no tpm limit on this key
    refused = next(r for r in responses if r.status == 429)
    err = refused.error()
    assert err["type"] == "rate_limit_exceeded" and err["code"] == "key_rpm_limit"
    assert "rpm" in err["message"] and "5 requests per minute" in err["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 61
    assert refused.headers["x-ratelimit-limit-requests"] == "5"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    # Refused requests never reached the upstream.
    assert len(up.requests) == 5


def test_the_openai_sdk_sees_a_rate_limit_error(gw, up):
    token = create_key(gw, rpm_limit=1)["key"]
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key=token, max_retries=0, timeout=10)
    raw = c.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=[])
    assert raw.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as exc:
        c.chat.completions.create(model="gpt-4o-mini", messages=[])
    assert exc.value.code == "key_rpm_limit" and exc.value.body["type"] == "rate_limit_exceeded"


@pytest.mark.parametrize("stream", [False, True])
def test_key_tpm_is_counted_from_real_usage(gw, up, stream):
    # Each request is estimated at 22 tokens (its body / 4) but really uses 40: with the
    # real usage counted, three fit in 105 (0 -> 40 -> 80 -> 120); on estimates alone, four would.
    token = create_key(gw, tpm_limit=105)["key"]
    results = []
    remaining = []
    for _ in range(5):
        r = chat(gw.url, token, stream=stream)
        results.append(r.status)
        if r.status == 200:
            remaining.append(int(r.headers["x-ratelimit-remaining-tokens"]))
            assert r.headers["x-ratelimit-limit-tokens"] == "105"
        else:
            err = r.error()
            assert err["code"] == "key_tpm_limit" and "tokens per minute" in err["message"]
            assert "x-ratelimit-remaining-tokens" in r.headers
        time.sleep(0.1)  # settling happens once the answer went out
    assert results == [200, 200, 200, 429, 429], (results, remaining)
    estimate = 105 - remaining[0]
    assert estimate == 22
    # The second request saw the first one's real 40 tokens, not its estimate.
    assert remaining[1] == 105 - 40 - estimate
    if stream:
        assert up.requests and b'"include_usage":true' in up.requests[0].body


def test_tpm_estimate_uses_max_tokens_and_refuses_a_request_that_cannot_fit(gw, up):
    token = create_key(gw, tpm_limit=100)["key"]
    r = chat(gw.url, token, max_tokens=500)
    assert r.status == 429
    assert "needs up to" in r.error()["message"]
    assert chat(gw.url, token, max_completion_tokens=10).status == 200


def test_key_concurrency_limit(gw, up):
    up.handler = provider_with_usage(*USAGE, delay=1.0)
    token = create_key(gw, concurrency_limit=2)["key"]
    responses = burst([gw.url], token, 6)
    assert statuses(responses) == {200: 2, 429: 4}
    err = next(r for r in responses if r.status == 429).error()
    assert err["code"] == "key_concurrency_limit" and "2 requests in flight" in err["message"]
    # The slots are free again once the answers went out.
    time.sleep(0.1)
    assert statuses(burst([gw.url], token, 2)) == {200: 2}


def test_model_limit_applies_to_every_caller(gw, up):
    # The master key has no limits of its own; the model's rpm 3 still holds.
    responses = burst([gw.url], MASTER, 6, model="capped-model")
    assert statuses(responses) == {200: 3, 429: 3}
    err = next(r for r in responses if r.status == 429).error()
    assert err["code"] == "model_rpm_limit"
    assert chat(gw.url, MASTER).status == 200  # other models are not affected


def test_budgeted_key_on_an_unpriced_model_is_refused(gw, up):
    token = create_key(gw, budget_usd=10)["key"]
    r = chat(gw.url, token, model="other-model")
    assert r.status == 403
    err = r.error()
    assert err["code"] == "model_not_priced" and "other-model" in err["message"]
    assert chat(gw.url, token).status == 200  # a priced model is fine
    unbudgeted = create_key(gw)["key"]
    assert chat(gw.url, unbudgeted, model="other-model").status == 200


def test_unpriced_models_allowed_when_configured_and_provider_and_default_limits(upstream_server):
    upstream_server.handler = provider_with_usage(*USAGE)
    extra = """budgets:
  unpriced: allow
limits:
  default: {rpm: 2}
  providers:
    other: {rpm: 1}
"""
    text = config(upstream_server.url).replace("limits:\n  models:\n    capped-model: {rpm: 3}\n", "") + extra
    text = text.replace("    models: [gpt-4o-mini, other-model, capped-model]\n",
                        "    models: [gpt-4o-mini, other-model, capped-model]\n"
                        f"  - name: other\n    type: openai\n    base_url: {upstream_server.url}/v1\n"
                        "    models: [third-model]\n")
    g = GatewayProcess(text)
    try:
        budgeted = create_key(g, budget_usd=10)["key"]
        assert chat(g.url, budgeted, model="other-model").status == 200
        # limits.default: rpm 2 for a key without limits of its own (per key)...
        plain = create_key(g)["key"]
        assert statuses(burst([g.url], plain, 4)) == {200: 2, 429: 2}
        other = create_key(g)["key"]
        assert statuses(burst([g.url], other, 3)) == {200: 2, 429: 1}
        # ... while a key's own limit replaces it.
        own = create_key(g, rpm_limit=4)["key"]
        assert statuses(burst([g.url], own, 6)) == {200: 4, 429: 2}
        # The provider's deployment limit: one request per minute to "other".
        responses = burst([g.url], MASTER, 3, model="third-model")
        assert statuses(responses) == {200: 1, 429: 2}
        assert next(r for r in responses if r.status == 429).error()["code"] == "provider_rpm_limit"
    finally:
        g.stop()


def test_two_workers_without_redis_divide_the_limit_and_say_so(upstream_server):
    upstream_server.handler = provider_with_usage(*USAGE)
    g = GatewayProcess(config(upstream_server.url), workers=2)
    try:
        token = create_key(g, rpm_limit=20)["key"]
        # Several rounds so both workers take requests: never more than 20 in total.
        passed = sum(statuses(burst([g.url], token, 40)).get(200, 0) for _ in range(3))
        assert 10 <= passed <= 20
        assert "each worker enforces 1/2 of every limit" in g.logs()
    finally:
        g.stop()


def test_per_worker_limits_are_an_explicit_choice(upstream_server):
    upstream_server.handler = provider_with_usage(*USAGE)
    g = GatewayProcess(config(upstream_server.url, "  per_worker: true\n"), workers=2)
    try:
        assert "each worker enforces the whole limit, so up to 2x each limit in total" in g.logs()
    finally:
        g.stop()


def test_limit_headers_replace_the_upstreams_own(gw, upstream):
    def handler(r):  # type: ignore[no-untyped-def]
        reply = provider_with_usage(*USAGE)(r)
        reply.headers.append(("x-ratelimit-remaining-requests", "9999"))
        return reply

    upstream.handler = handler
    token = create_key(gw, rpm_limit=3)["key"]
    r = chat(gw.url, token)
    assert r.status == 200 and r.headers["x-ratelimit-remaining-requests"] == "2"
    # Without a fastgw limit the provider's headers pass through as before.
    assert chat(gw.url, MASTER).headers["x-ratelimit-remaining-requests"] == "9999"


def test_many_concurrent_streams_settle_their_slots(gw, up):
    token = create_key(gw, concurrency_limit=3)["key"]
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(5):
                r = chat(gw.url, token, stream=True)
                assert r.status == 200, r.body
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors


def test_the_anthropic_door_is_limited_too(gw, up):
    token = create_key(gw, rpm_limit=1)["key"]
    body = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    first = post(gw.url, "/v1/messages", body, headers={"x-api-key": token})
    assert first.status == 200, first.body
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    second = post(gw.url, "/v1/messages", body, headers={"x-api-key": token})
    assert second.status == 429 and "retry-after" in second.headers
    assert "rpm" in second.body.decode()
