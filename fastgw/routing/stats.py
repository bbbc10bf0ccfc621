"""Routing's metrics and state views: attempts by outcome, retries, fallbacks, breakers, load.

Labels are bounded by the configuration: ``route`` is a configured route or
alias name, ``deployment`` one of its targets, ``outcome`` one of ``ok``
(served), ``retry`` (failed, tried again), ``fallback`` (answered a fall-back
status, next target), ``key`` (a refused or rate-limited key, tried with the
next one), ``error`` (failed, answered to the client), ``limited`` (skipped, not
sent: its model/provider limit was full).
"""

from __future__ import annotations

from typing import Any

from fastgw.controls import metrics
from fastgw.routing.targets import RoutePlan

_R = metrics.REGISTRY
_R.define("fastgw_route_attempts_total", "counter", "Upstream attempts of routed requests by outcome "
          "(ok|retry|fallback|key|error; limited: skipped, its model/provider limit full).", ("route", "deployment", "outcome"))
_R.define("fastgw_route_retries_total", "counter", "Attempts made after a retryable failure.", ("route",))
_R.define("fastgw_route_fallbacks_total", "counter", "Attempts made on the next target after a fall-back "
          "status.", ("route",))
_R.define("fastgw_route_unavailable_total", "counter", "Requests answered 503 because no target of the route "
          "could take them.", ("route",))
_R.define("fastgw_breaker_state", "gauge", "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open.",
          ("route", "deployment"))
_R.define("fastgw_deployment_inflight", "gauge", "Requests in flight per deployment.", ("route", "deployment"))
_R.define("fastgw_deployment_ttfb_seconds", "histogram", "Time to the upstream's response headers per "
          "deployment.", ("route", "deployment"), metrics.LATENCY_BUCKETS)

_attempts = _R.counters["fastgw_route_attempts_total"]


def attempt(route: str, deployment: str, outcome: str) -> None:
    k = (route, deployment, outcome)
    _attempts[k] = _attempts.get(k, 0.0) + 1


def retried(route: str) -> None:
    _R.inc("fastgw_route_retries_total", (route,))


def fell_back(route: str) -> None:
    _R.inc("fastgw_route_fallbacks_total", (route,))


def unavailable(route: str) -> None:
    _R.inc("fastgw_route_unavailable_total", (route,))


def ttfb(route: str, deployment: str, seconds: float) -> None:
    _R.observe("fastgw_deployment_ttfb_seconds", (route, deployment), seconds)


def watch_plans(plans: dict[str, RoutePlan]) -> None:
    """Export every deployment's breaker state and in-flight count at each snapshot."""

    def collect() -> None:
        for plan in plans.values():
            for d in plan.deployments:
                labels = (plan.name, d.name)
                _R.set("fastgw_breaker_state", labels, d.breaker.state)
                _R.set("fastgw_deployment_inflight", labels, d.inflight)

    metrics.register_collector(collect)


def routes_state(plans: dict[str, RoutePlan], now: float) -> dict[str, Any]:
    """Each route's deployments with breaker state, load and latency (admin API, /ready)."""
    out: dict[str, Any] = {}
    for name, plan in plans.items():
        deps = []
        for d in plan.deployments:
            entry: dict[str, Any] = {
                "deployment": d.name,
                "breaker": d.breaker.state_name if d.breaker.enabled else "disabled",
                "available": d.available(now),
                "inflight": d.inflight,
                "ttfb_ms": round(d.ttfb * 1000, 3) if d.ttfb >= 0 else None,
                "weight": d.weight,
                "priority": d.priority,
            }
            retry_in = d.retry_in(now)
            if retry_in:
                entry["retry_in_s"] = round(retry_in, 3)
            if d.provider.keys is not None:
                entry["keys"] = d.provider.keys.state(now)
            deps.append(entry)
        out[name] = {"strategy": plan.strategy, "deployments": deps}
    return out
