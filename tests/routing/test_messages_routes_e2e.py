"""Routes on the Anthropic door (``/v1/messages``): the real ``anthropic`` SDK, a route whose first
Anthropic deployment is overloaded, falling over to a second Anthropic one (byte relay) and across
formats to an OpenAI-compatible one (translated, streaming)."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest
from gateway import GatewayProcess
from upstream_server import UpstreamServer, json_reply, sse_events, sse_reply

from bench.wire import anthropic_error, anthropic_json

HI = [{"role": "user", "content": "hi"}]
OVERLOADED = lambda r: json_reply(anthropic_error("overloaded_error", "Overloaded"), status=529)  # noqa: E731


@pytest.fixture(autouse=True)
def reset(a: UpstreamServer, b: UpstreamServer) -> None:
    for server in (a, b):
        server.requests.clear()
    a.handler = OVERLOADED
    b.handler = lambda r: json_reply(anthropic_json([("text", "from b")]))


@pytest.fixture(scope="module")
def gw(a: UpstreamServer, b: UpstreamServer) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(f"""
providers:
  - {{name: anth1, type: anthropic, base_url: "{a.url}", api_key: k-1, models: [claude-x]}}
  - {{name: anth2, type: anthropic, base_url: "{b.url}", api_key: k-2, models: [claude-y]}}
  - {{name: oai, type: openai, base_url: "{b.url}/v1", api_key: sk-o, models: [m]}}
routes:
  claude-route: {{targets: [anth1/claude-x, anth2/claude-y], retry: {{on_status: [503, 529]}}}}
  cross: {{targets: [anth1/claude-x, oai/m], retry: {{on_status: [503, 529]}}}}
""")
    yield gateway
    gateway.stop()


@pytest.fixture
def client(gw: GatewayProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="k", max_retries=0)


def test_overloaded_anthropic_deployment_falls_over_to_the_next(gw, a, b, client):
    raw = client.messages.with_raw_response.create(model="claude-route", max_tokens=20, messages=HI)
    assert raw.parse().content[0].text == "from b"
    assert raw.headers["x-fastgw-provider"] == "anth2" and raw.headers["x-fastgw-attempts"] == "2"
    assert (len(a.requests), len(b.requests)) == (1, 1)
    assert b'"model":"claude-y"' in b.requests[0].body and b.requests[0].headers["x-api-key"] == "k-2"


def test_messages_route_falls_over_across_formats_streaming(gw, a, b, client):
    b.handler = lambda r: sse_reply(sse_events(3, usage=True))
    with client.messages.stream(model="cross", max_tokens=20, messages=HI) as stream:
        text = "".join(stream.text_stream)
    assert text == "w0 w1 w2 "
    assert b.requests[0].target == "/v1/chat/completions"
    assert len(a.requests) == 1


def test_a_failure_that_is_not_retried_reaches_the_client_in_anthropics_envelope(gw, a, b, client):
    a.handler = lambda r: json_reply(anthropic_error("invalid_request_error", "bad things"), status=400)
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model="claude-route", max_tokens=20, messages=HI)
    assert info.value.body["error"]["message"] == "bad things"
    assert len(b.requests) == 0
