"""One client exchange: the ASGI callables plus what the gateway learned on the way.

An :class:`Exchange` travels down the request's journey (app -> routing ->
fastpath / translate / mock). Whoever starts the response sets ``started`` so
the entry point knows whether an error can still be answered with a status or
must end the stream instead.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastgw.errors import OPENAI_ERRORS, ErrorFormat

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


# OpenAI's rate-limit headers: when fastgw's own limits apply, its values replace the upstream's.
RATE_LIMIT_HEADERS = frozenset(f"x-ratelimit-{what}-{unit}".encode() for what in ("limit", "remaining", "reset")
                               for unit in ("requests", "tokens"))

# The attempt log's outcome for a target skipped because a model/provider limit was full (the
# refusal's code), or because the limits could not be checked and fail closed.
LIMIT_SKIPS = frozenset([f"{scope}_{name}_limit" for scope in ("model", "provider")
                         for name in ("rpm", "tpm", "concurrency")] + ["limits_unavailable"])

_PREFIX = "fgw-" + os.urandom(5).hex()
_counter = itertools.count(1)


def _reseed() -> None:
    # Workers are forked: each needs its own prefix.
    global _PREFIX, _counter
    _PREFIX = "fgw-" + os.urandom(5).hex()
    _counter = itertools.count(1)


os.register_at_fork(after_in_child=_reseed)


def new_request_id() -> str:
    """Unique per gateway: a random per-process prefix and a counter (no syscall per request)."""
    return f"{_PREFIX}{next(_counter):08x}"


def header(scope: dict[str, Any], name: bytes) -> bytes | None:
    """The first value of request header ``name`` (lowercase) in an ASGI scope."""
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


class Exchange:
    __slots__ = (
        "attempt_log",
        "attempts",
        "body",
        "dropped",
        "error_type",
        "errors",
        "held",
        "key",
        "model",
        "path_taken",
        "provider",
        "provider_type",
        "receive",
        "request_id",
        "scope",
        "send",
        "started",
        "status",
        "stream",
        "t_first",
        "t_start",
        "tap",
        "ticket",
        "upstream",
        "upstream_model",
        "upstream_wait",
        "usage",
        "usage_path",
    )

    def __init__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.request_id = new_request_id()
        self.started = False
        self.status = 0
        self.provider = ""
        self.provider_type = ""
        self.path_taken = ""
        self.t_start = time.perf_counter()
        self.t_first = 0.0
        # Seconds spent waiting on the upstream (excluded from the gateway's overhead).
        self.upstream_wait = 0.0
        self.upstream: Any = None  # the UpstreamResponse, for its total wait
        self.key: Any = None  # the virtual key record, when one was used
        self.model = ""  # what the client asked for
        self.upstream_model = ""
        self.stream = False
        self.tap: Any = None  # the usage tap the relay fed
        self.usage: Any = None  # usage found by a translator or the mock
        self.usage_path = ""
        self.error_type: str | None = None
        self.body: bytes | None = None  # the request body, kept only for the audit log
        self.errors: ErrorFormat = OPENAI_ERRORS  # how this door writes errors
        # Request fields a translation dropped (they only steer the original provider):
        # named in the x-fastgw-dropped-params response header.
        self.dropped: list[str] | None = None
        self.attempts = 0  # upstream attempts made by the attempt loop (0: one plain attempt)
        self.attempt_log: list[str] | None = None  # "provider/model:outcome" per attempt (attempt loop)
        self.ticket: Any = None  # the admission ticket (limits, budget reservation), when one applies
        self.held: Any = None  # the ticket of the target being tried, when it has model/provider limits

    def gateway_headers(self) -> list[tuple[bytes, bytes]]:
        """Headers fastgw adds to every answer it relays."""
        overhead = time.perf_counter() - self.t_start - self.upstream_wait
        headers = [(b"x-fastgw-request-id", self.request_id.encode()),
                   (b"x-fastgw-overhead-ms", f"{overhead * 1000:.3f}".encode())]
        if self.provider:
            headers.append((b"x-fastgw-provider", self.provider.encode()))
            model = self.upstream_model
            # The name may come from the client ("provider/<anything>"): only a clean one is echoed.
            if model and model.isascii() and model.isprintable():
                headers.append((b"x-fastgw-model", model.encode()))
            headers.append((b"x-fastgw-attempts", self.attempts_header() if self.attempt_log is not None
                            else b"1"))
        if self.path_taken:
            headers.append((b"x-fastgw-path", self.path_taken.encode()))
        if self.dropped:
            headers.append((b"x-fastgw-dropped-params", ",".join(self.dropped).encode()))
        return headers

    def attempts_header(self) -> bytes:
        """``x-fastgw-attempts`` after the attempt loop: the upstream attempts made, then, comma
        separated, each target skipped because its limit was full, as the request log writes it
        (``1, a/m:provider_rpm_limit``)."""
        value = str(self.attempts).encode()
        for entry in self.attempt_log or ():
            # A name from the client ("provider/<anything>") is only echoed when it is clean.
            if entry.rpartition(":")[2] in LIMIT_SKIPS and entry.isascii() and entry.isprintable():
                value += b", " + entry.encode()
        return value

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        ticket = self.ticket
        if ticket is not None and ticket.headers:
            # The limits' own headers replace any the upstream sent (a copy only when it sent some).
            for name, _ in headers:
                if name in RATE_LIMIT_HEADERS:
                    headers = [h for h in headers if h[0] not in RATE_LIMIT_HEADERS]
                    break
            headers = headers + ticket.headers
        self.status = status
        self.started = True
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def respond(self, status: int, body: bytes, content_type: bytes = b"application/json",
                      extra: list[tuple[bytes, bytes]] | None = None) -> None:
        """A complete response in one go."""
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        headers += self.gateway_headers()
        if extra:
            headers += extra
        await self.start(status, headers)
        await self.send({"type": "http.response.body", "body": body, "more_body": False})


class ClientGone(ConnectionError):
    """The client disconnected (while its body was read, or while the gateway waited on the
    upstream); the exchange is abandoned and recorded as status 499."""
