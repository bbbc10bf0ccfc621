"""Gateway credentials: one strict parser for every route, and the master-key checks.

A client presents a key as ``Authorization: Bearer <key>`` (the scheme in any
case, then exactly one space, then a key with no white space) or as
``x-api-key: <key>`` (what Anthropic clients send). Nothing else is accepted:
``Bearer`` glued to the key, two spaces, another scheme or an empty key are
refused as a missing key, never half-read. When both headers are present,
``Authorization`` wins.

:class:`Authorizer` decides, per request, between the master key (compared in
constant time), a virtual key (``sk-fgw-...``, checked later against the model,
budget and limits) and, without a master key, an open gateway.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from fastgw.errors import GatewayError
from fastgw.exchange import header

_BEARER = b"bearer "
_WHITESPACE = frozenset(b" \t\r\n\x0b\x0c")


def parse_authorization(value: bytes | None) -> bytes | None:
    """The key in an ``Authorization: Bearer <key>`` value, or None when it is not exactly that."""
    if value is None or len(value) <= 7 or value[:7].lower() != _BEARER:
        return None
    key = value[7:]
    if any(c in _WHITESPACE for c in key):
        return None
    return key


def presented_key(scope: dict[str, Any]) -> bytes | None:
    """The key the request presents (``Authorization`` first, then ``x-api-key``), or None."""
    value = header(scope, b"authorization")
    if value is not None:
        return parse_authorization(value)
    key = header(scope, b"x-api-key")
    if not key or any(c in _WHITESPACE for c in key):
        return None
    return key


def invalid_key() -> GatewayError:
    return GatewayError(401, "Invalid or missing API key. Send 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
                        type="authentication_error", code="invalid_api_key")


class Authorizer:
    """The gateway's auth decision for one worker."""

    __slots__ = ("_is_virtual", "_master")

    def __init__(self, master_key: str | None, is_virtual: Callable[[str], bool]) -> None:
        self._master = master_key.encode() if master_key else None
        self._is_virtual = is_virtual

    @property
    def has_master(self) -> bool:
        return self._master is not None

    def authorize(self, scope: dict[str, Any]) -> str | None:
        """A virtual key to check against the model, or None (master key, or an open gateway).

        With a master key configured, a request must carry it or a virtual key. Without
        one, requests are open, but a virtual key that is presented is still checked
        (budgets, allowed models, limits). Raises 401 otherwise.
        """
        key = presented_key(scope)
        if key is not None:
            token = key.decode("latin-1")
            if self._is_virtual(token):
                return token
        master = self._master
        if master is None:
            return None
        if key is not None and hmac.compare_digest(key, master):
            return None
        raise invalid_key()

    def require_master(self, scope: dict[str, Any]) -> None:
        """The admin API: only the master key passes (403 when none is configured, else 401)."""
        master = self._master
        if master is None:
            raise GatewayError(403, "The admin API needs a master key (FASTGW_MASTER_KEY or master_key).",
                               type="permission_error", code="admin_disabled")
        key = presented_key(scope)
        if key is None or not hmac.compare_digest(key, master):
            raise GatewayError(401, "The admin API needs the master key: 'Authorization: Bearer <key>'.",
                               type="authentication_error", code="invalid_api_key")
