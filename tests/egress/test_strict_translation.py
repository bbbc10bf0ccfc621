"""``strict_translation``: the same request that a translated target serves by dropping fields
(named in ``x-fastgw-dropped-params``) is refused with a 400 naming every one of them when the
provider (or the top-level default) is strict. Real gateway processes, the real ``anthropic`` and
``openai`` SDKs, the test upstream speaking each provider's wire format."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import openai
import pytest
from conftest import GEMINI
from gateway import GatewayProcess
from rawhttp import post
from upstream_server import UpstreamServer, json_reply, sse_reply

from bench.wire import anthropic_json, gemini_json, openai_chat_json, openai_chat_sse
from fastgw.config import parse_config
from fastgw.routing.providers import resolved_providers

HI = [{"role": "user", "content": "hi"}]
CACHED_SYSTEM = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]


@pytest.fixture(scope="module")
def sgw(upstream_server: UpstreamServer) -> Iterator[GatewayProcess]:
    """Top-level default (not strict); one provider of each kind strict on its own."""
    url = upstream_server.url
    gw = GatewayProcess(f"""
providers:
  - {{name: oai, type: openai, base_url: "{url}/v1", api_key: sk-oai, models: [gpt-lax]}}
  - {{name: oai-strict, type: openai, base_url: "{url}/v1", api_key: sk-oai, models: [gpt-strict],
      strict_translation: true}}
  - {{name: oai-both, type: openai, base_url: "{url}/v1", api_key: sk-oai, models: [gpt-both],
      strict_translation: true, drop_unsupported_params: true}}
  - {{name: gem-strict, type: gemini, base_url: "{url}", api_key: k-gem, models: [{GEMINI}],
      strict_translation: true}}
  - {{name: claude, type: anthropic, base_url: "{url}", api_key: k-ant, models: [claude-lax]}}
  - {{name: claude-drop, type: anthropic, base_url: "{url}", api_key: k-ant, models: [claude-drop],
      drop_unsupported_params: true}}
  - {{name: claude-strict, type: anthropic, base_url: "{url}", api_key: k-ant, models: [claude-strict],
      strict_translation: true, drop_unsupported_params: true}}
""")
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def strict_default_gw(upstream_server: UpstreamServer) -> Iterator[GatewayProcess]:
    """Top-level strict_translation: true; one provider turns it off for itself."""
    url = upstream_server.url
    gw = GatewayProcess(f"""
strict_translation: true
providers:
  - {{name: oai, type: openai, base_url: "{url}/v1", api_key: sk-oai, models: [gpt-default]}}
  - {{name: oai-lax, type: openai, base_url: "{url}/v1", api_key: sk-oai, models: [gpt-lax],
      strict_translation: false}}
""")
    yield gw
    gw.stop()


def ant(gw: GatewayProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="any", max_retries=0)


def oai(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="any", max_retries=0)


def claude_code_like(client: anthropic.Anthropic, model: str, **kw):  # type: ignore[no-untyped-def]
    """A Messages request with what Claude Code sends that only steers Anthropic's machinery."""
    return client.messages.with_raw_response.create(
        model=model, max_tokens=64, system=CACHED_SYSTEM, messages=HI,
        extra_body={"context_management": {"edits": []}}, **kw)


# -- the Anthropic door ---------------------------------------------------------------------------


def test_messages_dropped_without_strict_refused_with_it(sgw, upstream):
    upstream.handler = lambda r: json_reply(openai_chat_json([("text", "Hello")]))
    raw = claude_code_like(ant(sgw), "gpt-lax")
    assert raw.parse().content[0].text == "Hello"
    assert raw.headers["x-fastgw-dropped-params"] == "context_management,cache_control"
    assert len(upstream.requests) == 1

    upstream.requests.clear()
    with pytest.raises(anthropic.BadRequestError) as err:
        claude_code_like(ant(sgw), "gpt-strict")
    assert err.value.status_code == 400
    body = err.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    message = body["error"]["message"]
    assert "strict_translation" in message and "'context_management'" in message and "'cache_control'" in message
    assert upstream.requests == []  # refused before anything went upstream


def test_messages_strict_stream_refused_before_the_stream_starts(sgw, upstream):
    upstream.handler = lambda r: sse_reply(openai_chat_sse([("text", "Hello")]))
    with pytest.raises(anthropic.BadRequestError) as err, ant(sgw).messages.stream(
            model="gpt-strict", max_tokens=64, system=CACHED_SYSTEM, messages=HI) as stream:
        stream.get_final_message()
    assert "'cache_control'" in err.value.body["error"]["message"]
    # The same stream without cache_control is served: strict refuses only what would be dropped.
    with ant(sgw).messages.stream(model="gpt-strict", max_tokens=64, messages=HI) as stream:
        assert stream.get_final_message().content[0].text == "Hello"


def test_messages_strict_names_every_field_and_wins_over_drop_unsupported(sgw, upstream):
    """A strict provider with drop_unsupported_params too: the unsupported ``top_k`` (OpenAI has
    none) and the machinery-only fields are all named in one 400; nothing is dropped."""
    upstream.handler = lambda r: json_reply(openai_chat_json([("text", "Hello")]))
    tools = [{"name": "f", "input_schema": {"type": "object"}}, {"type": "web_search_20250305", "name": "web_search"}]
    resp = post(sgw.url, "/v1/messages", {"model": "gpt-both", "max_tokens": 8, "messages": HI, "top_k": 5,
                                          "context_management": {}, "tools": tools},
                {"anthropic-version": "2023-06-01"})
    assert resp.status == 400
    error = json.loads(resp.body)["error"]
    for name in ("'top_k'", "'context_management'", "'web_search_20250305'"):
        assert name in error["message"]
    assert upstream.requests == []


