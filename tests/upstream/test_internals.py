"""The private internals of h11 and httpcore that fastgw.upstream relies on still have their shape.

``fastgw.upstream.connection`` subclasses httpcore's HTTP/1.1 connection and uses its
private state; ``fastgw.upstream.chunked`` swaps h11's body reader; both use h11's
prevalidated ``Headers``. pyproject bounds both packages to the tested minor versions;
raising a bound is a deliberate act: run this test against the new version first. Each
failure says which internal moved and where fastgw uses it.
"""

from __future__ import annotations

import importlib.metadata

import h11
import httpcore
import pytest

from fastgw.upstream import chunked

WHERE = "(fastgw/upstream/{}; check the upgrade before raising the bound in pyproject.toml)"


def need(condition: bool, what: str, module: str) -> None:
    if not condition:
        pytest.fail(f"{what} changed in h11 {h11.__version__} / httpcore {httpcore.__version__} "
                    + WHERE.format(module))


def test_h11_headers_internals() -> None:
    try:
        from h11._headers import Headers, normalize_and_validate
    except ImportError as exc:
        pytest.fail(f"h11._headers.Headers / normalize_and_validate moved: {exc} " + WHERE.format("connection.py"))
    headers = normalize_and_validate([(b"Host", b"x"), (b"Content-Length", b"1")])
    need(isinstance(headers, Headers), "normalize_and_validate() no longer returns h11._headers.Headers",
         "connection.py")
    items = getattr(headers, "_full_items", None)
    need(isinstance(items, list) and items[0] == (b"Host", b"host", b"x"),
         "h11 Headers._full_items (raw name, lowercased name, value)", "connection.py")
    rebuilt = Headers([*items])
    need(list(rebuilt) == [(b"host", b"x"), (b"content-length", b"1")], "h11 Headers(full items) constructor",
         "connection.py")
    # h11 accepts prebuilt Headers in a Request without re-validating them.
    request = h11.Request(method=b"GET", target=b"/", headers=rebuilt)
    need(request.headers is rebuilt or list(request.headers) == list(rebuilt), "h11.Request(headers=Headers)",
         "connection.py")


def test_h11_chunked_reader_internals() -> None:
    need(chunked.SUPPORTED, "h11._readers.ChunkedReader / h11._receivebuffer.ReceiveBuffer internals",
         "chunked.py")
    conn = h11.Connection(h11.CLIENT)
    need(hasattr(conn, "_reader"), "h11.Connection._reader", "chunked.py")
    conn.send(h11.Request(method=b"GET", target=b"/", headers=[(b"host", b"x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    need(type(conn.next_event()) is h11.Response, "h11 response parsing", "chunked.py")
    batch = chunked.install(conn)
    need(batch is not None, "chunked.install() could not swap h11's ChunkedReader", "chunked.py")
    event = conn.next_event()
    need(type(event) is h11.Data and bytes(event.data) == b"hello", "h11 Data through the swapped reader",
         "chunked.py")
    need(type(conn.next_event()) is h11.EndOfMessage, "h11 EndOfMessage through the swapped reader", "chunked.py")


def test_httpcore_http11_connection_internals() -> None:
    try:
        from httpcore._async.http11 import HTTPConnectionState
    except ImportError as exc:
        pytest.fail(f"httpcore._async.http11.HTTPConnectionState moved: {exc} " + WHERE.format("connection.py"))
    need({s.name for s in HTTPConnectionState} >= {"NEW", "ACTIVE", "IDLE", "CLOSED"},
         "httpcore HTTPConnectionState members", "connection.py")
    origin = httpcore.Origin(b"http", b"127.0.0.1", 80)
    conn = httpcore.AsyncHTTP11Connection(origin, stream=None, keepalive_expiry=5.0)  # type: ignore[arg-type]
    for attr in ("_state", "_h11_state", "_network_stream", "_request_count", "_expire_at", "_keepalive_expiry"):
        need(hasattr(conn, attr), f"httpcore AsyncHTTP11Connection.{attr}", "connection.py")
    need(conn._state is HTTPConnectionState.NEW, "httpcore AsyncHTTP11Connection._state starts NEW",
         "connection.py")
    need(isinstance(conn._h11_state, h11.Connection), "httpcore AsyncHTTP11Connection._h11_state is h11",
         "connection.py")
    for method in ("is_available", "has_expired", "is_idle", "is_closed"):
        need(callable(getattr(conn, method, None)), f"httpcore AsyncHTTP11Connection.{method}()",
             "connection.py / pool.py")


def test_installed_versions_are_within_the_declared_bounds() -> None:
    """pyproject's bounds and requirements.lock agree with what is installed (and tested)."""
    h11_version = importlib.metadata.version("h11")
    httpcore_version = importlib.metadata.version("httpcore")
    assert h11_version.startswith("0.16."), h11_version
    assert httpcore_version.startswith("1.0."), httpcore_version
