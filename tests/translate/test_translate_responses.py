"""Responses API over chat: request mapping, non-streaming objects and the event stream."""

from __future__ import annotations

import json
from typing import Any

import conformance
import pytest
from chat_stream import accumulate

from bench.wire import anthropic_error_event, anthropic_json, anthropic_sse, gemini_sse
from fastgw.translate import anthropic, gemini
from fastgw.translate.errors import TranslationError
from fastgw.translate.responses import ResponsesStreamTranslator, chat_to_responses, responses_to_chat

# -- requests ---------------------------------------------------------------------


def test_string_input_and_instructions() -> None:
    chat = responses_to_chat(
        {
            "model": "m",
            "input": "hi",
            "instructions": "be brief",
            "max_output_tokens": 100,
            "temperature": 0.5,
            "top_p": 0.9,
            "store": False,
            "metadata": {"a": "b"},
            "reasoning": {"effort": "low"},
        }
    )
    assert chat == {
        "model": "m",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "max_completion_tokens": 100,
        "temperature": 0.5,
        "top_p": 0.9,
        "reasoning_effort": "low",
    }


def test_items_function_calls_and_outputs() -> None:
    chat = responses_to_chat(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "weather?"},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "checking", "annotations": []}],
                },
                {"type": "function_call", "call_id": "call_1", "name": "w", "arguments": '{"c":"P"}'},
                {"type": "function_call", "call_id": "call_2", "name": "w", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                {
                    "type": "function_call_output",
                    "call_id": "call_2",
                    "output": [{"type": "input_text", "text": "rain"}],
                },
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "see"},
                        {"type": "input_image", "image_url": "https://x.test/a.png", "detail": "auto"},
                    ],
                },
            ],
            "tools": [
                {
                    "type": "function",
                    "name": "w",
                    "description": "d",
                    "parameters": {"type": "object"},
                    "strict": True,
                }
            ],
            "tool_choice": {"type": "function", "name": "w"},
            "parallel_tool_calls": False,
            "stream": True,
            "text": {
                "format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}
            },
        }
    )
    assert chat["messages"] == [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "checking",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": '{"c":"P"}'}},
                {"id": "call_2", "type": "function", "function": {"name": "w", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "rain"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "see"},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "auto"}},
            ],
        },
    ]
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {"name": "w", "description": "d", "parameters": {"type": "object"}, "strict": True},
        }
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "w"}}
    assert chat["parallel_tool_calls"] is False
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
    }
    # and the result is a valid request for the provider translators
    anthropic.build_request(chat, "claude")
    gemini.build_request(chat, "gemini")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0]"),
        ({"input": "x", "tools": [{"type": "custom", "name": "apply_patch"}]}, "tools[0]"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0]",
        ),
        ({"input": 3}, "input"),
    ],
)
def test_unsupported_requests(body: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as ei:
        responses_to_chat(body)
    assert ei.value.param == param and ei.value.status == 400


# -- non-streaming ------------------------------------------------------------------


def _validate(obj: dict[str, Any], name: str) -> None:
    if conformance.conformance_dir() is not None:
        conformance.validator(name, "responses").validate(obj)


def test_chat_to_responses_text_reasoning_tools() -> None:
    chat = anthropic.translate_response(
        anthropic_json([("thinking", "hmm"), ("text", "Hi"), ("tool", "w", {"a": 1}, "toolu_1")]), model="m"
    )
    req = {
        "model": "alias",
        "input": "x",
        "instructions": "sys",
        "tools": [{"type": "function", "name": "w"}],
    }
    out = json.loads(chat_to_responses(chat, model="alias", request=req))
    _validate(out, "Response")
    assert out["object"] == "response" and out["status"] == "completed" and out["model"] == "alias"
    assert [i["type"] for i in out["output"]] == ["reasoning", "message", "function_call"]
    assert out["output"][0]["content"] == [{"type": "reasoning_text", "text": "hmm"}]
    assert out["output"][1]["content"][0]["text"] == "Hi"
    fc = out["output"][2]
    assert (fc["call_id"], fc["name"], json.loads(fc["arguments"])) == ("toolu_1", "w", {"a": 1})
    assert out["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 15,
    }
    assert out["instructions"] == "sys"
    assert out["tools"] == [
        {"type": "function", "name": "w", "description": None, "parameters": None, "strict": None}
    ]


def test_chat_to_responses_incomplete() -> None:
    chat = anthropic.translate_response(
        anthropic_json([("text", "cut")], stop_reason="max_tokens"), model="m"
    )
    out = json.loads(chat_to_responses(chat, model="m"))
    _validate(out, "Response")
    assert out["status"] == "incomplete" and out["incomplete_details"] == {"reason": "max_output_tokens"}


# -- streaming ----------------------------------------------------------------------


def sse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        name_line, data_line = block.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: ")
        data = json.loads(data_line[6:])
        assert data["type"] == name_line[7:]
        out.append((data["type"], data))
    return out


def run_chain(
    provider_bytes: bytes, provider: str = "anthropic", step: int | None = None
) -> tuple[bytes, bytes]:
    st = (anthropic if provider == "anthropic" else gemini).StreamTranslator(
        model="alias", include_usage=True
    )
    rt = ResponsesStreamTranslator("alias")
    chat = b""
    out = b""
    chunks = (
        [provider_bytes]
        if step is None
        else [provider_bytes[i : i + step] for i in range(0, len(provider_bytes), step)]
    )
    for piece in chunks:
        c = st.feed(piece)
        chat += c
        out += rt.feed(c)
    c = st.close()
    chat += c
    out += rt.feed(c) + rt.close()
    return chat, out


def check_stream(chat: bytes, out: bytes) -> list[tuple[str, dict[str, Any]]]:
    evs = sse_events(out)
    assert [d["sequence_number"] for _, d in evs] == list(range(len(evs)))
    if conformance.conformance_dir() is not None:
        for kind, data in evs:
            conformance.response_event_validator(kind).validate(data)
    assert evs[0][0] == "response.created" and evs[1][0] == "response.in_progress"
    final = evs[-1][1]["response"]
    acc = accumulate(chat)
    texts = "".join(p["text"] for i in final["output"] if i["type"] == "message" for p in i["content"])
    assert texts == acc.c0.text
    assert "".join(d["delta"] for k, d in evs if k == "response.output_text.delta") == acc.c0.text
    reasoning = "".join(d["delta"] for k, d in evs if k == "response.reasoning_text.delta")
    assert reasoning == acc.c0.reasoning
    calls = [
        (i["call_id"], i["name"], i["arguments"]) for i in final["output"] if i["type"] == "function_call"
    ]
    assert calls == [(tc["id"], tc["name"], tc["arguments"]) for _, tc in sorted(acc.c0.tools.items())]
    added = [d["output_index"] for k, d in evs if k == "response.output_item.added"]
    done = [d["output_index"] for k, d in evs if k == "response.output_item.done"]
    assert added == done == list(range(len(final["output"])))
    return evs


def test_stream_text_event_sequence() -> None:
    chat, out = run_chain(anthropic_sse([("text", "Hello there")]))
    evs = check_stream(chat, out)
    assert [k for k, _ in evs] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = evs[-1][1]["response"]
    assert final["status"] == "completed" and final["usage"]["input_tokens"] == 10


def test_stream_reasoning_text_tools() -> None:
    script = [
        ("thinking", "let me think"),
        ("text", "calling"),
        ("tool", "w", {"city": "Paris"}, "toolu_1"),
        ("tool", "t", {}, "toolu_2"),
    ]
    chat, out = run_chain(anthropic_sse(script, piece=3))
    evs = check_stream(chat, out)
    kinds = [k for k, _ in evs]
    assert (
        "response.function_call_arguments.delta" in kinds
        and kinds.count("response.function_call_arguments.done") == 2
    )
    final = evs[-1][1]["response"]
    assert [i["type"] for i in final["output"]] == ["reasoning", "message", "function_call", "function_call"]


def test_stream_gemini_chain_any_split() -> None:
    raw = gemini_sse([("thinking", "hmm"), ("text", "a longer answer here"), ("tool", "w", {"x": 1})])
    chat, out = run_chain(raw, "gemini", step=7)
    check_stream(chat, out)


def test_stream_incomplete() -> None:
    chat, out = run_chain(anthropic_sse([("text", "cut")], stop_reason="max_tokens"))
    evs = check_stream(chat, out)
    assert evs[-1][0] == "response.incomplete"
    assert evs[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_stream_error() -> None:
    raw = anthropic_sse([("text", "partial")], end=False) + anthropic_error_event(
        "rate_limit_error", "slow down"
    )
    _chat, out = run_chain(raw)
    evs = sse_events(out)
    if conformance.conformance_dir() is not None:
        for kind, data in evs:
            conformance.response_event_validator(kind).validate(data)
    assert [k for k, _ in evs][-2:] == ["error", "response.failed"]
    assert evs[-2][1]["message"] == "slow down"
    assert evs[-1][1]["response"]["error"] == {"code": "rate_limit_exceeded", "message": "slow down"}


@pytest.mark.parametrize(
    "entry_id",
    [
        "llma-stream-thinking",
        "asdk-stream-text-then-tool-use",
        "llma-stream-parallel-tool-use",
        "pai-gemini-sse-thinking",
        "vercel-gemini3-function-call",
    ],
)
def test_stream_recordings(entry_id: str) -> None:
    conformance.require()
    e = next(x for x in conformance.manifest() if x["id"] == entry_id)
    chat, out = run_chain(conformance.replay_bytes(e), e["provider"])
    check_stream(chat, out)
