"""Fuzzing the ASGI app in-process: whatever a client sends, the answer is a 2xx, or a 4xx
in the OpenAI error envelope -- never a 5xx, never a hang, never an exception out of the app.

A real :class:`fastgw.app.Gateway` (its own SQLite store, the built-in mock provider and an
OpenAI-compatible provider on the loopback test upstream) is driven with hand-made ASGI
scope/receive/send: arbitrary bodies (split into arbitrary pieces), JSON nested deeply,
huge numbers and strings, invalid UTF-8, duplicate keys, odd content types and methods,
long and repeated headers, CR/LF and control characters in model names and header values.
The number of inputs tried is printed at the end of the module (``-s`` shows it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from asgi_harness import MASTER, Harness, provider_like
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TRIED: dict[str, int] = {}


@pytest.fixture(scope="module")
def harness(upstream_server, tmp_path_factory) -> Iterator[Harness]:
    upstream_server.handler = provider_like
    h = Harness(upstream_server.url, str(tmp_path_factory.mktemp("fuzz") / "fuzz.db"))
    yield h
    h.close()
    print(f"\nfuzz (ASGI in-process): {sum(TRIED.values())} inputs tried {TRIED}")


def check(status: int, headers: list[tuple[bytes, bytes]], body: bytes, what: str, path: bytes = b"") -> None:
    """2xx, or 4xx in the door's envelope (OpenAI's; Anthropic's on /v1/messages)."""
    assert 200 <= status < 500, (status, body[:500], what)
    for name, value in headers:
        assert b"\r" not in value and b"\n" not in value, (name, value)
    ctype = dict(headers).get(b"content-type", b"")
    if status >= 400:
        doc = json.loads(body)
        if path.startswith(b"/v1/messages"):
            assert doc["type"] == "error" and {"type", "message"} <= set(doc["error"]), doc
        else:
            assert set(doc) == {"error"}, doc
            assert set(doc["error"]) == {"message", "type", "param", "code"}, doc
        assert isinstance(doc["error"]["message"], str) and doc["error"]["message"]
    if ctype.startswith(b"text/event-stream"):
        assert b'"error"' not in body or b"[DONE]" not in body
    for secret in (MASTER, "sk-fuzz-provider", "sk-fuzz-claude", "sk-fuzz-gemini"):
        assert secret.encode() not in body


# -- strategies ------------------------------------------------------------------------

AUTH = [(b"authorization", f"Bearer {MASTER}".encode())]
PATHS = [b"/v1/chat/completions", b"/v1/completions", b"/v1/embeddings", b"/v1/responses", b"/v1/messages",
         b"/v1/messages/count_tokens", b"/v1/models",
         b"/v1/models/gpt-4o-mini", b"/p/local/chat/completions", b"/p/mock/x", b"/admin/keys",
         b"/admin/logs?limit=abc", b"/admin/usage?group_by=nope", b"/health", b"/metrics", b"/nope"]
METHODS = ["POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "CONNECT", "FOO", "post"]
MODELS = ["claude-haiku-4-5", "gemini-2.5-flash", "gpt-4o-mini", "local/gpt-4o-mini", "fast", "mock-gpt", "mock-gpt-stream", "gpt-x", "mock/other",
          "nobody/x", "", "a" * 600, "gpt-4o-mini\r\nx-injected: 1", "mock-gpt\x00", "gpt\u202e", "💥"]

_leaf = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
         | st.text(max_size=20) | st.sampled_from([10**400, -(10**400), "\x00\r\n", "\ud800".encode(
             "utf-8", "surrogatepass").decode("latin-1")]))
json_values = st.recursive(_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                                     max_size=4), max_leaves=15)
bodies_obj = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(MODELS) | st.text(max_size=30) | json_values,
        "messages": st.just([{"role": "user", "content": "hi"}]) | json_values,
        "stream": st.booleans() | json_values,
        "stream_options": st.just({"include_usage": True}) | json_values,
        "max_tokens": st.integers() | json_values,
        "input": st.text(max_size=20) | json_values,
        "n": st.integers(-2, 3),
    },
)


