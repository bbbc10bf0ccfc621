"""fastgw.upstream.connection: the response head as ASGI wants it."""

from __future__ import annotations


def test_response_headers_match_h11s_own_iteration() -> None:
    from h11._headers import normalize_and_validate

    from fastgw.upstream.connection import response_headers

    parsed = normalize_and_validate([(b"Content-Type", b"text/event-stream"), (b"X-Request-ID", b"r1"),
                                     (b"content-length", b"12")], _parsed=True)
    assert response_headers(parsed) == list(parsed) == [
        (b"content-type", b"text/event-stream"), (b"x-request-id", b"r1"), (b"content-length", b"12")]

    class Plain(list):  # no _full_items: h11's public iteration is used
        pass

    assert response_headers(Plain([(b"a", b"1")])) == [(b"a", b"1")]  # type: ignore[arg-type]
