"""OpenAI chat <-> Anthropic Messages: request mapping, responses, streams, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from chat_stream import accumulate, events

from bench.wire import anthropic_error, anthropic_error_event, anthropic_json, anthropic_sse
from fastgw.translate import anthropic
from fastgw.translate.errors import TranslationError


def build(body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    path, headers, raw = anthropic.build_request(body, "claude-up", **kw)
    assert path == "/v1/messages"
    assert headers == {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    return json.loads(raw)


def user(text: str = "hi") -> dict[str, Any]:
    return {"role": "user", "content": text}


# -- requests ---------------------------------------------------------------------


def test_minimal_request_defaults() -> None:
    out = build({"model": "alias", "messages": [user()]})
    assert out == {"model": "claude-up", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4096}
    assert build({"messages": [user()]}, default_max_tokens=100)["max_tokens"] == 100
    assert build({"messages": [user()], "max_tokens": 7}, default_max_tokens=100)["max_tokens"] == 7
    assert build({"messages": [user()], "max_completion_tokens": 9, "max_tokens": 7})["max_tokens"] == 9


def test_system_and_developer_hoisted() -> None:
    out = build(
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "developer", "content": [{"type": "text", "text": "use french"}]},
                user(),
                {"role": "system", "content": "late"},
            ]
        }
    )
    assert out["system"] == [
        {"type": "text", "text": "be brief"},
        {"type": "text", "text": "use french"},
        {"type": "text", "text": "late"},
    ]
    assert out["messages"] == [{"role": "user", "content": "hi"}]


def test_multiturn_and_images() -> None:
    out = build(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://x.test/cat.jpg", "detail": "low"},
                        },
                        {
                            "type": "file",
                            "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"},
                        },
                    ],
                },
                {"role": "assistant", "content": "a cat"},
                {"role": "assistant", "content": ""},
                user("thanks"),
            ]
        }
    )
    assert out["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.jpg"}},
                {
                    "type": "document",
                    "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
                },
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "a cat"}]},
        {"role": "user", "content": "thanks"},
    ]


def test_cache_control_passthrough() -> None:
    part = {"type": "text", "text": "long doc", "cache_control": {"type": "ephemeral"}}
    out = build({"messages": [{"role": "user", "content": [part]}]})
    assert out["messages"][0]["content"] == [part]


def test_tools_tool_calls_and_merged_results() -> None:
    body = {
        "messages": [
            user("weather?"),
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "w", "arguments": '{"city":"Paris"}'},
                    },
                    {"id": "toolu_2", "type": "function", "function": {"name": "w", "arguments": ""}},
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "rain"}]},
            user("and?"),
        ],
        "tools": [
            {
                "type": "function",
                "function": {"name": "w", "description": "weather", "parameters": {"type": "object"}},
            },
            {"type": "function", "function": {"name": "noargs", "strict": True}},
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }
    out = build(body)
    assert out["tools"] == [
        {"name": "w", "description": "weather", "input_schema": {"type": "object"}},
        {"name": "noargs", "input_schema": {"type": "object", "properties": {}}, "strict": True},
    ]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert out["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "w", "input": {}},
        ],
    }
    assert out["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "rain"}]},
        ],
    }
    assert out["messages"][3] == {"role": "user", "content": "and?"}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        ({"type": "function", "function": {"name": "w"}}, {"type": "tool", "name": "w"}),
    ],
)
def test_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    tools = [{"type": "function", "function": {"name": "w"}}]
    assert build({"messages": [user()], "tools": tools, "tool_choice": choice})["tool_choice"] == expected


def test_parallel_tool_calls_without_choice() -> None:
    tools = [{"type": "function", "function": {"name": "w"}}]
    out = build({"messages": [user()], "tools": tools, "parallel_tool_calls": False})
    assert out["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert "tool_choice" not in build({"messages": [user()], "tools": tools, "parallel_tool_calls": True})


def test_sampling_stop_user_stream() -> None:
    out = build(
        {
            "messages": [user()],
            "stop": "END",
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 5,
            "user": "u-1",
            "stream": True,
            "stream_options": {"include_usage": True},
            "store": True,
            "metadata": {"a": "b"},
            "n": 1,
            "logprobs": False,
            "presence_penalty": 0,
            "some_future_field": {"x": 1},
        }
    )
    assert out["stop_sequences"] == ["END"]
    assert (out["temperature"], out["top_p"], out["top_k"]) == (0.2, 0.9, 5)
    assert out["metadata"] == {"user_id": "u-1"}
    assert out["stream"] is True
    assert build({"messages": [user()], "stop": ["a", "b"]})["stop_sequences"] == ["a", "b"]


def test_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}
    out = build(
        {
            "messages": [user()],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        }
    )
    assert out["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert "output_config" not in build({"messages": [user()], "response_format": {"type": "text"}})
    with pytest.raises(TranslationError) as ei:
        build({"messages": [user()], "response_format": {"type": "json_object"}})
    assert ei.value.param == "response_format"
    assert "output_config" not in build(
        {"messages": [user()], "response_format": {"type": "json_object"}}, drop_unsupported=True
    )


@pytest.mark.parametrize(
    ("effort", "budget"), [("minimal", 1024), ("low", 2048), ("medium", 8192), ("high", 16384)]
)
def test_reasoning_effort(effort: str, budget: int) -> None:
    out = build({"messages": [user()], "reasoning_effort": effort})
    assert out["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert out["max_tokens"] == budget + 4096
    assert "thinking" not in build({"messages": [user()], "reasoning_effort": "none"})


def test_reasoning_effort_respects_max_tokens() -> None:
    out = build({"messages": [user()], "reasoning_effort": "high", "max_tokens": 20000})
    assert out["max_tokens"] == 20000 and out["thinking"]["budget_tokens"] == 10000
    out = build({"messages": [user()], "reasoning_effort": "low", "max_tokens": 500})
    assert out["thinking"]["budget_tokens"] == 1024 and out["max_tokens"] > 1024
    with pytest.raises(TranslationError) as ei:
        build({"messages": [user()], "reasoning_effort": "low", "temperature": 0.5})
    assert ei.value.param == "temperature"
    out = build(
        {"messages": [user()], "reasoning_effort": "low", "temperature": 0.5, "top_k": 3},
        drop_unsupported=True,
    )
    assert "temperature" not in out and "top_k" not in out
    with pytest.raises(TranslationError):
        build({"messages": [user()], "reasoning_effort": "extreme"})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 2),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("presence_penalty", 0.5),
        ("frequency_penalty", 0.1),
        ("logit_bias", {"1": 2}),
        ("seed", 7),
        ("audio", {"voice": "x"}),
        ("modalities", ["text", "audio"]),
    ],
)
def test_unsupported_params(field: str, value: Any) -> None:
    body = {"messages": [user()], field: value}
    with pytest.raises(TranslationError) as ei:
        build(body)
    err = ei.value
    assert (err.status, err.param, err.type) == (400, field, "invalid_request_error")
    assert json.loads(err.to_body())["error"]["param"] == field
    out = build(body, drop_unsupported=True)
    assert field not in out


def test_invalid_requests() -> None:
    with pytest.raises(TranslationError) as ei:
        build({"messages": []})
    assert ei.value.param == "messages"
    with pytest.raises(TranslationError) as ei:
        build({"messages": [{"role": "wizard", "content": "x"}]})
    assert ei.value.param == "messages[0].role"
    bad_call = {"id": "t", "type": "function", "function": {"name": "w", "arguments": "{nope"}}
    with pytest.raises(TranslationError) as ei:
        build({"messages": [user(), {"role": "assistant", "tool_calls": [bad_call]}]})
    assert ei.value.param == "messages[1].tool_calls[0].function.arguments"
    with pytest.raises(TranslationError) as ei:
        build({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]})
    assert ei.value.param == "messages[0].content[0]"


def test_thinking_blocks_round_trip() -> None:
    raw = anthropic_json([("thinking", "hmm"), ("tool", "w", {"a": 1}, "toolu_9")])
    msg = json.loads(anthropic.translate_response(raw, model="m"))["choices"][0]["message"]
    out = build({"messages": [user(), msg, {"role": "tool", "tool_call_id": "toolu_9", "content": "ok"}]})
    assert out["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "hmm", "signature": "c2ln"},
        {"type": "tool_use", "id": "toolu_9", "name": "w", "input": {"a": 1}},
    ]


# -- non-streaming responses --------------------------------------------------------


def test_response_text_and_usage_convention() -> None:
    usage = {
        "input_tokens": 10,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 5,
        "output_tokens": 7,
    }
    out = json.loads(
        anthropic.translate_response(
            anthropic_json([("text", "Hel"), ("text", "lo")], usage=usage), model="alias"
        )
    )
    assert out["object"] == "chat.completion" and out["model"] == "alias" and out["id"] == "chatcmpl-msg_test"
    choice = out["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Hello", "refusal": None}
    assert choice["finish_reason"] == "stop"
    assert out["usage"] == {
        "prompt_tokens": 115,
        "completion_tokens": 7,
        "total_tokens": 122,
        "prompt_tokens_details": {
            "cached_tokens": 100,
            "cache_write_tokens": 5,
            "cache_creation_input_tokens": 5,
        },
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def test_response_tool_calls_and_reasoning() -> None:
    raw = anthropic_json(
        [("thinking", "let me see"), ("tool", "w", {"city": "Paris"}, "toolu_1"), ("tool", "x", {})]
    )
    msg = json.loads(anthropic.translate_response(raw, model="m"))["choices"][0]
    assert msg["finish_reason"] == "tool_calls"
    m = msg["message"]
    assert m["content"] is None and m["reasoning_content"] == "let me see"
    assert [
        (t["id"], t["function"]["name"], json.loads(t["function"]["arguments"])) for t in m["tool_calls"]
    ] == [
        ("toolu_1", "w", {"city": "Paris"}),
        ("toolu_000000000000000000000002", "x", {}),
    ]


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("something_new", "stop"),
    ],
)
def test_finish_reasons(stop: str, finish: str) -> None:
    out = json.loads(
        anthropic.translate_response(anthropic_json([("text", "x")], stop_reason=stop), model="m")
    )
    assert out["choices"][0]["finish_reason"] == finish
    acc = accumulate(_stream(anthropic_sse([("text", "x")], stop_reason=stop)))
    assert acc.c0.finish_reason == finish


def test_response_skips_server_tools_and_redacted_thinking() -> None:
    body = {
        "id": "msg_1",
        "content": [
            {"type": "redacted_thinking", "data": "xx"},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"q": "a"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
            {"type": "text", "text": "answer", "citations": [{"type": "x"}]},
        ],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 1, "output_tokens": 2},
    }
    m = json.loads(anthropic.translate_response(json.dumps(body).encode(), model="m"))["choices"][0][
        "message"
    ]
    assert m["content"] == "answer" and "tool_calls" not in m
    assert m["thinking_blocks"] == [{"type": "redacted_thinking", "data": "xx"}]


# -- streams ------------------------------------------------------------------------


def _stream(raw: bytes, include_usage: bool = True, step: int | None = None) -> bytes:
    t = anthropic.StreamTranslator(model="alias", include_usage=include_usage)
    if step is None:
        return t.feed(raw) + t.close()
    out = b"".join(t.feed(raw[i : i + step]) for i in range(0, len(raw), step))
    return out + t.close()


def test_stream_text() -> None:
    raw = anthropic_sse([("text", "Hello world")], output_tokens=3)
    out = _stream(raw)
    evs = events(out)
    assert evs[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert evs[0]["id"] == "chatcmpl-msg_test" and evs[0]["model"] == "alias"
    assert evs[-1] == "[DONE]"
    acc = accumulate(out)
    assert acc.c0.text == "Hello world" and acc.c0.finish_reason == "stop"
    assert acc.usage["prompt_tokens"] == 10 and acc.usage["completion_tokens"] == 3
    assert evs[-3]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    # every non-usage chunk has usage: null when include_usage
    assert all(e["usage"] is None for e in evs[:-2])


def test_stream_without_include_usage() -> None:
    evs = events(_stream(anthropic_sse([("text", "hi")]), include_usage=False))
    assert all("usage" not in e for e in evs[:-1]) and all(e["choices"] for e in evs[:-1])


def test_stream_tool_calls_unbuffered() -> None:
    script = [
        ("text", "calling"),
        ("tool", "w", {"city": "Paris"}, "toolu_A"),
        ("tool", "noargs", {}, "toolu_B"),
    ]
    raw = anthropic_sse(script, piece=3)
    t = anthropic.StreamTranslator(model="m", include_usage=False)
    out = b""
    sent_args_before_stop = False
    for block in raw.split(b"\n\n"):
        got = t.feed(block + b"\n\n")
        out += got
        if (
            b"content_block_delta" in block
            and b"input_json_delta" in block
            and b'"partial_json":""' not in block
        ):
            assert b'"arguments"' in got, "each input_json_delta is forwarded immediately"
            sent_args_before_stop = True
    out += t.close()
    assert sent_args_before_stop
    acc = accumulate(out)
    assert acc.tool_calls() == [("w", {"city": "Paris"}), ("noargs", {})]
    assert [tc["id"] for tc in acc.c0.tools.values()] == ["toolu_A", "toolu_B"]
    assert acc.c0.finish_reason == "tool_calls" and acc.c0.text == "calling"
    start = next(e for e in events(out) if e["choices"][0]["delta"].get("tool_calls"))
    assert start["choices"][0]["delta"]["tool_calls"][0] == {
        "index": 0,
        "id": "toolu_A",
        "type": "function",
        "function": {"name": "w", "arguments": ""},
    }


def test_stream_thinking_is_reasoning_content() -> None:
    acc = accumulate(_stream(anthropic_sse([("thinking", "step by step"), ("text", "42")])))
    assert acc.c0.reasoning == "step by step" and acc.c0.text == "42"


def test_stream_error_event() -> None:
    raw = anthropic_sse([("text", "partial")], end=False) + anthropic_error_event()
    t = anthropic.StreamTranslator(model="m", include_usage=True)
    out = t.feed(raw)
    assert t.finished and t.error is not None
    evs = events(out)
    assert evs[-1] == {
        "error": {"message": "Overloaded", "type": "overloaded", "param": None, "code": "overloaded_error"}
    }
    assert "[DONE]" not in evs
    assert t.feed(b"event: message_stop\ndata: {}\n\n") == b"" and t.close() == b""


def test_stream_truncated_close() -> None:
    t = anthropic.StreamTranslator(model="m", include_usage=True)
    out = t.feed(anthropic_sse([("text", "cut")], end=False))
    assert b'finish_reason":"stop' not in out
    out += t.close()
    acc = accumulate(out)
    assert acc.done and acc.c0.finish_reason == "stop" and acc.c0.text == "cut"
    assert not t.complete and t.finished


def test_stream_usage_tracking_and_cache() -> None:
    raw = anthropic_sse(
        [("text", "x")],
        input_usage={"input_tokens": 3, "cache_read_input_tokens": 50, "cache_creation_input_tokens": 2},
        output_tokens=9,
    )
    t = anthropic.StreamTranslator(model="m", include_usage=False)
    t.feed(raw)
    assert t.finished and t.complete
    assert (t.usage.prompt_tokens, t.usage.completion_tokens, t.usage.cached_tokens) == (55, 9, 50)


def test_stream_ignores_unknown_and_skipped_blocks() -> None:
    raw = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m1","usage":{"input_tokens":1}}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"server_tool_use","id":"s","name":"code","input":{}}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\\"a\\":1}"}}\n\n'
        b'event: brand_new\ndata: {"type":"brand_new","index":"weird"}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":1,"content_block":{"type":"redacted_thinking","data":"zz"}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":2,"delta":{"type":"citations_delta","citation":{}}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":4}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    acc = accumulate(_stream(raw))
    assert acc.c0.tools == {} and acc.c0.text == "" and acc.c0.finish_reason == "stop" and acc.done


# -- errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "err_type", "client_status", "openai_type"),
    [
        (529, "overloaded_error", 503, "overloaded"),
        (429, "rate_limit_error", 429, "rate_limit_error"),
        (400, "invalid_request_error", 400, "invalid_request_error"),
        (401, "authentication_error", 401, "authentication_error"),
        (403, "permission_error", 403, "permission_error"),
        (404, "not_found_error", 404, "not_found_error"),
        (500, "api_error", 500, "server_error"),
    ],
)
def test_translate_error(status: int, err_type: str, client_status: int, openai_type: str) -> None:
    got_status, body = anthropic.translate_error(status, anthropic_error(err_type, "boom"))
    assert got_status == client_status
    assert json.loads(body) == {
        "error": {"message": "boom", "type": openai_type, "param": None, "code": err_type}
    }


def test_translate_error_garbage_and_secrets() -> None:
    status, body = anthropic.translate_error(529, b"<html>bad gateway</html>")
    assert status == 503 and json.loads(body)["error"]["type"] == "overloaded"
    status, body = anthropic.translate_error(502, b"")
    assert status == 502 and json.loads(body)["error"]["type"] == "server_error"
    _, body = anthropic.translate_error(
        401, anthropic_error("authentication_error", "bad key sk-ant-api03-abcdefghijkl")
    )
    assert b"abcdefghijkl" not in body
