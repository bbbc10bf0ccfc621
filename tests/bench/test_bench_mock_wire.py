"""The mock upstream's wire formats, knobs and HTTP handling."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from bench import payloads as P
from bench.gateway import MockProc
from bench.mock_upstream import Knobs


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with MockProc(Knobs(chunks=5, chunk_size=6)) as m:
        yield m.port


def exchange(port: int, raw: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        out = []
        while d := s.recv(65536):
            out.append(d)
    return b"".join(out)


def split_response(data: bytes) -> tuple[int, dict[str, str], bytes, bytes]:
    """(status, headers, decoded body, rest-after-this-response); raises if incomplete."""
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if "content-length" in headers:
        n = int(headers["content-length"])
        assert len(rest) >= n, "truncated body"
        return status, headers, rest[:n], rest[n:]
    assert headers.get("transfer-encoding") == "chunked"
    body, pos = [], 0
    while True:
        e = rest.find(b"\r\n", pos)
        assert e >= 0, "truncated chunked body"
        size = int(rest[pos:e], 16)
        pos = e + 2
        if size == 0:
            assert rest[pos : pos + 2] == b"\r\n"
            return status, headers, b"".join(body), rest[pos + 2 :]
        assert len(rest) >= pos + size + 2, "truncated chunk"
        body.append(rest[pos : pos + size])
        assert rest[pos + size : pos + size + 2] == b"\r\n"
        pos += size + 2


def call(port: int, spec_raw: bytes) -> tuple[int, dict[str, str], bytes]:
    st, h, body, _ = split_response(exchange(port, spec_raw))
    return st, h, body


def sse(body: bytes, sep: bytes = b"\n\n") -> list[tuple[str | None, str]]:
    """(event name, data) per SSE event; every frame must end with ``sep``."""
    assert body.endswith(sep)
    out = []
    for frame in body[: -len(sep)].split(sep):
        name, data = None, None
        for line in frame.decode().splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        assert data is not None, frame
        out.append((name, data))
    return out


H = "127.0.0.1"


def test_openai_chat_json(port: int) -> None:
    st, h, body = call(port, P.openai_request(H, "chat", "gpt-4o-mini", False).raw)
    assert st == 200 and h["content-type"] == "application/json"
    obj = json.loads(body)
    assert obj["object"] == "chat.completion" and obj["model"] == "gpt-4o-mini"
    assert obj["choices"][0]["message"]["role"] == "assistant"
    assert obj["choices"][0]["finish_reason"] == "stop"
    assert len(obj["choices"][0]["message"]["content"]) == 5 * 6
    assert obj["usage"]["total_tokens"] == obj["usage"]["prompt_tokens"] + obj["usage"]["completion_tokens"]


@pytest.mark.parametrize("usage", [False, True])
def test_openai_chat_stream(port: int, usage: bool) -> None:
    st, h, body = call(port, P.openai_request(H, "chat", "local/gpt-4o-mini", True, include_usage=usage).raw)
    assert st == 200 and h["content-type"].startswith("text/event-stream")
    events = sse(body)
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "local/gpt-4o-mini" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert len([x for x in content if x]) == 5
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"] == "stop"]
    assert len(finish) == 1
    with_usage = [c for c in chunks if c.get("usage")]
    if usage:
        assert len(with_usage) == 1 and with_usage[0] is chunks[-1] and chunks[-1]["choices"] == []
        assert with_usage[0]["usage"]["completion_tokens"] == 5
    else:
        assert with_usage == [] and all("usage" not in c for c in chunks)


RESPONSES_ORDER = ["response.created", "response.in_progress", "response.output_item.added",
                   "response.content_part.added"] + ["response.output_text.delta"] * 5 + [
                   "response.output_text.done", "response.content_part.done", "response.output_item.done",
                   "response.completed"]


def test_responses_stream_and_json(port: int) -> None:
    st, _, body = call(port, P.openai_request(H, "responses", "gpt-4o-mini", True).raw)
    assert st == 200
    events = sse(body)
    assert [n for n, _ in events] == RESPONSES_ORDER
    objs = [json.loads(d) for _, d in events]
    assert [o["type"] for o in objs] == RESPONSES_ORDER
    assert [o["sequence_number"] for o in objs] == list(range(len(objs)))
    text = "".join(o["delta"] for o in objs if o["type"] == "response.output_text.delta")
    assert objs[-1]["response"]["status"] == "completed"
    assert objs[-1]["response"]["output"][0]["content"][0]["text"] == text
    st, _, body = call(port, P.openai_request(H, "responses", "gpt-4o-mini", False).raw)
    obj = json.loads(body)
    assert obj["object"] == "response" and obj["output"][0]["content"][0]["text"] == text


def test_embeddings(port: int) -> None:
    st, _, body = call(port, P.openai_request(H, "embeddings", "text-embedding-3-small", False).raw)
    obj = json.loads(body)
    assert st == 200 and obj["object"] == "list" and len(obj["data"]) == 1 and len(obj["data"][0]["embedding"]) == 64
    raw = P.http_request("POST", H, "/v1/embeddings", b'{"model":"m","input":["a","b","c"]}',
                         {"x-mock-embedding-dims": "8"})
    obj = json.loads(call(port, raw)[2])
    assert [d["index"] for d in obj["data"]] == [0, 1, 2] and len(obj["data"][0]["embedding"]) == 8


def test_anthropic_stream_order_and_json(port: int) -> None:
    st, _, body = call(port, P.anthropic_request(H, "claude-3-5-haiku-latest", True).raw)
    assert st == 200
    events = sse(body)
    names = [n for n, _ in events]
    assert names == ["message_start", "content_block_start", "ping"] + ["content_block_delta"] * 5 + [
        "content_block_stop", "message_delta", "message_stop"]
    for n, d in events:
        assert json.loads(d)["type"] == n
    assert json.loads(events[-2][1])["usage"]["output_tokens"] == 5
    obj = json.loads(call(port, P.anthropic_request(H, "claude-3-5-haiku-latest", False).raw)[2])
    assert obj["type"] == "message" and obj["content"][0]["type"] == "text" and obj["stop_reason"] == "end_turn"


def test_gemini_stream_crlf_and_json(port: int) -> None:
    st, h, body = call(port, P.gemini_request(H, "gemini-2.0-flash", True).raw)
    assert st == 200 and h["content-type"] == "text/event-stream"
    events = sse(body, sep=b"\r\n\r\n")
    assert len(events) == 5 and all(n is None for n, _ in events)
    objs = [json.loads(d) for _, d in events]
    assert all(o["candidates"][0]["content"]["role"] == "model" for o in objs)
    assert [o["candidates"][0].get("finishReason") for o in objs] == [None] * 4 + ["STOP"]
    assert objs[-1]["usageMetadata"]["candidatesTokenCount"] == 5 and objs[0]["modelVersion"] == "gemini-2.0-flash"
    obj = json.loads(call(port, P.gemini_request(H, "gemini-2.0-flash", False).raw)[2])
    assert obj["candidates"][0]["finishReason"] == "STOP"


def test_error_knob_per_provider(port: int) -> None:
    err = {"x-mock-error-rate": "1", "x-mock-error-status": "429"}
    st, _, body = call(port, P.openai_request(H, "chat", "gpt-4o-mini", True, extra=err).raw)
    assert st == 429 and json.loads(body)["error"]["code"] == "rate_limit_exceeded"
    st, _, body = call(port, P.anthropic_request(H, "c", True, extra=err).raw)
    assert st == 429 and json.loads(body)["error"]["type"] == "rate_limit_error"
    st, _, body = call(port, P.gemini_request(H, "g", True, extra=err).raw)
    assert st == 429 and json.loads(body)["error"]["status"] == "RESOURCE_EXHAUSTED"
    half = {"x-mock-error-rate": "0.5"}
    statuses = [call(port, P.openai_request(H, "chat", "m", False, extra=half).raw)[0] for _ in range(200)]
    assert set(statuses) == {200, 500} and 40 < statuses.count(500) < 160


def test_drop_knob_closes_mid_stream(port: int) -> None:
    raw = P.openai_request(H, "chat", "gpt-4o-mini", True, extra={"x-mock-drop-after": "2"}).raw
    data = exchange(port, raw)  # returns once the server closed the connection
    assert data.startswith(b"HTTP/1.1 200")
    with pytest.raises(AssertionError):
        split_response(data)
    assert b"[DONE]" not in data and data.count(b'"content":"') == 3  # role chunk + 2 content chunks


def test_pipelined_requests_answered_in_order(port: int) -> None:
    a = P.openai_request(H, "chat", "model-a", True, extra={"x-mock-ttfb-ms": "30", "x-mock-interval-ms": "5"}).raw
    b = P.openai_request(H, "chat", "model-b", False).raw
    c = P.http_request("GET", H, "/health")
    data = exchange(port, a + b + c)
    st1, _, b1, rest = split_response(data)
    st2, _, b2, rest = split_response(rest)
    st3, _, b3, rest = split_response(rest)
    assert (st1, st2, st3) == (200, 200, 200) and rest == b""
    assert b"model-a" in b1 and b"[DONE]" in b1 and json.loads(b2)["model"] == "model-b" and b"ok" in b3


def test_chunked_request_body_and_404(port: int) -> None:
    body = P.chat_body("chunky", True)
    raw = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           + b"%x\r\n" % 10 + body[:10] + b"\r\n" + b"%x\r\n" % (len(body) - 10) + body[10:] + b"\r\n0\r\n\r\n")
    st, _, b = call(port, raw)
    assert st == 200 and b"chunky" in b and b"[DONE]" in b
    assert call(port, P.http_request("POST", H, "/nope", b"{}"))[0] == 404


def test_pacing_knobs(port: int) -> None:
    raw = P.openai_request(H, "chat", "m", True, extra={"x-mock-ttfb-ms": "80", "x-mock-interval-ms": "20",
                                                       "x-mock-chunks": "4"}).raw
    t = time.perf_counter()
    st, _, body = call(port, raw)
    took = time.perf_counter() - t
    assert st == 200 and len([e for e in sse(body) if '"content":"' in e[1]]) == 5  # role + 4
    assert 0.13 <= took < 1.0  # 80 ms + 3 x 20 ms (loop timers may fire ~1 ms early)


def test_official_sdks_parse_the_mock(port: int) -> None:
    openai = pytest.importorskip("openai")
    anthropic = pytest.importorskip("anthropic")
    oc = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test", max_retries=0)
    chunks = list(oc.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                             stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    events = list(oc.responses.create(model="gpt-4o-mini", input="hi", stream=True))
    assert events[-1].type == "response.completed"
    ac = anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key="sk-ant", max_retries=0)
    with ac.messages.stream(model="claude-3-5-haiku-latest", max_tokens=10,
                            messages=[{"role": "user", "content": "hi"}]) as s:
        msg = s.get_final_message()
    assert msg.stop_reason == "end_turn" and msg.usage.output_tokens == 5
