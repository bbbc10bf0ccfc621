"""The route table: which handler serves a request's path, with which methods.

An :class:`Endpoint` names its handler, the methods it allows (``None``: any),
whether it is a *model* endpoint: one that is authorized with the gateway's
credentials, admitted under the worker's in-flight bound, and accounted (usage,
metrics, request log) when it ends, and how its errors are written (the API's
error envelope; OpenAI's unless the door speaks another API). Adding a front
door is adding entries here.

Matching is one dict lookup for exact paths, then a short scan of prefixes in
the order they were added.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastgw.errors import OPENAI_ERRORS, ErrorFormat

if TYPE_CHECKING:
    from fastgw.app import Gateway
    from fastgw.exchange import Exchange

# handler(gateway, exchange, virtual key or None)
Handler = Callable[["Gateway", "Exchange", "str | None"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    handler: Handler
    methods: frozenset[str] | None = None
    admitted: bool = False
    errors: ErrorFormat = OPENAI_ERRORS

    def allows(self, method: str) -> bool:
        return self.methods is None or method in self.methods


class RouteTable:
    __slots__ = ("_exact", "_prefixes")

    def __init__(self) -> None:
        self._exact: dict[str, Endpoint] = {}
        self._prefixes: list[tuple[str, Endpoint]] = []

    def add(self, path: str, endpoint: Endpoint) -> None:
        """Serve ``path`` exactly, or every path under it when it ends with ``/``."""
        if path.endswith("/"):
            self._prefixes.append((path, endpoint))
        else:
            self._exact[path] = endpoint

    def match(self, path: str) -> Endpoint | None:
        endpoint = self._exact.get(path)
        if endpoint is not None:
            return endpoint
        for prefix, endpoint in self._prefixes:
            if path.startswith(prefix):
                return endpoint
        return None
