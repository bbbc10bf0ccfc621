"""A finished request leaves no reference cycle: the worker frees it by reference counting,
so the cyclic collector (whose young-generation threshold the gateway raises at start-up)
has nothing of it to walk. Driven in-process (tests/asgi_harness.py) so the collector's
findings can be inspected."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator

import pytest
from asgi_harness import MASTER, Harness, provider_like

from fastgw.app import GC_YOUNG_THRESHOLD

AUTH = [(b"authorization", f"Bearer {MASTER}".encode()), (b"content-type", b"application/json")]


@pytest.fixture(scope="module")
def harness(upstream_server, tmp_path_factory) -> Iterator[Harness]:
    upstream_server.handler = provider_like
    h = Harness(upstream_server.url, str(tmp_path_factory.mktemp("gc") / "gc.db"))
    yield h
    h.close()


def _body(model: str, stream: bool) -> bytes:
    return json.dumps({"model": model, "stream": stream, "max_tokens": 8,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()


def test_requests_leave_no_cycles_for_the_collector(harness: Harness) -> None:
    assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD  # set by the gateway's start-up
    calls = [
        ("POST", b"/v1/chat/completions", AUTH, _body("gpt-4o-mini", False), 200),
        ("POST", b"/v1/chat/completions", AUTH, _body("gpt-4o-mini", True), 200),
        ("POST", b"/v1/chat/completions", AUTH, _body("claude-haiku-4-5", True), 200),  # translated
        ("POST", b"/v1/messages", AUTH, _body("claude-haiku-4-5", True), 200),  # byte relay
        ("POST", b"/v1/chat/completions", AUTH, b"{not json", 400),
        ("POST", b"/v1/chat/completions", [], _body("gpt-4o-mini", False), 401),
        ("POST", b"/v1/chat/completions", AUTH, _body("no-such-model", False), 404),
    ]
    for method, path, headers, body, status in calls:  # warm: lazily built tables are not garbage
        assert harness.call(method, path, headers, [body])[0] == status
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for method, path, headers, body, status in calls * 3:
            assert harness.call(method, path, headers, [body])[0] == status
        gc.collect()
        found = [type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith("fastgw")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert found == []