@st.composite
def body_bytes(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["json", "json", "json", "binary", "deep", "dupkeys", "badutf8", "hugenum",
                                 "hugestr", "notobject"]))
    if kind == "binary":
        return draw(st.binary(max_size=300))
    if kind == "deep":
        depth = draw(st.integers(1, 60_000))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        inner = opener * depth + b"1" + closer * depth
        return b'{"model":"gpt-4o-mini","messages":' + inner + b"}"
    doc = draw(bodies_obj)
    try:
        raw = json.dumps(doc).encode()
    except (ValueError, UnicodeEncodeError):
        raw = b"{}"
    if kind == "dupkeys":
        model = draw(st.sampled_from(MODELS)).encode("utf-8", "replace")
        raw = b'{"model":' + json.dumps(model.decode()).encode() + b"," + raw[1:] if raw != b"{}" else raw
        raw = raw[:-1] + b',"model":"mock-gpt","stream":true,"stream":"x"}'
    elif kind == "badutf8":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"])) + raw[at:]
    elif kind == "hugenum":
        raw = b'{"model":"gpt-4o-mini","max_tokens":' + b"9" * draw(st.integers(20, 20_000)) + b"}"
    elif kind == "hugestr":
        raw = b'{"model":"' + b"m" * draw(st.integers(100, 300_000)) + b'"}'
    elif kind == "notobject":
        raw = draw(st.sampled_from([b"[]", b"null", b"1", b'"model"', b"", b" ", b"{", b"}"]))
    return raw


def split(raw: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(raw) + 1) for c in cuts})
    pieces, prev = [], 0
    for p in points:
        pieces.append(raw[prev:p])
        prev = p
    pieces.append(raw[prev:])
    return pieces


header_values = (st.binary(max_size=40) | st.sampled_from([b"a" * 20_000, b"x\r\ny: z", b"\x00", b"\t", b""])
                 | st.text(max_size=20).map(lambda t: t.encode("utf-8")))
header_names = st.sampled_from([b"content-type", b"content-length", b"authorization", b"x-api-key",
                                b"transfer-encoding", b"accept", b"x-fastgw-conversation-id", b"host",
                                b"x-custom", b"cookie", b"expect"]) | st.binary(min_size=1, max_size=10)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=body_bytes(), path=st.sampled_from(PATHS[:6] + PATHS[8:9]),
       ctype=st.sampled_from([b"application/json", b"text/plain", b"", b"application/x-www-form-urlencoded",
                              b"multipart/form-data; boundary=x", b"application/json; charset=latin-1"]),
       cuts=st.lists(st.integers(0, 10**6), max_size=4))
def test_model_routes_answer_any_body_with_2xx_or_an_enveloped_4xx(harness, body, path, ctype, cuts):
    TRIED["bodies"] = TRIED.get("bodies", 0) + 1
    headers = [*AUTH, (b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    status, out_headers, out = harness.call("POST", path, headers, split(body, cuts))
    check(status, out_headers, out, repr(body[:200]), path)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(METHODS), path=st.sampled_from(PATHS), body=body_bytes(),
       extra=st.lists(st.tuples(header_names, header_values), max_size=6),
       auth=st.sampled_from([AUTH, [], [(b"authorization", b"Bearer \r\n" + MASTER.encode())],
                             [(b"x-api-key", MASTER.encode())], AUTH + AUTH]))
def test_any_method_path_and_headers_answer_2xx_or_an_enveloped_4xx(harness, method, path, body, extra, auth):
    TRIED["requests"] = TRIED.get("requests", 0) + 1
    headers = [*auth, *[(name.lower(), value) for name, value in extra]]
    status, out_headers, out = harness.call(method, path, headers, [body])
    if status in (401, 403):
        return
    check(status, out_headers, out, f"{method} {path!r} {extra!r}", path)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(model=st.sampled_from(MODELS) | st.text(max_size=40), stream=st.booleans(),
       endpoint=st.sampled_from(PATHS[:5]))
def test_model_names_with_control_characters(harness, model, stream, endpoint):
    TRIED["models"] = TRIED.get("models", 0) + 1
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "input": "x",
                       "stream": stream}).encode()
    status, out_headers, out = harness.call("POST", endpoint, [*AUTH, (b"content-type", b"application/json")],
                                            [body])
    check(status, out_headers, out, repr(model), endpoint)
    if status == 404 and not endpoint.startswith(b"/v1/messages"):
        assert json.loads(out)["error"]["code"] in ("model_not_found", "unknown_route")
