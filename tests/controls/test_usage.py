from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgw.controls.usage import (
    USAGE_BODY,
    USAGE_CLIENT,
    USAGE_INJECTED,
    USAGE_NONE,
    USAGE_RESPONSES,
    BodyTap,
    ResponsesUsageTap,
    StreamUsageTap,
    Usage,
    inject_include_usage,
    stream_usage_path,
    usage_from_json_body,
    usage_tap,
)

CORPUS = Path(
    os.environ.get("FASTGW_CONFORMANCE_DIR", Path(__file__).resolve().parents[2] / "../shared/conformance")
)


def corpus(pattern: str) -> list[Path]:
    return sorted(CORPUS.glob(pattern)) if CORPUS.is_dir() else []


def chunk(i: int, content: str) -> bytes:
    return (
        b'data: {"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":'
        + msgspec.json.encode(content)
        + b'},"finish_reason":null}]'
        + (b',"usage":null' if i % 2 else b"")
        + b"}\n\n"
    )


USAGE_EVENT = (
    b'data: {"id":"c1","object":"chat.completion.chunk","model":"m","choices":[],'
    b'"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18,'
    b'"prompt_tokens_details":{"cached_tokens":3},"completion_tokens_details":{"reasoning_tokens":2}}}\n\n'
)
FILTER_EVENT = (
    b'data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[]}\n\n'
)
DONE = b"data: [DONE]\n\n"
EXPECTED_USAGE = Usage(11, 7, 18, 3, 2)

# content that looks like the usage chunk must not fool the tap: it is escaped in JSON
TRICKY = 'x"choices":[],"usage":{"prompt_tokens":1}\n\ndata: {"choices":[]}'


def synthetic(crlf: bool = False) -> tuple[bytes, bytes]:
    parts = [FILTER_EVENT, b": keep-alive\n\n"] + [
        chunk(i, c) for i, c in enumerate(["Hel", "lo", TRICKY, "!"])
    ]
    full = b"".join([*parts, USAGE_EVENT, DONE])
    without = b"".join([*parts, DONE])
    if crlf:
        full, without = full.replace(b"\n", b"\r\n"), without.replace(b"\n", b"\r\n")
    return full, without


def relay(tap: StreamUsageTap | ResponsesUsageTap, data: bytes, cuts: list[int]) -> bytes:
    out = []
    prev = 0
    for c in [*sorted(set(cuts)), len(data)]:
        if c <= prev:
            continue
        piece = data[prev:c]
        got = tap.feed(piece)
        if not tap.strip:
            assert got is piece  # zero copy when nothing is stripped
        out.append(got)
        prev = c
    out.append(tap.close())
    return b"".join(out)


def cuts_for(data: bytes) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(min_value=1, max_value=max(1, len(data) - 1)), max_size=40)


FULL, WITHOUT = synthetic()
FULL_CRLF, WITHOUT_CRLF = synthetic(crlf=True)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=cuts_for(FULL))
def test_strip_is_byte_exact_for_any_split(cuts: list[int]) -> None:
    tap = StreamUsageTap(strip_usage_chunk=True)
    assert relay(tap, FULL, cuts) == WITHOUT
    assert tap.usage == EXPECTED_USAGE and tap.stripped == 1


@settings(max_examples=200, deadline=None)
@given(cuts=cuts_for(FULL_CRLF))
def test_strip_handles_crlf_streams(cuts: list[int]) -> None:
    tap = StreamUsageTap(strip_usage_chunk=True)
    assert relay(tap, FULL_CRLF, cuts) == WITHOUT_CRLF
    assert tap.usage == EXPECTED_USAGE


@settings(max_examples=200, deadline=None)
@given(cuts=cuts_for(FULL))
def test_observe_forwards_everything_untouched(cuts: list[int]) -> None:
    tap = StreamUsageTap(strip_usage_chunk=False)
    assert relay(tap, FULL, cuts) == FULL
    assert tap.usage == EXPECTED_USAGE and tap.stripped == 0


