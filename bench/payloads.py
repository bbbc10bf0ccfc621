"""Pre-encoded client requests (OpenAI chat/responses/embeddings, Anthropic, Gemini)."""

from __future__ import annotations

import json
from typing import Any

from bench.loadgen import RequestSpec

PROMPT = "Say hello and count to twenty, one word per token."


def http_request(method: str, host: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "User-Agent: fastgw-bench/0.1", "Accept: */*"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _j(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def chat_body(model: str, stream: bool, include_usage: bool = False) -> bytes:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 64}
    if stream:
        body["stream"] = True
        if include_usage:
            body["stream_options"] = {"include_usage": True}
    return _j(body)


def responses_body(model: str, stream: bool) -> bytes:
    body: dict[str, Any] = {"model": model, "input": PROMPT, "max_output_tokens": 64}
    if stream:
        body["stream"] = True
    return _j(body)


def embeddings_body(model: str) -> bytes:
    return _j({"model": model, "input": PROMPT})


def anthropic_body(model: str, stream: bool) -> bytes:
    body: dict[str, Any] = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": PROMPT}]}
    if stream:
        body["stream"] = True
    return _j(body)


def gemini_body() -> bytes:
    return _j({"contents": [{"role": "user", "parts": [{"text": PROMPT}]}], "generationConfig": {"maxOutputTokens": 64}})


ENDPOINTS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "embeddings": "/v1/embeddings"}


# The Authorization the load sends (the mock ignores it); a virtual key with ``--controls all``.
BENCH_KEY = "sk-bench"


def openai_request(host: str, endpoint: str, model: str, stream: bool, key: str | None = None,
                   extra: dict[str, str] | None = None, base_path: str = "", include_usage: bool = False) -> RequestSpec:
    """A request to an OpenAI-compatible server (the gateway, or the mock directly)."""
    if endpoint == "chat":
        body = chat_body(model, stream, include_usage)
    elif endpoint == "responses":
        body = responses_body(model, stream)
    elif endpoint == "embeddings":
        body, stream = embeddings_body(model), False
    else:
        raise ValueError(f"unknown endpoint {endpoint!r}")
    headers = dict(extra or {})
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return RequestSpec(http_request("POST", host, base_path + ENDPOINTS[endpoint], body, headers), stream)


def anthropic_request(host: str, model: str, stream: bool, key: str = "sk-ant-test",
                      extra: dict[str, str] | None = None) -> RequestSpec:
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01", **(extra or {})}
    return RequestSpec(http_request("POST", host, "/v1/messages", anthropic_body(model, stream), headers), stream)


def gemini_request(host: str, model: str, stream: bool, key: str = "gm-test",
                   extra: dict[str, str] | None = None) -> RequestSpec:
    path = f"/v1beta/models/{model}:" + ("streamGenerateContent?alt=sse" if stream else "generateContent")
    headers = {"x-goog-api-key": key, **(extra or {})}
    return RequestSpec(http_request("POST", host, path, gemini_body(), headers), stream)
