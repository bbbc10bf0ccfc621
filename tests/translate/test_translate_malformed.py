"""Malformed streams, in any byte split: every stream reader gives the right output or one
clean error, never an exception.

* translators (Anthropic SSE, Gemini SSE and JSON-array framing): valid streams with
  garbage spliced in, events cut short, JSON broken or of the wrong shape -- the output is
  SSE whose every event is JSON (or ``[DONE]``), with at most one error event and nothing
  after it;
* the SSE parser: arbitrary bytes never raise, and any split gives the same events;
* the usage taps (chat, Responses, Anthropic passthrough, the body tap) and the
  cancelled-stream estimate: arbitrary bytes never raise, observe-only taps hand on the
  very chunk objects, and the estimate is a non-negative count.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.wire import anthropic_sse, gemini_sse
from fastgw.controls.estimate import estimate_stream_usage
from fastgw.controls.passthrough_usage import PassthroughTap
from fastgw.controls.usage import BodyTap, ResponsesUsageTap, StreamUsageTap
from fastgw.translate import anthropic, gemini
from fastgw.translate.sse import SSEParser

GARBAGE = [b"\x00\xff", b"data: {\n\n", b"data: [1,2,3]\n\n", b'data: {"type":7}\n\n', b"event: x\n\n",
           b"data: null\n\n", b'data: {"type":"content_block_delta","index":"x","delta":5}\n\n',
           b'data: {"candidates":"nope"}\n\n', b"\r\r\n\n", b"::::\n", b"data: \xc3\n\n", b"]", b"[", b",",
           b'{"candidates":[{"content":{"parts":[{"text":1}]}}]}', b"data: " + b"[" * 3000 + b"\n\n"]

_script = st.lists(st.one_of(st.tuples(st.just("text"), st.text(min_size=1, max_size=20)),
                             st.tuples(st.just("thinking"), st.text(min_size=1, max_size=20))),
                   min_size=1, max_size=4)


@st.composite
def broken(draw: st.DrawFn, raw: bytes) -> bytes:
    how = draw(st.sampled_from(["splice", "truncate", "replace", "splice", "repeat"]))
    at = draw(st.integers(0, len(raw)))
    if how == "truncate":
        return raw[:at]
    junk = draw(st.sampled_from(GARBAGE) | st.binary(min_size=1, max_size=30))
    if how == "replace":
        end = min(len(raw), at + draw(st.integers(1, 60)))
        return raw[:at] + junk + raw[end:]
    if how == "repeat":
        return raw[:at] + raw[:at] + junk
    return raw[:at] + junk + raw[at:]


def split_feed(feed: Any, close: Any, raw: bytes, cuts: list[int]) -> bytes:
    out, prev = [], 0
    for c in [*sorted({c % (len(raw) + 1) for c in cuts}), len(raw)]:
        out.append(feed(raw[prev:c]))
        prev = c
    out.append(close())
    return b"".join(out)


def check_sse_output(out: bytes) -> None:
    events = [e for e in out.split(b"\n\n") if e.strip()]
    errors = 0
    for i, event in enumerate(events):
        assert event.startswith(b"data: "), event[:200]
        payload = event[6:]
        if payload == b"[DONE]":
            assert i == len(events) - 1, "[DONE] is not last"
            continue
        doc = json.loads(payload)
        if "error" in doc:
            errors += 1
            assert i == len(events) - 1, "output after the error event"
            assert {"message", "type"} <= set(doc["error"])
    assert errors <= 1


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(script=_script, data=st.data(), cuts=st.lists(st.integers(0, 10**6), max_size=8))
def test_anthropic_translator_on_malformed_streams(script, data, cuts):
    raw = data.draw(broken(anthropic_sse(script)))
    t = anthropic.StreamTranslator(model="m", include_usage=True)
    check_sse_output(split_feed(t.feed, t.close, raw, cuts))


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(script=_script, data=st.data(), cuts=st.lists(st.integers(0, 10**6), max_size=8),
       framing=st.sampled_from(["sse", "json-array"]))
def test_gemini_translator_on_malformed_streams(script, data, cuts, framing):
    raw = gemini_sse(script)
    if framing == "json-array":
        docs = [line[6:] for line in raw.split(b"\n\n") if line.startswith(b"data: ")]
        raw = b"[" + b",\r\n".join(docs) + b"]"
    raw = data.draw(broken(raw))
    t = gemini.StreamTranslator(model="m", include_usage=True, framing=framing) if framing == "json-array" \
        else gemini.StreamTranslator(model="m", include_usage=True)
    check_sse_output(split_feed(t.feed, t.close, raw, cuts))


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=400) | st.sampled_from(GARBAGE), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_sse_parser_never_raises_and_any_split_gives_the_same_events(raw, cuts):
    whole = SSEParser()
    expected = [(e.event, e.data) for e in whole.feed(raw) + whole.close()]
    parser = SSEParser()
    got, prev = [], 0
    for c in [*sorted({c % (len(raw) + 1) for c in cuts}), len(raw)]:
        got += [(e.event, e.data) for e in parser.feed(raw[prev:c])]
        prev = c
    got += [(e.event, e.data) for e in parser.close()]
    assert got == expected


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=600) | st.sampled_from(GARBAGE), cuts=st.lists(st.integers(0, 600), max_size=8),
       path=st.sampled_from([b"/chat/completions", b"/responses", b"/v1/messages"]),
       ctype=st.sampled_from([b"text/event-stream", b"application/json"]))
def test_usage_taps_never_raise_on_arbitrary_bytes(raw, cuts, path, ctype):
    for tap in (StreamUsageTap(strip_usage_chunk=False), ResponsesUsageTap(), BodyTap(), PassthroughTap(path, ctype)):
        prev = 0
        for c in [*sorted({c % (len(raw) + 1) for c in cuts}), len(raw)]:
            piece = raw[prev:c]
            assert tap.feed(piece) is piece  # observe only: the very chunk goes on
            prev = c
        tap.close()
        usage = tap.usage
        assert usage is None or usage.prompt_tokens >= 0
        if hasattr(tap, "seen"):
            estimate = estimate_stream_usage(tap, len(raw))
            assert estimate is None or (estimate.completion_tokens >= 0 and estimate.prompt_tokens >= 0)
    stripping = StreamUsageTap(strip_usage_chunk=True)
    prev = 0
    for c in [*sorted({c % (len(raw) + 1) for c in cuts}), len(raw)]:
        stripping.feed(raw[prev:c])
        prev = c
    stripping.close()
    assert stripping.usage is None or stripping.usage.total_tokens >= 0
