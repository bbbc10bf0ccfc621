"""The worker's bound on requests in flight: past it, answer 503 at once, never queue."""

from __future__ import annotations

from fastgw.errors import GatewayError


class InflightLimit:
    """Counts admitted requests; :meth:`enter` refuses past ``limit`` (the caller must :meth:`leave`)."""

    __slots__ = ("count", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def enter(self) -> None:
        if self.count >= self.limit:
            raise GatewayError(503, "The gateway is at its limit of concurrent requests; retry shortly.",
                               type="overloaded", code="gateway_overloaded", headers=[(b"retry-after", b"1")])
        self.count += 1

    def leave(self) -> None:
        self.count -= 1
