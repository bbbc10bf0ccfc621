"""Route policy: the ``routes:`` config section as Structs, and what each setting means.

A route is a model name clients send, served by several *targets* (deployments:
``provider/model``), with a balancing strategy, a retry policy, the statuses that
fall back to the next target, one deadline per request, sticky sessions and a
circuit breaker per target. Everything here is plain data checked once at load;
the runtime objects live in :mod:`fastgw.routing.targets`.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Strategy = Literal["ordered", "weighted", "least_inflight", "lowest_latency"]

# Upstream answers worth another attempt: the request may succeed elsewhere or later.
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)


class TargetConfig(msgspec.Struct, forbid_unknown_fields=True):
    """One deployment of a route: ``provider/model`` (or a model one provider lists)."""

    model: str
    weight: float = 1.0
    # Lower is tried first; the strategy balances within the best priority that is available.
    priority: int = 0


class RetryConfig(msgspec.Struct, forbid_unknown_fields=True):
    # Further attempts after the first one, retries and fallbacks together.
    attempts: int = 2
    on_status: list[int] = msgspec.field(default_factory=lambda: list(RETRY_STATUSES))
    backoff_base_ms: float = 100.0
    backoff_max_ms: float = 2000.0


class FallbackStatus(msgspec.Struct, forbid_unknown_fields=True):
    """A status (and optionally the error ``code`` of its envelope) that moves on to the next target."""

    status: int
    code: str | None = None


class StickyConfig(msgspec.Struct, forbid_unknown_fields=True):
    # Session identity: this header, else x-fastgw-conversation-id, else the body's ``user``.
    header: str = "x-session-id"
    use_conversation_id: bool = True
    use_user: bool = True


class BreakerConfig(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool = True
    # Open after this many failures in a row (0: off) ...
    consecutive_failures: int = 5
    # ... or when this share of the requests in the window failed (0: off), once
    # ``min_requests`` were seen in it.
    error_rate: float = 0.5
    window_s: float = 30.0
    min_requests: int = 10
    # Open for this long, then half-open: ``half_open_probes`` real requests probe it.
    cooldown_s: float = 30.0
    half_open_probes: int = 1


class RouteConfig(msgspec.Struct, forbid_unknown_fields=True):
    targets: list[str | TargetConfig]
    strategy: Strategy = "ordered"
    retry: RetryConfig = msgspec.field(default_factory=RetryConfig)
    fallback_on: list[int | FallbackStatus] = msgspec.field(
        default_factory=lambda: [404, FallbackStatus(400, "context_length_exceeded")])
    # Bounds every attempt of one request (until an answer is accepted), backoff included.
    deadline_s: float = 60.0
    sticky: StickyConfig | None = None
    breaker: BreakerConfig = msgspec.field(default_factory=BreakerConfig)

    def problem(self) -> str | None:
        """``key: what is wrong`` for a value a type cannot express, else None."""
        if not self.targets:
            return "targets: expected at least one target"
        for i, t in enumerate(self.targets):
            model = t if isinstance(t, str) else t.model
            if not model:
                return f"targets[{i}]: expected provider/model"
            if isinstance(t, TargetConfig) and t.weight < 0:
                return f"targets[{i}].weight: expected a number >= 0"
        if self.strategy == "weighted" and not any(
                (1.0 if isinstance(t, str) else t.weight) > 0 for t in self.targets):
            return "targets: a weighted route needs a target with weight > 0"
        r = self.retry
        if r.attempts < 0:
            return "retry.attempts: expected a number >= 0"
        if r.backoff_base_ms < 0 or r.backoff_max_ms < r.backoff_base_ms:
            return "retry.backoff_max_ms: expected backoff_max_ms >= backoff_base_ms >= 0"
        for i, status in enumerate(r.on_status):
            if not 400 <= status <= 599:
                return f"retry.on_status[{i}]: expected an HTTP error status, got {status}"
        for i, f in enumerate(self.fallback_on):
            status = f if isinstance(f, int) else f.status
            if not 400 <= status <= 599:
                return f"fallback_on[{i}]: expected an HTTP error status, got {status}"
        if self.deadline_s <= 0:
            return "deadline_s: expected a number > 0"
        b = self.breaker
        if b.consecutive_failures < 0 or not 0 <= b.error_rate <= 1:
            return "breaker: consecutive_failures >= 0 and 0 <= error_rate <= 1 expected"
        if b.window_s <= 0 or b.cooldown_s <= 0 or b.half_open_probes < 1 or b.min_requests < 1:
            return "breaker: window_s, cooldown_s > 0 and half_open_probes, min_requests >= 1 expected"
        return None

    def target_list(self) -> list[TargetConfig]:
        return [TargetConfig(t) if isinstance(t, str) else t for t in self.targets]
