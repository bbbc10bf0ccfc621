"""Errors in the OpenAI envelope.

Every error fastgw produces reaches the client as::

    {"error": {"message": str, "type": str, "param": str | null, "code": str | null}}

with the HTTP status that matches it. Code raises :class:`GatewayError` anywhere on
the request path; the ASGI entry turns it into a response. Messages never contain
secrets: callers pass only what is safe to show.
"""

from __future__ import annotations

import msgspec


class ErrorBody(msgspec.Struct, omit_defaults=False):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody


_encoder = msgspec.json.Encoder()


class GatewayError(Exception):
    """An error to answer the client with, in the OpenAI envelope."""

    __slots__ = ("code", "headers", "message", "param", "status", "type")

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or []

    def body(self) -> bytes:
        return envelope(self.message, self.type, self.param, self.code)


def envelope(message: str, type: str, param: str | None = None, code: str | None = None) -> bytes:
    """Encode one OpenAI error envelope."""
    return _encoder.encode(ErrorEnvelope(ErrorBody(message, type, param, code)))


def sse_error_event(message: str, type: str, code: str | None = None) -> bytes:
    """One SSE ``data:`` event carrying an error envelope (mid-stream failures)."""
    return b"data: " + envelope(message, type, None, code) + b"\n\n"


class ErrorFormat:
    """How a front door writes its errors: a whole error answer, and the one SSE event that ends
    a stream whose upstream failed. This one is OpenAI's; a door speaking another API sets its
    own on the :class:`~fastgw.exchange.Exchange` (see :mod:`fastgw.routes`)."""

    def render(self, exc: GatewayError) -> tuple[int, bytes]:
        """(status, body) of an error answered before the response started."""
        return exc.status, exc.body()

    def event(self, message: str, type: str, code: str | None = None) -> bytes:
        """One SSE event carrying the error, for a stream that already started."""
        return sse_error_event(message, type, code)


OPENAI_ERRORS = ErrorFormat()


def bad_request(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, type="invalid_request_error", param=param, code=code)


def model_not_found(message: str) -> GatewayError:
    return GatewayError(404, message, type="invalid_request_error", param="model", code="model_not_found")


def upstream_unreachable(message: str) -> GatewayError:
    return GatewayError(502, message, type="upstream_error", code="upstream_unreachable")


def upstream_timeout(message: str) -> GatewayError:
    return GatewayError(504, message, type="timeout", code="upstream_timeout")


def overloaded(message: str) -> GatewayError:
    return GatewayError(503, message, type="overloaded", code="pool_exhausted")


# Which envelope ``type`` goes with an upstream status whose body is not an envelope.
STATUS_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "upstream_error",
    503: "overloaded",
    504: "timeout",
}


def type_for_status(status: int) -> str:
    return STATUS_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


class ResponseAborted(ConnectionAbortedError):
    """Raised to the server to abort a response already under way (its cause was logged already):
    closing the connection short of the announced body is the only signal left for the client."""

