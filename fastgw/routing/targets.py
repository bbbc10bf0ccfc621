"""A resolved route: its deployments, their health and load, and the policy the attempt loop follows.

A :class:`Deployment` is one target of a route (``provider/model``) with what the
balancer and the loop need on the hot path: its circuit breaker, requests in
flight, a moving average of time to first byte, a not-before time set by a
``retry-after``, and the request body as it must be for it (computed at most once
per request). A :class:`RoutePlan` holds a route's deployments and policy;
:func:`fastgw.routing.balance.order` turns it into the order one request tries them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastgw.routing.breaker import Breaker
from fastgw.routing.policy import BreakerConfig, FallbackStatus, RetryConfig, RouteConfig, StickyConfig

if TYPE_CHECKING:
    from fastgw.routing.providers import Provider

# Weight of the newest sample in the time-to-first-byte moving average.
EWMA_ALPHA = 0.2


def json_string(value: str) -> bytes:
    return b'"' + value.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'


class Deployment:
    __slots__ = ("breaker", "inflight", "model", "name", "name_bytes", "not_before", "priority", "provider",
                 "rewrite",
                 "route", "ttfb", "upstream_model", "upstream_model_json", "weight")

    def __init__(self, route: str, provider: Provider, upstream_model: str, weight: float, priority: int,
                 breaker: BreakerConfig, client_model: str) -> None:
        self.route = route
        self.model = client_model  # the name clients send (translated answers carry it)
        self.provider = provider
        self.upstream_model = upstream_model
        self.upstream_model_json = json_string(upstream_model)
        # The client's model string must change on the way to this deployment.
        self.rewrite = upstream_model != client_model
        self.name = f"{provider.name}/{upstream_model}"
        self.name_bytes = self.name.encode()
        self.weight = weight
        self.priority = priority
        self.breaker = Breaker(breaker)
        self.inflight = 0
        self.ttfb = -1.0  # seconds, moving average; < 0 until the first sample
        self.not_before = 0.0  # loop time before which a retry-after asked us not to come back

    def available(self, now: float) -> bool:
        return self.not_before <= now and self.breaker.available(now)

    def observe_ttfb(self, seconds: float) -> None:
        self.ttfb = seconds if self.ttfb < 0 else self.ttfb + EWMA_ALPHA * (seconds - self.ttfb)

    def retry_in(self, now: float) -> float:
        return max(self.not_before - now, self.breaker.retry_in(now), 0.0)


class RoutePlan:
    """A route's deployments (priority order) and the policy of its attempt loop."""

    __slots__ = ("attempts", "backoff_base", "backoff_max", "deadline", "deployments", "fallback_codes",
                 "fallback_statuses", "name", "quota", "retry_statuses", "sticky", "sticky_header", "strategy",
                 "turn")

    def __init__(self, name: str, deployments: list[Deployment], *, strategy: str, retry: RetryConfig,
                 fallback_on: list[int | FallbackStatus], deadline: float | None,
                 sticky: StickyConfig | None) -> None:
        self.name = name
        self.deployments = sorted(deployments, key=lambda d: d.priority)
        self.strategy = strategy
        self.attempts = retry.attempts
        self.retry_statuses = frozenset(retry.on_status)
        self.backoff_base = retry.backoff_base_ms / 1000
        self.backoff_max = retry.backoff_max_ms / 1000
        self.fallback_statuses = frozenset(f for f in fallback_on if isinstance(f, int))
        # status -> error codes that fall back (only these codes, for that status)
        self.fallback_codes: dict[int, frozenset[str]] = {}
        for f in fallback_on:
            if isinstance(f, FallbackStatus):
                if f.code is None:
                    self.fallback_statuses |= {f.status}
                else:
                    self.fallback_codes[f.status] = self.fallback_codes.get(f.status, frozenset()) | {f.code}
        self.deadline = deadline
        self.sticky = sticky
        self.sticky_header = sticky.header.lower().encode() if sticky is not None else b""
        self.turn = 0  # rotates ties (least in-flight)
        # fastgw.admission.quota.Quota when a deployment has model/provider limits (counted per attempt).
        self.quota: Any = None

    def describe(self) -> str:
        targets = ", ".join(f"{d.name}" + (f" (weight {d.weight:g})" if self.strategy == "weighted" else "")
                            + (f" [priority {d.priority}]" if d.priority else "") for d in self.deployments)
        parts = [f"{self.strategy} over {targets}",
                 f"{self.attempts} more attempt(s) on {sorted(self.retry_statuses) or 'a refused key only'}"]
        fallback = [str(s) for s in sorted(self.fallback_statuses)]
        fallback += [f"{s}/{c}" for s, codes in sorted(self.fallback_codes.items()) for c in sorted(codes)]
        if fallback:
            parts.append(f"fall back on {', '.join(fallback)}")
        if self.deadline:
            parts.append(f"deadline {self.deadline:g} s")
        b = self.deployments[0].breaker.cfg
        if b.enabled:
            parts.append(f"breaker: {b.consecutive_failures} failures in a row or {b.error_rate:.0%} of >= "
                         f"{b.min_requests} in {b.window_s:g} s, open {b.cooldown_s:g} s")
        if self.sticky:
            parts.append(f"sticky on {self.sticky.header}")
        return "; ".join(parts)


def build_plan(name: str, cfg: RouteConfig, resolve: object) -> tuple[RoutePlan, list[tuple[Provider, str]]]:
    """The plan for route ``name``; ``resolve(target)`` gives (provider, upstream model) for a target."""
    deployments = []
    resolved = []
    for t in cfg.target_list():
        provider, upstream_model = resolve(t.model)  # type: ignore[operator]
        resolved.append((provider, upstream_model))
        deployments.append(Deployment(name, provider, upstream_model, t.weight, t.priority, cfg.breaker, name))
    plan = RoutePlan(name, deployments, strategy=cfg.strategy, retry=cfg.retry, fallback_on=cfg.fallback_on,
                     deadline=cfg.deadline_s, sticky=cfg.sticky)
    return plan, resolved


def alias_plan(name: str, targets: list[tuple[Provider, str]]) -> RoutePlan:
    """An alias listing several targets: ordered, with the default retry and fallback policy."""
    cfg = RouteConfig(targets=[])
    deployments = [Deployment(name, p, m, 1.0, 0, cfg.breaker, name) for p, m in targets]
    return RoutePlan(name, deployments, strategy="ordered", retry=cfg.retry, fallback_on=cfg.fallback_on,
                     deadline=cfg.deadline_s, sticky=None)


def single_plan(name: str, provider: Provider, upstream_model: str) -> RoutePlan:
    """A plain model with model/provider limits: one deployment, no retries, so the attempt loop
    counts its limits per attempt and may wait for room."""
    deployment = Deployment(name, provider, upstream_model, 1.0, 0, BreakerConfig(enabled=False), name)
    return RoutePlan(name, [deployment], strategy="ordered", retry=RetryConfig(attempts=0, on_status=[]),
                     fallback_on=[], deadline=None, sticky=None)


def key_rotation_plan(name: str, provider: Provider, upstream_model: str) -> RoutePlan:
    """A plain model of a provider with several keys: one deployment, retried only to change keys."""
    assert provider.keys is not None
    breaker = BreakerConfig(enabled=False)
    deployment = Deployment(name, provider, upstream_model, 1.0, 0, breaker, name)
    return RoutePlan(name, [deployment], strategy="ordered",
                     retry=RetryConfig(attempts=len(provider.keys.keys) - 1, on_status=[]),
                     fallback_on=[], deadline=None, sticky=None)
