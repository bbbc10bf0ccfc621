"""Property tests: any scripted reply, in any byte split, survives translation intact."""

from __future__ import annotations

import json
from typing import Any

from chat_stream import accumulate
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.wire import anthropic_json, anthropic_sse, gemini_json, gemini_sse
from fastgw.translate import anthropic, gemini

_text = st.text(min_size=1, max_size=30)
_args = st.dictionaries(
    st.text(min_size=1, max_size=6),
    st.one_of(st.integers(), st.text(max_size=10), st.booleans(), st.lists(st.integers(), max_size=3)),
    max_size=3,
)
_name = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("text"), _text),
        st.tuples(st.just("thinking"), _text),
        st.tuples(st.just("tool"), _name, _args),
    ),
    min_size=1,
    max_size=5,
)


def expected(script: list[tuple[Any, ...]]) -> tuple[str, str, list[tuple[str, Any]]]:
    text = "".join(s[1] for s in script if s[0] == "text")
    reasoning = "".join(s[1] for s in script if s[0] == "thinking")
    tools = [(s[1], s[2]) for s in script if s[0] == "tool"]
    return text, reasoning, tools


def feed_split(t: Any, raw: bytes, cuts: list[int]) -> bytes:
    out = b""
    prev = 0
    for c in [*sorted(set(cuts)), len(raw)]:
        out += t.feed(raw[prev:c])
        prev = c
    return out + t.close()


@settings(max_examples=60, deadline=None)
@given(script=_steps, data=st.data(), piece=st.integers(1, 7))
def test_anthropic_script_round_trip(script: list[tuple[Any, ...]], data: st.DataObject, piece: int) -> None:
    raw = anthropic_sse(script, piece=piece)
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=10))
    acc = accumulate(feed_split(anthropic.StreamTranslator(model="m", include_usage=True), raw, cuts))
    text, reasoning, tools = expected(script)
    assert (acc.c0.text, acc.c0.reasoning, acc.tool_calls()) == (text, reasoning, tools)
    assert acc.c0.finish_reason == ("tool_calls" if tools else "stop") and acc.done
    body = json.loads(anthropic.translate_response(anthropic_json(script), model="m"))
    msg = body["choices"][0]["message"]
    assert (msg["content"] or "") == text and msg.get("reasoning_content", "") == reasoning
    assert [
        (t["function"]["name"], json.loads(t["function"]["arguments"])) for t in msg.get("tool_calls", [])
    ] == tools


@settings(max_examples=60, deadline=None)
@given(script=_steps, data=st.data(), piece=st.integers(1, 9))
def test_gemini_script_round_trip(script: list[tuple[Any, ...]], data: st.DataObject, piece: int) -> None:
    raw = gemini_sse(script, piece=piece)
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=10))
    acc = accumulate(feed_split(gemini.StreamTranslator(model="m", include_usage=True), raw, cuts))
    text, reasoning, tools = expected(script)
    assert (acc.c0.text, acc.c0.reasoning, acc.tool_calls()) == (text, reasoning, tools)
    assert acc.c0.finish_reason == ("tool_calls" if tools else "stop") and acc.done
    body = json.loads(gemini.translate_response(gemini_json(script), model="m"))
    msg = body["choices"][0]["message"]
    assert (msg["content"] or "") == text and msg.get("reasoning_content", "") == reasoning
    assert [
        (t["function"]["name"], json.loads(t["function"]["arguments"])) for t in msg.get("tool_calls", [])
    ] == tools
