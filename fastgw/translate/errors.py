"""Translation-specific errors: what the translators raise, and provider error bodies in OpenAI terms.

Contract:

* :class:`TranslationError` is raised by ``build_request``-style functions when the
  client's OpenAI request asks for something the provider cannot honour (and the
  caller did not ask to drop such parameters), or when the request is malformed in a
  way the translator notices.  It carries everything needed for an OpenAI error
  response: ``status`` (HTTP status for the client), ``message``, ``type``, ``param``
  and ``code``.
* :func:`provider_error` builds the OpenAI error object for a provider's error
  (message scrubbed, ``param`` null); :func:`error_reply` turns a provider error body
  into (client status, OpenAI envelope bytes) with a provider's :data:`ErrorParser`.
  Envelope bytes always come from :func:`fastgw.errors.envelope`.
* :func:`scrub` removes things that look like credentials from provider-supplied
  messages before they are forwarded to clients.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec

from fastgw.errors import envelope

__all__ = ["ErrorParser", "TranslationError", "envelope_of", "error_reply", "provider_error", "scrub"]

_decode = msgspec.json.Decoder().decode

# (upstream HTTP status, decoded error body or None) -> (client status, OpenAI error object)
ErrorParser = Callable[[int, Any], tuple[int, dict[str, Any]]]


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
        return envelope(self.message, self.type, self.param, self.code)

    def __repr__(self) -> str:
        return f"TranslationError({self.message!r}, param={self.param!r}, code={self.code!r}, status={self.status})"


def provider_error(message: str, type: str, code: str | None) -> dict[str, Any]:
    """The OpenAI error object (all four keys) for a provider's error; ``message`` is scrubbed."""
    return {"message": scrub(message), "type": type, "param": None, "code": code}


def envelope_of(err: dict[str, Any]) -> bytes:
    """An error object built by :func:`provider_error`, wrapped in the OpenAI envelope."""
    return envelope(err["message"], err["type"], err["param"], err["code"])


def error_reply(status: int, data: bytes, parse: ErrorParser) -> tuple[int, bytes]:
    """A provider error body (any bytes) -> (status for the client, OpenAI envelope)."""
    try:
        payload = _decode(data) if data else None
    except msgspec.DecodeError:
        payload = None
    client_status, err = parse(status, payload)
    return client_status, envelope_of(err)


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