def test_messages_strict_to_gemini(sgw, upstream):
    upstream.handler = lambda r: json_reply(gemini_json([("text", "Hello")]))
    with pytest.raises(anthropic.BadRequestError) as err:
        claude_code_like(ant(sgw), GEMINI)
    assert "'context_management'" in err.value.body["error"]["message"]
    msg = ant(sgw).messages.create(model=GEMINI, max_tokens=64, messages=HI)
    assert msg.content[0].text == "Hello"


# -- the OpenAI door --------------------------------------------------------------------------------


def codex_like(client: openai.OpenAI, model: str):  # type: ignore[no-untyped-def]
    """A Responses request with what Codex sends that only steers OpenAI's machinery."""
    return client.responses.with_raw_response.create(
        model=model, input="hi", prompt_cache_key="k-1", tools=[{"type": "web_search"}])


def test_responses_dropped_without_strict_refused_with_it(sgw, upstream):
    upstream.handler = lambda r: json_reply(anthropic_json([("text", "Hello")]))
    raw = codex_like(oai(sgw), "claude-lax")
    assert raw.parse().output_text == "Hello"
    assert raw.headers["x-fastgw-dropped-params"] == "prompt_cache_key,web_search"

    upstream.requests.clear()
    with pytest.raises(openai.BadRequestError) as err:
        codex_like(oai(sgw), "claude-strict")
    error = err.value.body
    assert error["type"] == "invalid_request_error" and error["code"] == "unsupported_parameter"
    assert error["param"] == "prompt_cache_key"
    assert "'prompt_cache_key'" in error["message"] and "'web_search'" in error["message"]
    assert upstream.requests == []


def test_chat_strict_refuses_what_drop_unsupported_would_drop(sgw, upstream):
    """``seed`` has no Anthropic counterpart: dropped under drop_unsupported_params, a 400 when the
    provider is strict as well."""
    upstream.handler = lambda r: json_reply(anthropic_json([("text", "Hello")]))
    answer = oai(sgw).chat.completions.create(model="claude-drop", messages=HI, seed=7)
    assert answer.choices[0].message.content == "Hello"
    assert "seed" not in json.loads(upstream.requests[-1].body)
    with pytest.raises(openai.BadRequestError) as err:
        oai(sgw).chat.completions.create(model="claude-strict", messages=HI, seed=7)
    assert err.value.body["param"] == "seed"


# -- the top-level default -------------------------------------------------------------------------


def test_top_level_default_and_provider_override(strict_default_gw, upstream):
    upstream.handler = lambda r: json_reply(openai_chat_json([("text", "Hello")]))
    with pytest.raises(anthropic.BadRequestError):
        claude_code_like(ant(strict_default_gw), "gpt-default")
    raw = claude_code_like(ant(strict_default_gw), "gpt-lax")
    assert raw.headers["x-fastgw-dropped-params"] == "context_management,cache_control"


def test_config_resolution():
    config = parse_config("""
strict_translation: true
providers:
  - {name: a, type: anthropic, api_key: k}
  - {name: b, type: anthropic, api_key: k, strict_translation: false}
""")
    got = {p.name: p.strict_translation for p in resolved_providers(config, {"GEMINI_API_KEY": "g"})}
    assert got == {"a": True, "b": False, "gemini": True, "mock": True}
    config = parse_config("providers: [{name: a, type: anthropic, api_key: k, strict_translation: true}]")
    got = {p.name: p.strict_translation for p in resolved_providers(config, {})}
    assert got == {"a": True, "mock": False}


# -- count_tokens: an estimate for translated targets, in Anthropic's shape -------------------------


@pytest.mark.parametrize("model", ["gpt-lax", GEMINI])
def test_count_tokens_estimate_is_anthropic_shaped(sgw, upstream, model):
    """What Claude Code counts (system with cache_control, tools, context_management) gets an
    estimate without a call upstream, also from a strict provider (nothing is sent, so nothing
    is dropped); the body is exactly Anthropic's ``{"input_tokens": N}``."""
    client = ant(sgw)
    tools = [{"name": f"tool_{i}", "description": "d" * 200, "input_schema": {"type": "object"}} for i in range(5)]
    raw = client.messages.with_raw_response.count_tokens(
        model=model, system=CACHED_SYSTEM, messages=[{"role": "user", "content": "x" * 400}],
        extra_body={"context_management": {"edits": []}})
    assert raw.headers["content-type"] == "application/json"
    assert json.loads(raw.http_response.content) == {"input_tokens": raw.parse().input_tokens}
    small = raw.parse().input_tokens
    assert 90 <= small <= 140
    bigger = client.messages.count_tokens(model=model, messages=[{"role": "user", "content": "x" * 400}],
                                          tools=tools).input_tokens  # type: ignore[arg-type]
    assert bigger > small + 200  # the tools count
    assert upstream.requests == []
    bad = post(sgw.url, "/v1/messages/count_tokens", {"model": model, "messages": []},
               {"anthropic-version": "2023-06-01"})
    assert bad.status == 400 and json.loads(bad.body)["type"] == "error"
