"""The scenario matrix: what each run sends, directly to the mock and through the gateway."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench import payloads as P
from bench.gateway import (
    ANTHROPIC_MODEL,
    FAILOVER_MODEL,
    GEMINI_MODEL,
    LIMITED_MODEL,
    OPENAI_MODEL,
    ROUTED_MODEL,
)
from bench.loadgen import RequestSpec
from bench.mock_upstream import Knobs

# Upstream behaviour per profile. "fast": a 20-event stream sent at once (measures the
# gateway's own cost); "paced": 100 ms to first token, then 20 events 10 ms apart.
PROFILES: dict[str, Knobs] = {
    "fast": Knobs(chunks=20, chunk_size=8),
    "paced": Knobs(ttfb_ms=100.0, chunks=20, interval_ms=10.0, chunk_size=8),
}

Build = Callable[[str], list[RequestSpec]]


@dataclass
class Scenario:
    name: str
    description: str
    profile: str
    concurrency: int
    direct: Build
    gateway: Build
    needs: str | None = None  # provider type the gateway must support ("anthropic", "gemini")
    kind: str = "throughput"  # throughput | paced | stall
    duration_scale: float = 1.0

    @property
    def key(self) -> str:
        return f"{self.name}@c{self.concurrency}"


def _oa(endpoint: str, model: str, stream: bool) -> Build:
    # The key is read when the requests are built: ``--controls all`` swaps in a virtual key.
    return lambda host: [P.openai_request(host, endpoint, model, stream, key=P.BENCH_KEY)]


def _passthrough(endpoint: str, model: str, stream: bool) -> Build:
    # /p/local + the path under the provider's base URL (/v1): the same upstream request.
    def build(host: str) -> list[RequestSpec]:
        spec = P.openai_request(host, endpoint, model, stream, key=P.BENCH_KEY)
        return [RequestSpec(spec.raw.replace(b" /v1/", b" /p/local/", 1), spec.stream)]

    return build


DESCRIPTIONS = {
    "chat_nonstream": "POST /v1/chat/completions, JSON, fast path (model gpt-4o-mini, bytes untouched)",
    "chat_stream": "POST /v1/chat/completions, SSE 20 content events, fast path",
    "chat_stream_rewrite": "SSE via qualified model local/gpt-4o-mini (gateway rewrites the model)",
    "anthropic_stream": "OpenAI chat SSE in, Anthropic Messages SSE upstream (translated); direct = native /v1/messages",
    "messages_stream": "POST /v1/messages SSE to an Anthropic provider: the byte relay (usage read from "
                       "message_start/message_delta); compare gw cpu us/req with chat_stream of the same run",
    "messages_translated_stream": "POST /v1/messages SSE to the OpenAI provider: Anthropic request -> chat, "
                                  "chat SSE -> Anthropic events; compare gw cpu us/req with chat_stream (target <= 2x)",
    "gemini_stream": "OpenAI chat SSE in, Gemini streamGenerateContent?alt=sse upstream; direct = native Gemini",
    "responses_stream": "POST /v1/responses, SSE event stream (response.created ... response.completed)",
    "route_stream": "SSE via a route over three healthy deployments (weighted, retries and breakers on, bytes "
                    "untouched); compare gw cpu us/req with chat_stream of the same run",
    "route_failover_stream": "SSE via a route over three deployments, one of them answering 503 to every request "
                             "(retries and breakers on): errors (target 0), +ttfb/+total vs direct",
    "route_limited_stream": "route_stream's shape over three deployments with provider rpm/tpm/concurrency limits "
                            "(never reached), checked and counted per attempt; compare gw cpu us/req with "
                            "route_stream of the same run",
    "paced_route_stream": "paced_stream through the three-deployment route: +ttfb vs paced_stream",
    "passthrough_stream": "POST /p/local/chat/completions, SSE 20 events through the raw passthrough (usage tap on)",
    "paced_stream": "SSE, upstream 100 ms to first token then 20 events 10 ms apart, 64 concurrent",
    "stall_512": "512 concurrent paced streams: largest inter-event gap vs the upstream's 10 ms",
}


def base_scenarios(c: int) -> list[Scenario]:
    d = DESCRIPTIONS
    return [
        Scenario("chat_nonstream", d["chat_nonstream"], "fast", c, _oa("chat", OPENAI_MODEL, False),
                 _oa("chat", OPENAI_MODEL, False)),
        Scenario("chat_stream", d["chat_stream"], "fast", c, _oa("chat", OPENAI_MODEL, True),
                 _oa("chat", OPENAI_MODEL, True)),
        Scenario("chat_stream_rewrite", d["chat_stream_rewrite"], "fast", c, _oa("chat", OPENAI_MODEL, True),
                 _oa("chat", "local/" + OPENAI_MODEL, True)),
        Scenario("anthropic_stream", d["anthropic_stream"], "fast", c,
                 lambda h: [P.anthropic_request(h, ANTHROPIC_MODEL, True)],
                 _oa("chat", ANTHROPIC_MODEL, True), needs="anthropic"),
        Scenario("messages_stream", d["messages_stream"], "fast", c,
                 lambda h: [P.anthropic_request(h, ANTHROPIC_MODEL, True)],
                 lambda h: [P.anthropic_request(h, ANTHROPIC_MODEL, True, key=P.BENCH_KEY)], needs="messages"),
        # Direct: the same chat stream from the mock (what the translated path reads upstream).
        Scenario("messages_translated_stream", d["messages_translated_stream"], "fast", c,
                 _oa("chat", OPENAI_MODEL, True),
                 lambda h: [P.anthropic_request(h, OPENAI_MODEL, True, key=P.BENCH_KEY)], needs="messages"),
        Scenario("gemini_stream", d["gemini_stream"], "fast", c,
                 lambda h: [P.gemini_request(h, GEMINI_MODEL, True)],
                 _oa("chat", GEMINI_MODEL, True), needs="gemini"),
        Scenario("responses_stream", d["responses_stream"], "fast", c, _oa("responses", OPENAI_MODEL, True),
                 _oa("responses", OPENAI_MODEL, True)),
        # Direct: the same stream from the mock (it echoes any model name).
        Scenario("route_stream", d["route_stream"], "fast", c, _oa("chat", ROUTED_MODEL, True),
                 _oa("chat", ROUTED_MODEL, True)),
        Scenario("route_failover_stream", d["route_failover_stream"], "fast", c, _oa("chat", FAILOVER_MODEL, True),
                 _oa("chat", FAILOVER_MODEL, True)),
        Scenario("route_limited_stream", d["route_limited_stream"], "fast", c, _oa("chat", LIMITED_MODEL, True),
                 _oa("chat", LIMITED_MODEL, True)),
        Scenario("passthrough_stream", d["passthrough_stream"], "fast", c, _oa("chat", OPENAI_MODEL, True),
                 _passthrough("chat", OPENAI_MODEL, True)),
    ]


def build_matrix(concurrencies: list[int], names: list[str] | None = None, stall_concurrency: int = 512,
                 paced_concurrency: int = 64, paced_scale: float = 2.0) -> list[Scenario]:
    out: list[Scenario] = []
    for c in concurrencies:
        out.extend(base_scenarios(c))
    if 1 not in concurrencies:  # the concurrency-1 (pure latency) scenario is always there
        out.extend(s for s in base_scenarios(1) if s.name == "chat_stream")
    stream = _oa("chat", OPENAI_MODEL, True)
    out.append(Scenario("paced_stream", DESCRIPTIONS["paced_stream"], "paced", paced_concurrency, stream, stream,
                        kind="paced", duration_scale=paced_scale))
    routed = _oa("chat", ROUTED_MODEL, True)
    out.append(Scenario("paced_route_stream", DESCRIPTIONS["paced_route_stream"], "paced", paced_concurrency, routed,
                        routed, kind="paced", duration_scale=paced_scale))
    out.append(Scenario("stall_512", DESCRIPTIONS["stall_512"], "paced", stall_concurrency, stream, stream,
                        kind="stall", duration_scale=paced_scale))
    if names:
        out = [s for s in out if s.name in names]
    return out
