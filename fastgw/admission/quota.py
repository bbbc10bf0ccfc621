"""Model and provider limits per upstream attempt: counted on the target tried, skipped when full,
waited for (bounded) when every target is full.

``limits.models`` and ``limits.providers`` are a deployment's own quota. With any configured,
every model that has such a limit is served through the attempt loop
(:mod:`fastgw.routing.attempts`, a one-target plan for a plain model), and the loop asks
:class:`QuotaRun` before each attempt:

* :meth:`QuotaRun.take` checks and counts the target's rules (one backend call, the same
  atomic check as admission). Admitted: the ticket is held on the exchange (``ex.held``) until
  the attempt failed (settled at once, nothing used) or the answer went out (settled by
  :meth:`fastgw.controls.runtime.Controls.finish` with the real usage). Full: the target is
  skipped -- not an upstream failure, no breaker verdict -- and the next one is tried by the
  route's strategy; the request log's ``attempts`` column shows ``target:provider_rpm_limit``.
* :meth:`QuotaRun.wait`, when every target left was full: the request waits for room, at most
  ``limits.queue_s`` (and the route's deadline), with at most ``limits.queue_max`` requests of
  the worker waiting at a time. It never polls in a loop: it sleeps until the refusing window's
  oldest second leaves it (the reset the refusal computed) or until a concurrency slot of a
  refusing counter is freed in this worker (:meth:`Quota.release` wakes its waiters); with
  Redis, where another instance may free it, also at most ``SHARED_POLL_S``. Then every full
  target is tried again. A client that leaves while waiting is cancelled out of the wait.
* Past the queue's bounds, or when no wait can help (a request larger than a tpm limit):
  :meth:`QuotaRun.refused` is the soonest refusal's 429, with ``retry-after`` and the
  rate-limit headers.

A virtual key's own limits stay checked once per request at admission, before any target. A
request that ends without anything sent upstream because of its targets' limits (refused, or its
client left the wait) gives its key's counts back (:meth:`fastgw.admission.limits.Limiter.give_back`:
one request per rpm, its estimate per tpm, its concurrency slot), so the refusal costs the key
nothing; one whose earlier attempt did go upstream keeps its request counted, like any failed one.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING

from fastgw.admission.limits import CONCURRENCY_KIND, NO_RULES, Limiter, Refusal, Rule, Ticket, rule_costs
from fastgw.config_shared import LimitsConfig
from fastgw.controls import metrics
from fastgw.errors import GatewayError
from fastgw.exchange import RATE_LIMIT_HEADERS, Exchange

if TYPE_CHECKING:
    from fastgw.routing.targets import Deployment

# Seconds between checks while waiting on a concurrency limit shared through Redis (a slot freed
# by another instance sends no word here).
SHARED_POLL_S = 0.25
# The shortest wait: a reset computed as "now" must not turn the queue into a busy loop.
MIN_WAIT_S = 0.01

_R = metrics.REGISTRY
_R.define("fastgw_limit_queue_waiting", "gauge", "Requests waiting for room in a model/provider limit.")
_R.define("fastgw_limit_queue_total", "counter", "Requests finding every target's model/provider limit full, "
          "by what followed (waited: a wait began; full: limits.queue_max were waiting already; refused: "
          "answered 429).", ("outcome",))


class Quota:
    """One worker's model and provider limits at the attempt level, and its waiting requests."""

    def __init__(self, cfg: LimitsConfig, limiter: Limiter, *, shared: bool) -> None:
        self.limiter = limiter
        self.queue_s = cfg.queue_s
        self.queue_max = cfg.queue_max
        self.poll = SHARED_POLL_S if shared else math.inf
        self.waiting = 0
        # concurrency counter -> futures of requests waiting for one of its slots (oldest first)
        self.slot_waiters: dict[str, list[asyncio.Future[None]]] = {}

    def rules(self, provider: str, upstream_model: str, model: str) -> list[Rule]:
        return self.limiter.route_rules(provider, upstream_model, model)

    def start(self, ex: Exchange, body: bytes) -> QuotaRun:
        return QuotaRun(self, ex, body)

    def release(self, ticket: Ticket, tokens: int | None) -> None:
        """Settle a target's ticket and wake the requests waiting for one of its slots. Never raises."""
        self.limiter.settle(ticket, tokens)
        waiters = self.slot_waiters
        if waiters:
            for rule in ticket.rules:
                if rule.kind == CONCURRENCY_KIND:
                    for fut in waiters.pop(rule.counter, ()):
                        _wake(fut)


