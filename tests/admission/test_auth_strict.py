"""The one strict credential parser, in-process and on every kind of route through real HTTP.

``Authorization: <scheme> <key>``: the scheme ``Bearer`` in any case, exactly one space,
a key without white space. ``x-api-key: <key>`` alike. Anything else is a missing key:
the model routes, the passthrough, the model list and the admin API all refuse it the
same way (401 in the OpenAI envelope), and nothing of the presented value is echoed.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
from conftest import basic_config
from gateway import GatewayProcess

from fastgw.admission.auth import Authorizer, parse_authorization, presented_key

MASTER = "sk-master-strict-0123456789"

# Authorization values that must never pass, whatever the key inside.
REFUSED = [
    f"Bearer{MASTER}",            # glued to the scheme
    f"Bearer  {MASTER}",          # two spaces
    f"Bearer\t{MASTER}",          # a tab instead of the space
    f"Bearer \t{MASTER}",         # white space inside the key part
    f"Bearer {MASTER}\tx",        # a tab inside the key
    f"Bearer {MASTER} x",         # a space inside the key
    f"Basic {MASTER}",            # another scheme
    f"Token {MASTER}",
    f"Xearer {MASTER}",           # any seven characters used to pass as the scheme
    f"Bearer: {MASTER}",
    f"{MASTER}",                  # no scheme
    "Bearer ",                    # empty key
    "Bearer",
    "",
    f"Bearer {MASTER}x",          # a different key
    f"Bearer {MASTER[:-1]}",
]
ACCEPTED = [f"Bearer {MASTER}", f"bearer {MASTER}", f"BEARER {MASTER}", f"bEaReR {MASTER}"]


def scope(*headers: tuple[bytes, bytes]) -> dict[str, object]:
    return {"headers": list(headers)}


@pytest.mark.parametrize("value", REFUSED)
def test_parser_refuses_anything_but_one_scheme_one_space_one_key(value: str) -> None:
    parsed = parse_authorization(value.encode())
    assert parsed is None or parsed != MASTER.encode()
    auth = Authorizer(MASTER, lambda token: False)
    with pytest.raises(Exception) as info:
        auth.authorize(scope((b"authorization", value.encode())))
    assert getattr(info.value, "status", None) == 401
    with pytest.raises(Exception) as info:
        auth.require_master(scope((b"authorization", value.encode())))
    assert getattr(info.value, "status", None) == 401


@pytest.mark.parametrize("value", ACCEPTED)
def test_parser_accepts_the_scheme_in_any_case(value: str) -> None:
    assert parse_authorization(value.encode()) == MASTER.encode()
    auth = Authorizer(MASTER, lambda token: False)
    assert auth.authorize(scope((b"authorization", value.encode()))) is None
    auth.require_master(scope((b"authorization", value.encode())))


def test_x_api_key_is_strict_too_and_authorization_wins() -> None:
    assert presented_key(scope((b"x-api-key", MASTER.encode()))) == MASTER.encode()
    for bad in (b"", b" " + MASTER.encode(), MASTER.encode() + b" x", b"a\tb"):
        assert presented_key(scope((b"x-api-key", bad))) is None
    # A malformed Authorization is not rescued by a good x-api-key: one credential, read one way.
    both = scope((b"authorization", f"Basic {MASTER}".encode()), (b"x-api-key", MASTER.encode()))
    assert presented_key(both) is None
    # The first Authorization header is the one read.
    two = scope((b"authorization", f"Bearer {MASTER}".encode()), (b"authorization", b"Bearer other"))
    assert presented_key(two) == MASTER.encode()


def test_virtual_keys_go_through_the_same_parser() -> None:
    virtual = "sk-fgw-abc"
    auth = Authorizer(MASTER, lambda token: token.startswith("sk-fgw-"))
    assert auth.authorize(scope((b"authorization", f"bearer {virtual}".encode()))) == virtual
    assert auth.authorize(scope((b"x-api-key", virtual.encode()))) == virtual
    with pytest.raises(Exception) as info:
        auth.authorize(scope((b"authorization", f"Bearer{virtual}".encode())))
    assert getattr(info.value, "status", None) == 401
    # Without a master key the gateway is open, but a malformed credential is not a virtual key.
    open_gw = Authorizer(None, lambda token: token.startswith("sk-fgw-"))
    assert open_gw.authorize(scope((b"authorization", f"Bearer  {virtual}".encode()))) is None


# -- through real HTTP, on every kind of route -------------------------------------------

ROUTES = [
    ("POST", "/v1/chat/completions", b'{"model":"gpt-4o-mini","messages":[]}'),
    ("POST", "/v1/embeddings", b'{"model":"gpt-4o-mini","input":"x"}'),
    ("GET", "/v1/models", b""),
    ("GET", "/p/local/models", b""),
    ("GET", "/admin/keys", b""),
]


@pytest.fixture(scope="module")
def gw(upstream_server) -> Iterator[GatewayProcess]:
    g = GatewayProcess(basic_config(upstream_server.url, f"master_key: {MASTER}\n"))
    yield g
    g.stop()


def raw(port: int, method: str, path: str, body: bytes, header_lines: list[bytes]) -> tuple[int, bytes]:
    """One request with header lines exactly as given (tabs, spaces and all)."""
    head = f"{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n".encode()
    head += b"".join(line + b"\r\n" for line in header_lines)
    if body:
        head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + b"\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_every_route_refuses_malformed_credentials(gw, upstream, method, path, body) -> None:
    for value in REFUSED:
        status, reply = raw(gw.port, method, path, body, [b"authorization: " + value.encode()])
        assert status == 401, (value, reply)
        error = json.loads(reply)["error"]
        assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
        assert MASTER not in reply.decode("latin-1")
    for line in (b"x-api-key: ", b"x-api-key: " + MASTER.encode() + b" x",
                 b"x-api-key: Bearer " + MASTER.encode()):
        assert raw(gw.port, method, path, body, [line])[0] == 401, line
    # A refused Authorization is not rescued by an x-api-key.
    lines = [b"authorization: Basic " + MASTER.encode(), b"x-api-key: " + MASTER.encode()]
    assert raw(gw.port, method, path, body, lines)[0] == 401
    assert not upstream.requests, "a refused request reached the upstream"


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_every_route_accepts_the_scheme_in_any_case_and_x_api_key(gw, upstream, method, path, body) -> None:
    for value in ACCEPTED:
        status, reply = raw(gw.port, method, path, body, [b"authorization: " + value.encode()])
        assert status == 200, (value, reply)
    assert raw(gw.port, method, path, body, [b"x-api-key: " + MASTER.encode()])[0] == 200
    assert MASTER not in gw.logs()
