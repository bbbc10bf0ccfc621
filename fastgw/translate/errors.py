"""Errors raised by the translators, and the OpenAI error envelope they produce.

Contract:

* :class:`TranslationError` is raised by ``build_request``-style functions when the
  client's OpenAI request asks for something the provider cannot honour (and the
  caller did not ask to drop such parameters), or when the request is malformed in a
  way the translator notices.  It carries everything needed for an OpenAI error
  response: ``status`` (HTTP status for the client), ``message``, ``type``, ``param``
  and ``code``.  :meth:`TranslationError.to_body` renders the envelope bytes.
* :func:`error_body` renders ``{"error": {"message", "type", "param", "code"}}`` --
  the shape of the OpenAI ``ErrorResponse`` schema (all four keys always present,
  ``param``/``code`` possibly null).
* :func:`scrub` removes things that look like credentials from provider-supplied
  messages before they are forwarded to clients.
"""

from __future__ import annotations

import re

import msgspec

__all__ = ["TranslationError", "error_body", "scrub"]

_encode = msgspec.json.Encoder().encode


class TranslationError(Exception):
    """A client request that cannot be translated for the chosen provider.

    ``status`` defaults to 400 and ``type`` to ``invalid_request_error``; ``param``
    names the offending OpenAI request field (dotted/indexed path, e.g. ``n`` or
    ``messages[2].content[0]``) and ``code`` is a short machine-readable reason
    (``unsupported_parameter``, ``unsupported_value``, ``invalid_value``...).
    """

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = "unsupported_parameter",
        status: int = 400,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status
        self.type = type

    def to_body(self) -> bytes:
        """The OpenAI error envelope for this error, as JSON bytes."""
        return error_body(self.message, self.type, self.param, self.code)

    def __repr__(self) -> str:
        return f"TranslationError({self.message!r}, param={self.param!r}, code={self.code!r}, status={self.status})"


def error_object(
    message: str, type: str, param: str | None = None, code: str | None = None
) -> dict[str, object]:
    """The inner ``error`` object of the OpenAI envelope (all four keys present)."""
    return {"message": message, "type": type, "param": param, "code": code}


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> bytes:
    """``{"error": {...}}`` as JSON bytes."""
    return _encode({"error": error_object(message, type, param, code)})


# Credential-looking substrings: Google API keys, Anthropic / OpenAI style keys,
# bearer tokens and key=... query parameters.
_SECRET_RES = (
    re.compile(r"AIza[0-9A-Za-z_\-]{20,}"),
    re.compile(r"sk-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{8,}"),
    re.compile(r"(?i)([?&](?:key|api_key|access_token)=)[^&\s\"']+"),
)


def scrub(message: str) -> str:
    """Replace anything that looks like a credential in ``message`` with ``[redacted]``."""
    for rx in _SECRET_RES:
        if rx.groups:
            message = rx.sub(lambda m: m.group(1) + "[redacted]", message)
        else:
            message = rx.sub("[redacted]", message)
    return message
