"""Balancing: the order in which one request tries a route's deployments.

Only available deployments take part (breaker not open, no ``retry-after``
pending); among those, the best priority is balanced by the route's strategy
and the rest follow in priority order as fallbacks:

* ``ordered``: configuration order (priority with fallback);
* ``weighted``: weighted random;
* ``least_inflight``: fewest requests in flight in this worker (ties rotate);
* ``lowest_latency``: lowest moving average of time to first byte (deployments
  with no sample yet first, so each gets measured).

Sticky sessions: a request carrying a session identity goes to the deployment
that rendezvous hashing gives it among the available ones of the best priority,
so it stays on one deployment while that one is healthy (providers' prompt
caches keep hitting), moves when it is not, and the mapping needs no shared
state: every worker and instance computes the same answer.
"""

from __future__ import annotations

import hashlib
import math
from random import random

from fastgw.routing.targets import Deployment, RoutePlan


def order(plan: RoutePlan, now: float, session: bytes | None = None) -> list[Deployment]:
    """Available deployments, the one to try first at the head (empty: every one is down)."""
    deps = [d for d in plan.deployments if d.available(now)]
    if len(deps) < 2:
        return deps
    top = deps[0].priority
    n = 1
    while n < len(deps) and deps[n].priority == top:
        n += 1
    if n == 1:
        return deps
    group = deps[:n]
    if session is not None:
        first = sticky_choice(group, session)
    else:
        strategy = plan.strategy
        if strategy == "ordered":
            return deps
        if strategy == "weighted":
            first = weighted_choice(group)
        elif strategy == "least_inflight":
            plan.turn += 1
            start = plan.turn % n
            first = min(group[start:] + group[:start], key=_inflight)
        else:
            first = min(group, key=_latency)
    if first is deps[0]:
        return deps
    deps.remove(first)
    deps.insert(0, first)
    return deps


def _inflight(d: Deployment) -> int:
    return d.inflight


def _latency(d: Deployment) -> float:
    return d.ttfb


def weighted_choice(group: list[Deployment]) -> Deployment:
    total = 0.0
    for d in group:
        total += d.weight
    if total <= 0:
        return group[0]
    r = random() * total
    for d in group:
        r -= d.weight
        if r < 0:
            return d
    return group[-1]


def sticky_choice(group: list[Deployment], session: bytes) -> Deployment:
    """Weighted rendezvous hashing: the same session picks the same deployment of the same set."""
    best = group[0]
    best_score = -math.inf
    for d in group:
        if d.weight <= 0:
            continue
        h = int.from_bytes(hashlib.blake2b(session + b"\0" + d.name_bytes, digest_size=8).digest(), "big")
        u = (h + 0.5) / 2**64
        score = -d.weight / math.log(u)
        if score > best_score:
            best, best_score = d, score
    return best