def test_every_single_split_point() -> None:
    for i in range(1, len(FULL)):
        tap = StreamUsageTap(True)
        assert relay(tap, FULL, [i]) == WITHOUT, i
    # byte by byte
    tap = StreamUsageTap(True)
    assert relay(tap, FULL, list(range(1, len(FULL)))) == WITHOUT


def test_complete_events_are_not_delayed() -> None:
    tap = StreamUsageTap(True)
    first = chunk(1, "a")
    # a whole event plus the start of the next one: the whole event goes out now
    got = tap.feed(first + b'data: {"id":"c1"')
    assert got == first
    # once the partial event shows non-empty choices it is released at once
    got = tap.feed(b',"choices":[{"index":0')
    assert got == b'data: {"id":"c1","choices":[{"index":0'
    assert tap.feed(b"}]}\n\n") == b"}]}\n\n"
    # a chunk that is exactly one event is returned as the same object
    c = chunk(2, "b")
    assert tap.feed(c) is c
    assert tap.feed(USAGE_EVENT) == b""
    assert tap.feed(DONE) == DONE
    assert tap.close() == b""
    assert tap.usage == EXPECTED_USAGE


def test_usage_with_nonempty_choices_is_forwarded_and_read() -> None:
    ev = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1}}\n\n'
    for strip in (True, False):
        tap = StreamUsageTap(strip)
        assert relay(tap, ev + DONE, [7, 30]) == ev + DONE
        assert tap.usage == Usage(5, 1, 6, 0, 0)


def test_unterminated_usage_event_at_end() -> None:
    data = chunk(0, "x") + USAGE_EVENT.rstrip(b"\n")
    tap = StreamUsageTap(True)
    assert relay(tap, data, [10]) == chunk(0, "x")
    assert tap.usage == EXPECTED_USAGE


def test_no_usage_means_none() -> None:
    tap = StreamUsageTap(False)
    data = chunk(0, "a") + DONE
    assert relay(tap, data, []) == data
    assert tap.usage is None


CHAT = corpus("openai/chat/*.response.sse")


def _minus_usage(data: bytes) -> bytes:
    # independent oracle: split on the blank line (these recordings use \n\n)
    events = data.split(b"\n\n")
    keep = []
    for ev in events:
        body = ev[len(b"data: ") :] if ev.startswith(b"data: ") else b""
        if body[:1] == b"{":
            obj = msgspec.json.decode(body)
            if obj.get("choices") == [] and obj.get("usage"):
                continue
        keep.append(ev)
    return b"\n\n".join(keep)


@pytest.mark.skipif(not CHAT, reason=f"conformance corpus not found at {CORPUS}")
@pytest.mark.parametrize("path", CHAT, ids=lambda p: p.name)
def test_recorded_openai_streams(path: Path) -> None:
    data = path.read_bytes()
    expected = _minus_usage(data)
    assert len(expected) < len(data)  # every recording has a usage chunk

    @settings(max_examples=60, deadline=None, database=None)
    @given(cuts=cuts_for(data))
    def check(cuts: list[int]) -> None:
        strip = StreamUsageTap(True)
        assert relay(strip, data, cuts) == expected
        observe = StreamUsageTap(False)
        assert relay(observe, data, cuts) == data
        assert strip.usage is not None and strip.usage == observe.usage
        assert strip.usage.total_tokens == strip.usage.prompt_tokens + strip.usage.completion_tokens

    check()
    # one event per chunk, as OpenAI sends them
    tap = StreamUsageTap(True)
    out = b"".join(tap.feed(p + b"\n\n") for p in data.split(b"\n\n")[:-1]) + tap.close()
    assert out + b"" == expected


RESPONSES = corpus("openai/responses/*.response.sse")


