"""OpenAI chat/embeddings <-> Gemini: request mapping, responses, streams, errors."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest
from chat_stream import accumulate, events

from bench.wire import gemini_error, gemini_json, gemini_sse
from fastgw.translate import gemini
from fastgw.translate.errors import TranslationError


def build(body: dict[str, Any], **kw: Any) -> tuple[str, dict[str, Any]]:
    path, headers, raw = gemini.build_request(body, "gemini-up", **kw)
    assert headers == {"content-type": "application/json"}
    return path, json.loads(raw)


def user(text: str = "hi") -> dict[str, Any]:
    return {"role": "user", "content": text}


# -- requests ---------------------------------------------------------------------


def test_paths_and_minimal_body() -> None:
    path, out = build({"messages": [user()]})
    assert path == "/v1beta/models/gemini-up:generateContent"
    assert out == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    path, _ = build({"messages": [user()], "stream": True})
    assert path == "/v1beta/models/gemini-up:streamGenerateContent?alt=sse"
    path, _, _ = gemini.build_request({"messages": [user()]}, "models/g2")
    assert path == "/v1beta/models/g2:generateContent"


def test_system_multiturn_images() -> None:
    _, out = build(
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "developer", "content": "use french"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklG"}},
                        {"type": "image_url", "image_url": {"url": "https://x.test/a/cat.PNG?x=1"}},
                        {"type": "image_url", "image_url": {"url": "https://x.test/noext"}},
                        {"type": "input_audio", "input_audio": {"data": "AAA", "format": "mp3"}},
                    ],
                },
                {"role": "assistant", "content": "a cat"},
                user("ok"),
            ],
            "user": "someone",
        }
    )
    assert out["systemInstruction"] == {"parts": [{"text": "be brief"}, {"text": "use french"}]}
    assert out["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "look"},
                {"inlineData": {"mimeType": "image/webp", "data": "UklG"}},
                {"fileData": {"fileUri": "https://x.test/a/cat.PNG?x=1", "mimeType": "image/png"}},
                {"fileData": {"fileUri": "https://x.test/noext", "mimeType": "image/jpeg"}},
                {"inlineData": {"mimeType": "audio/mp3", "data": "AAA"}},
            ],
        },
        {"role": "model", "parts": [{"text": "a cat"}]},
        {"role": "user", "parts": [{"text": "ok"}]},
    ]
    assert "someone" not in json.dumps(out)


def test_tools_calls_and_function_responses() -> None:
    _, out = build(
        {
            "messages": [
                user("weather?"),
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"city":"Paris"}'},
                        },
                        {
                            "id": "call_2__ts__U0lH",
                            "type": "function",
                            "function": {"name": "t", "arguments": "{}"},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "call_2__ts__U0lH", "content": "12C"},
                user("thanks"),
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "w", "description": "weather", "parameters": {"type": "object"}},
                },
                {"type": "function", "function": {"name": "t"}},
            ],
            "tool_choice": {"type": "function", "function": {"name": "w"}},
            "parallel_tool_calls": False,
        }
    )
    assert out["tools"] == [
        {
            "functionDeclarations": [
                {"name": "w", "description": "weather", "parametersJsonSchema": {"type": "object"}},
                {"name": "t"},
            ]
        }
    ]
    assert out["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["w"]}}
    assert out["contents"][1] == {
        "role": "model",
        "parts": [
            {"functionCall": {"name": "w", "args": {"city": "Paris"}, "id": "call_1"}},
            {"functionCall": {"name": "t", "args": {}, "id": "call_2"}, "thoughtSignature": "U0lH"},
        ],
    }
    assert out["contents"][2] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "w", "response": {"output": "sunny"}, "id": "call_1"}},
            {"functionResponse": {"name": "t", "response": {"output": "12C"}, "id": "call_2"}},
        ],
    }
    assert out["contents"][3] == {"role": "user", "parts": [{"text": "thanks"}]}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("auto", {"mode": "AUTO"}), ("none", {"mode": "NONE"}), ("required", {"mode": "ANY"})],
)
def test_tool_choice(choice: str, expected: dict[str, Any]) -> None:
    tools = [{"type": "function", "function": {"name": "w"}}]
    _, out = build({"messages": [user()], "tools": tools, "tool_choice": choice})
    assert out["toolConfig"] == {"functionCallingConfig": expected}


def test_unknown_tool_call_id() -> None:
    with pytest.raises(TranslationError) as ei:
        build({"messages": [user(), {"role": "tool", "tool_call_id": "nope", "content": "x"}]})
    assert ei.value.param == "messages[1].tool_call_id"


def test_generation_config() -> None:
    _, out = build(
        {
            "messages": [user()],
            "stop": "END",
            "max_completion_tokens": 50,
            "temperature": 0.3,
            "top_p": 0.8,
            "top_k": 4,
            "n": 2,
            "presence_penalty": 0.5,
            "frequency_penalty": 0.25,
            "seed": 42,
            "logprobs": True,
            "top_logprobs": 3,
            "stream_options": {"include_usage": True},
            "store": False,
            "metadata": {"k": "v"},
        }
    )
    assert out["generationConfig"] == {
        "stopSequences": ["END"],
        "maxOutputTokens": 50,
        "temperature": 0.3,
        "topP": 0.8,
        "topK": 4,
        "presencePenalty": 0.5,
        "frequencyPenalty": 0.25,
        "seed": 42,
        "candidateCount": 2,
        "responseLogprobs": True,
        "logprobs": 3,
    }
    _, out = build({"messages": [user()]}, default_max_tokens=99)
    assert out["generationConfig"] == {"maxOutputTokens": 99}


def test_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}
    _, out = build(
        {
            "messages": [user()],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        }
    )
    assert out["generationConfig"] == {"responseMimeType": "application/json", "responseJsonSchema": schema}
    _, out = build({"messages": [user()], "response_format": {"type": "json_object"}})
    assert out["generationConfig"] == {"responseMimeType": "application/json"}


@pytest.mark.parametrize(
    ("effort", "budget"), [("minimal", 128), ("low", 1024), ("medium", 8192), ("high", 24576)]
)
def test_reasoning_effort(effort: str, budget: int) -> None:
    _, out = build({"messages": [user()], "reasoning_effort": effort})
    assert out["generationConfig"]["thinkingConfig"] == {"thinkingBudget": budget, "includeThoughts": True}
    _, out = build({"messages": [user()], "reasoning_effort": "none"})
    assert out["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 0}


@pytest.mark.parametrize(
    ("field", "value"), [("logit_bias", {"1": 1}), ("audio", {}), ("modalities", ["audio"])]
)
def test_unsupported(field: str, value: Any) -> None:
    with pytest.raises(TranslationError) as ei:
        build({"messages": [user()], field: value})
    assert ei.value.param == field and ei.value.status == 400
    build({"messages": [user()], field: value}, drop_unsupported=True)


def test_embeddings_request() -> None:
    path, headers, raw = gemini.build_embeddings_request(
        {"input": ["a", "b"], "dimensions": 8, "model": "alias"}, "text-embedding-004"
    )
    assert path == "/v1beta/models/text-embedding-004:batchEmbedContents"
    assert headers == {"content-type": "application/json"}
    assert json.loads(raw) == {
        "requests": [
            {
                "model": "models/text-embedding-004",
                "content": {"parts": [{"text": "a"}]},
                "outputDimensionality": 8,
            },
            {
                "model": "models/text-embedding-004",
                "content": {"parts": [{"text": "b"}]},
                "outputDimensionality": 8,
            },
        ]
    }
    _, _, raw = gemini.build_embeddings_request({"input": "one"}, "e")
    assert len(json.loads(raw)["requests"]) == 1
    with pytest.raises(TranslationError) as ei:
        gemini.build_embeddings_request({"input": [[1, 2, 3]]}, "e")
    assert ei.value.param == "input"


def test_embeddings_response_float_and_base64() -> None:
    body = json.dumps({"embeddings": [{"values": [0.5, -1.25]}, {"values": [3.0]}]}).encode()
    out = json.loads(gemini.translate_embeddings_response(body, model="alias", encoding_format="float"))
    assert out == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.5, -1.25]},
            {"object": "embedding", "index": 1, "embedding": [3.0]},
        ],
        "model": "alias",
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }
    out = json.loads(gemini.translate_embeddings_response(body, model="alias", encoding_format="base64"))
    vec = base64.b64decode(out["data"][0]["embedding"])
    assert vec == struct.pack("<2f", 0.5, -1.25)


# -- responses ----------------------------------------------------------------------


def test_response_text_reasoning_usage() -> None:
    raw = gemini_json([("thinking", "hmm"), ("text", "Hel"), ("text", "lo")], thoughts_tokens=4)
    out = json.loads(gemini.translate_response(raw, model="alias"))
    assert out["id"] == "chatcmpl-resp_test" and out["model"] == "alias"
    c = out["choices"][0]
    assert c["message"] == {
        "role": "assistant",
        "content": "Hello",
        "refusal": None,
        "reasoning_content": "hmm",
    }
    assert c["finish_reason"] == "stop"
    assert out["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 9,
        "total_tokens": 19,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 4},
    }


def test_response_function_calls() -> None:
    raw = gemini_json([("tool", "w", {"city": "Paris"}), ("tool", "t", {}, "fc-7")])
    c = json.loads(gemini.translate_response(raw, model="m"))["choices"][0]
    assert c["finish_reason"] == "tool_calls" and c["message"]["content"] is None
    calls = c["message"]["tool_calls"]
    assert calls[0]["id"].startswith("call_") and len(calls[0]["id"]) == 29
    assert calls[1]["id"] == "fc-7"
    assert [(t["function"]["name"], json.loads(t["function"]["arguments"])) for t in calls] == [
        ("w", {"city": "Paris"}),
        ("t", {}),
    ]


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("SPII", "content_filter"),
        ("OTHER", "stop"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
    ],
)
def test_finish_reasons(reason: str, finish: str) -> None:
    out = json.loads(gemini.translate_response(gemini_json([("text", "x")], finish_reason=reason), model="m"))
    assert out["choices"][0]["finish_reason"] == finish
    acc = accumulate(_stream(gemini_sse([("text", "x")], finish_reason=reason)))
    assert acc.c0.finish_reason == finish


def test_prompt_blocked() -> None:
    body = json.dumps(
        {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}}
    ).encode()
    out = json.loads(gemini.translate_response(body, model="m"))
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "", "refusal": None},
            "logprobs": None,
            "finish_reason": "content_filter",
        }
    ]
    acc = accumulate(_stream(b"data: " + body + b"\r\n\r\n"))
    assert acc.c0.finish_reason == "content_filter" and acc.c0.text == "" and acc.done


def test_multiple_candidates() -> None:
    body = {
        "candidates": [
            {"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP", "index": 0},
            {"content": {"parts": [{"text": "b"}]}, "finishReason": "MAX_TOKENS", "index": 1},
        ]
    }
    out = json.loads(gemini.translate_response(json.dumps(body).encode(), model="m"))
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in out["choices"]] == [
        (0, "a", "stop"),
        (1, "b", "length"),
    ]
    acc = accumulate(_stream(b"data: " + json.dumps(body).encode() + b"\r\n\r\n"))
    assert (acc.choices[0].text, acc.choices[1].text, acc.choices[1].finish_reason) == ("a", "b", "length")


# -- streams ------------------------------------------------------------------------


def _stream(raw: bytes, include_usage: bool = True, framing: str = "sse") -> bytes:
    t = gemini.StreamTranslator(model="alias", include_usage=include_usage, framing=framing)
    return t.feed(raw) + t.close()


def test_stream_text_and_usage() -> None:
    raw = gemini_sse(
        [("thinking", "think"), ("text", "Hello there, world")], thoughts_tokens=2, candidates_tokens=6
    )
    out = _stream(raw)
    evs = events(out)
    assert evs[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    acc = accumulate(out)
    assert (
        acc.c0.text == "Hello there, world" and acc.c0.reasoning == "think" and acc.c0.finish_reason == "stop"
    )
    assert (
        acc.usage["completion_tokens"] == 8
        and acc.usage["completion_tokens_details"]["reasoning_tokens"] == 2
    )
    assert acc.done


def test_stream_emits_each_chunk_immediately() -> None:
    raw = gemini_sse([("text", "abcdefghijklmnop")], piece=4)
    t = gemini.StreamTranslator(model="m", include_usage=False)
    parts = raw.split(b"\r\n\r\n")[:-1]
    for i, part in enumerate(parts):
        got = t.feed(part + b"\r\n\r\n")
        assert b'"content":"' + b"abcdefghijklmnop"[i * 4 : i * 4 + 4] + b'"' in got
    assert t.close().endswith(b"data: [DONE]\n\n")


def test_stream_function_calls() -> None:
    out = _stream(gemini_sse([("text", "sure"), ("tool", "w", {"city": "Paris"}), ("tool", "t", {}, "id-2")]))
    acc = accumulate(out)
    assert acc.tool_calls() == [("w", {"city": "Paris"}), ("t", {})]
    assert acc.c0.tools[1]["id"] == "id-2" and acc.c0.finish_reason == "tool_calls"
    start = [
        e
        for e in events(out)
        if isinstance(e, dict) and e["choices"] and e["choices"][0]["delta"].get("tool_calls")
    ]
    assert start[0]["choices"][0]["delta"]["tool_calls"][0]["function"] == {
        "name": "w",
        "arguments": '{"city":"Paris"}',
    }


def test_stream_error_payload() -> None:
    raw = (
        gemini_sse([("text", "partial")], finish_reason=None)
        + b"data: "
        + gemini_error(503, "UNAVAILABLE", "try later")
        + b"\r\n\r\n"
    )
    t = gemini.StreamTranslator(model="m", include_usage=True)
    evs = events(t.feed(raw))
    assert evs[-1] == {
        "error": {"message": "try later", "type": "service_unavailable", "param": None, "code": "UNAVAILABLE"}
    }
    assert t.finished and t.close() == b"" and t.feed(b"data: {}\r\n\r\n") == b""


def test_stream_without_finish_reason_closes_cleanly() -> None:
    t = gemini.StreamTranslator(model="m", include_usage=False)
    out = t.feed(gemini_sse([("text", "x")], finish_reason=None)) + t.close()
    assert accumulate(out).c0.finish_reason == "stop" and not t.complete


def test_json_array_framing() -> None:
    body = [json.loads(gemini_json([("text", "a")], finish_reason="STOP"))]
    raw = json.dumps(body, indent=2).replace("\n", "\r\n").encode()
    acc = accumulate(_stream(raw, framing="json-array"))
    assert acc.c0.text == "a" and acc.c0.finish_reason == "stop"
    with pytest.raises(ValueError):
        gemini.StreamTranslator(model="m", include_usage=False, framing="ndjson")


# -- errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "rpc", "client_status", "openai_type"),
    [
        (429, "RESOURCE_EXHAUSTED", 429, "rate_limit_error"),
        (400, "INVALID_ARGUMENT", 400, "invalid_request_error"),
        (404, "NOT_FOUND", 404, "not_found_error"),
        (403, "PERMISSION_DENIED", 403, "permission_error"),
        (401, "UNAUTHENTICATED", 401, "authentication_error"),
        (503, "UNAVAILABLE", 503, "service_unavailable"),
        (500, "INTERNAL", 500, "server_error"),
        (504, "DEADLINE_EXCEEDED", 504, "timeout"),
    ],
)
def test_translate_error(code: int, rpc: str, client_status: int, openai_type: str) -> None:
    status, body = gemini.translate_error(code, gemini_error(code, rpc, "nope"))
    assert status == client_status
    assert json.loads(body) == {"error": {"message": "nope", "type": openai_type, "param": None, "code": rpc}}


def test_translate_error_invalid_key_and_secrets() -> None:
    body = {
        "error": {
            "code": 400,
            "message": "API key not valid: AIzaSyA1234567890abcdefghijklmnopqrstu",
            "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
        }
    }
    status, out = gemini.translate_error(400, json.dumps(body).encode())
    assert status == 401 and b"AIzaSy" not in out
    status, out = gemini.translate_error(502, b"not json")
    assert status == 502 and json.loads(out)["error"]["type"] == "server_error"
    status, out = gemini.translate_error(429, json.dumps([body]).encode())
    assert status == 401
