"""Helpers shared by the limits tests: keys over the admin API, bursts of requests, counting."""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gateway import GatewayProcess
from rawhttp import RawResponse, post, request
from upstream_server import Received, Reply, json_reply, sse_reply

MASTER = "sk-master-limits-0123456789"
ADMIN = {"authorization": f"Bearer {MASTER}"}


def usage_json(prompt: int, completion: int) -> bytes:
    return json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion}}).encode()


def usage_stream(prompt: int, completion: int) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
             "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": None}]}
    usage = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini", "choices": [],
             "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                       "total_tokens": prompt + completion}}
    return (b"data: " + json.dumps(chunk).encode() + b"\n\n" + b"data: " + json.dumps(usage).encode()
            + b"\n\ndata: [DONE]\n\n")


def provider_with_usage(prompt: int, completion: int, delay: float = 0.0):  # type: ignore[no-untyped-def]
    """An upstream answering JSON or SSE (when asked) that reports this usage."""

    def handler(r: Received) -> Reply:
        if b'"stream":true' in r.body.replace(b" ", b""):
            reply = sse_reply(usage_stream(prompt, completion))
        else:
            reply = json_reply(usage_json(prompt, completion))
        reply.delay_before_headers = delay
        return reply

    return handler


def create_key(gw: GatewayProcess, **fields: Any) -> dict[str, Any]:
    fields.setdefault("name", "k")
    resp = request(gw.url, "POST", "/admin/keys", fields, headers=ADMIN)
    assert resp.status == 201, resp.body
    return dict(resp.json())


def chat(url: str, key: str | None, **over: Any) -> RawResponse:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **over}
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return post(url, "/v1/chat/completions", body, headers=headers)


def burst(urls: list[str], key: str | None, n: int, workers: int = 50, **over: Any) -> list[RawResponse]:
    """``n`` requests at once, spread round-robin over ``urls``."""
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda i: chat(urls[i % len(urls)], key, **over), range(n)))


def statuses(responses: list[RawResponse]) -> Counter[int]:
    return Counter(r.status for r in responses)