@pytest.mark.skipif(not RESPONSES, reason=f"conformance corpus not found at {CORPUS}")
@pytest.mark.parametrize("path", RESPONSES, ids=lambda p: p.name)
def test_recorded_responses_streams(path: Path) -> None:
    data = path.read_bytes()
    final = [ev for ev in data.split(b"\n\n") if b"event: response.completed" in ev]
    want = msgspec.json.decode(final[-1].split(b"data: ", 1)[1])["response"]["usage"]
    for size in (1, 7, 64, 1000, len(data)):
        tap = ResponsesUsageTap()
        assert relay(tap, data, list(range(size, len(data), size))) == data
        u = tap.usage
        assert u is not None
        assert (u.prompt_tokens, u.completion_tokens) == (want["input_tokens"], want["output_tokens"])


def test_responses_tap_large_completed_event() -> None:
    big = "y" * 200_000
    ev = b"event: response.completed\ndata: " + msgspec.json.encode(
        {
            "type": "response.completed",
            "response": {"output": big, "usage": {"input_tokens": 9, "output_tokens": 4}},
        }
    )
    data = b"event: response.created\ndata: {}\n\n" + ev + b"\n\n"
    tap = ResponsesUsageTap()
    relay(tap, data, list(range(1000, len(data), 1000)))
    assert tap.usage == Usage(9, 4, 13, 0, 0)


def test_usage_from_json_body() -> None:
    body = b'{"id":"x","choices":[{"message":{"content":"\\"usage\\":{}"}}],"usage":{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13,"prompt_tokens_details":{"cached_tokens":4}}}'
    assert usage_from_json_body(body) == Usage(10, 3, 13, 4, 0)
    # Responses API
    assert usage_from_json_body(
        b'{"usage":{"input_tokens":5,"output_tokens":2,"output_tokens_details":{"reasoning_tokens":1},"input_tokens_details":{"cached_tokens":1}}}'
    ) == Usage(5, 2, 7, 1, 1)
    # Anthropic: input_tokens excludes cache reads/writes
    assert usage_from_json_body(
        b'{"usage":{"input_tokens":5,"output_tokens":2,"cache_read_input_tokens":10,"cache_creation_input_tokens":3}}'
    ) == Usage(18, 2, 20, 10, 0, cache_write_tokens=3)
    assert usage_from_json_body(b'{"usage":null}') is None
    assert usage_from_json_body(b'{"no":"usage"}') is None
    assert usage_from_json_body(b"not json") is None
    assert usage_from_json_body(b'{"usage":{"prompt_tokens":"x"}}') is None


def test_inject_include_usage() -> None:
    f = {"model": msgspec.Raw(b'"m"'), "stream": msgspec.Raw(b"true")}
    inject_include_usage(f)
    assert msgspec.json.decode(f["stream_options"]) == {"include_usage": True}
    # round trip through the encoder keeps everything else as it was
    assert msgspec.json.decode(msgspec.json.encode(f)) == {
        "model": "m",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    g = {"stream_options": msgspec.Raw(b'{"include_obfuscation": false, "include_usage": false}')}
    inject_include_usage(g)
    assert msgspec.json.decode(g["stream_options"]) == {"include_obfuscation": False, "include_usage": True}
    n = {"stream_options": msgspec.Raw(b"null")}
    inject_include_usage(n)
    assert msgspec.json.decode(n["stream_options"]) == {"include_usage": True}


def test_stream_usage_path_and_tap() -> None:
    chat = "/chat/completions"
    assert stream_usage_path(chat, False, False, True) == USAGE_BODY
    assert stream_usage_path("/responses", True, False, True) == USAGE_RESPONSES
    assert stream_usage_path(chat, True, True, True) == USAGE_CLIENT
    assert stream_usage_path(chat, True, False, True) == USAGE_INJECTED
    assert stream_usage_path(chat, True, False, False) == USAGE_NONE
    assert isinstance(usage_tap(chat, False, USAGE_BODY), BodyTap)
    injected = usage_tap(chat, True, USAGE_INJECTED)
    assert isinstance(injected, StreamUsageTap) and injected.strip
    assert not usage_tap(chat, True, USAGE_CLIENT).strip
    assert usage_tap(chat, True, USAGE_NONE) is None
    assert isinstance(usage_tap("/responses", True, USAGE_RESPONSES), ResponsesUsageTap)