class QuotaRun:
    """One request's walk over its targets' limits (created only for a route with limited targets)."""

    __slots__ = ("body", "estimate", "ex", "key_headers", "n", "quota", "refusals", "until")

    def __init__(self, quota: Quota, ex: Exchange, body: bytes) -> None:
        self.quota = quota
        self.ex = ex
        self.body = body
        self.estimate = -1  # tokens, computed at the first tpm rule
        self.n = 0
        self.refusals: list[Refusal] = []
        self.until = 0.0  # loop time the wait for room ends (set when it begins)
        key = ex.ticket
        self.key_headers: list[tuple[bytes, bytes]] = key.headers if key is not None else []

    async def take(self, dep: Deployment) -> bool:
        """Count an attempt on ``dep`` in its limits: True when it may go (the ticket is then
        ``ex.held``), False when one is full (the refusal is kept for :meth:`wait`)."""
        ex = self.ex
        rules = self.quota.rules(dep.provider.name, dep.upstream_model, dep.model)
        if not rules:
            return True
        costs, self.estimate = rule_costs(rules, self.body, self.estimate)
        self.n += 1
        try:
            # An id per attempt: a retry on the same target must not share a slot in Redis.
            got = await self.quota.limiter.check(rules, costs, f"{ex.request_id}.{self.n}")
        except GatewayError as exc:  # the limits cannot be checked and fail closed
            got = Refusal(exc, math.inf, None)
        if got is None:
            return True  # fail open
        if isinstance(got, Refusal):
            self.refusals.append(got)
            log = ex.attempt_log
            if log is None:
                log = ex.attempt_log = []
            log.append(f"{dep.name}:{got.error.code}")
            return False
        ex.held = got
        self._answer_headers(got.headers)
        return True

    def failed(self) -> None:
        """The attempt holding ``ex.held`` failed: free what it counted (it used no tokens)."""
        ex = self.ex
        held = ex.held
        if held is not None:
            ex.held = None
            self.quota.release(held, 0)

    async def wait(self, deadline: float | None) -> bool:
        """Wait for room in the refused targets' limits: True to try them again, False when the
        queue's bounds (or the route's ``deadline``, loop time) say to refuse now."""
        quota = self.quota
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not self.until:
            self.until = now + quota.queue_s
            if deadline is not None:
                self.until = min(self.until, deadline)
        left = self.until - now
        refusals = self.refusals
        slots = [r.slot for r in refusals if r.slot is not None]
        timeout = min(r.wait for r in refusals)
        if slots:
            timeout = min(timeout, quota.poll)
        elif timeout > left:
            return False  # no window has room before the wait would end
        if left <= 0:
            return False
        if quota.waiting >= quota.queue_max:
            _R.inc("fastgw_limit_queue_total", ("full",))
            return False
        fut: asyncio.Future[None] = loop.create_future()
        waiters = quota.slot_waiters
        for slot in slots:
            waiters.setdefault(slot, []).append(fut)
        timer = loop.call_later(max(MIN_WAIT_S, min(timeout, left)), _wake, fut)
        quota.waiting += 1
        _R.inc("fastgw_limit_queue_total", ("waited",))
        _R.add("fastgw_limit_queue_waiting")
        try:
            await fut
        except BaseException:  # the client left (or the worker stops) while it waited
            self._give_back_key()
            raise
        finally:
            quota.waiting -= 1
            _R.add("fastgw_limit_queue_waiting", (), -1)
            timer.cancel()
            for slot in slots:
                queue = waiters.get(slot)
                if queue is not None and fut in queue:
                    queue.remove(fut)
                    if not queue:
                        del waiters[slot]
        self.refusals = []
        return True

    def refused(self) -> GatewayError:
        """The 429 of the refusal that frees first, its rate-limit headers merged with the key's."""
        _R.inc("fastgw_limit_queue_total", ("refused",))
        refusal = min(self.refusals, key=_soonest)
        error = refusal.error
        self._give_back_key()
        ticket = self.ex.ticket
        if ticket is not None:
            # The answer's rate-limit headers come from the ticket: the refusing limit's with the key's.
            ticket.headers = merge_headers(self.key_headers,
                                           [h for h in error.headers if h[0] in RATE_LIMIT_HEADERS])
        return error

    def _give_back_key(self) -> None:
        """Nothing went upstream for this request: its key's admission is undone (the answer's
        headers then show what the key has left without it)."""
        ex = self.ex
        ticket = ex.ticket
        if ex.attempts or ticket is None or not ticket.rules or ticket.settled:
            return
        self.quota.limiter.give_back(ticket)
        self.key_headers = _with_given_back(self.key_headers, ticket)

    def _answer_headers(self, target: list[tuple[bytes, bytes]]) -> None:
        ex = self.ex
        ticket = ex.ticket
        if ticket is None:
            ticket = ex.ticket = Ticket(NO_RULES, ex.request_id, 0, 0)
        ticket.headers = merge_headers(self.key_headers, target)


def merge_headers(a: list[tuple[bytes, bytes]], b: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """OpenAI's rate-limit header trios of two sets of limits: per unit, the trio with less left."""
    if not a:
        return b
    if not b:
        return a
    out: list[tuple[bytes, bytes]] = []
    for unit in (b"-requests", b"-tokens"):
        trio_a = [h for h in a if h[0].endswith(unit)]
        trio_b = [h for h in b if h[0].endswith(unit)]
        if trio_a and trio_b:
            out += trio_a if _remaining(trio_a) <= _remaining(trio_b) else trio_b
        else:
            out += trio_a or trio_b
    return out


def _with_given_back(headers: list[tuple[bytes, bytes]], ticket: Ticket) -> list[tuple[bytes, bytes]]:
    """The key's rate-limit headers with ``ticket``'s request and tokens left again (at most the limit)."""
    limits = {name[len(b"x-ratelimit-limit-"):]: int(value) for name, value in headers
              if name.startswith(b"x-ratelimit-limit-")}
    back = {b"requests": 1, b"tokens": ticket.estimate}
    out = []
    for name, value in headers:
        if name.startswith(b"x-ratelimit-remaining-"):
            unit = name[len(b"x-ratelimit-remaining-"):]
            value = b"%d" % min(limits.get(unit, 0), int(value) + back.get(unit, 0))
        out.append((name, value))
    return out


def _remaining(trio: list[tuple[bytes, bytes]]) -> int:
    for name, value in trio:
        if name.startswith(b"x-ratelimit-remaining-"):
            return int(value)
    return 0


def _soonest(r: Refusal) -> float:
    return 1.0 if r.slot is not None else r.wait


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
