"""The attempt loop: one request tried on a route's deployments until one answer is accepted.

:func:`run` is the entry point for every route with a plan (several targets,
retries, or rotating keys); a front door passes its steps as a :class:`Door`
(:mod:`fastgw.egress.openai_routed`, :mod:`fastgw.egress.messages_routed`).
Each attempt opens the upstream request and stops at its status line and
headers; nothing has reached the client yet, so the loop may still throw the
answer away:

* 2xx: accepted; from here on the egress relays it exactly as for a plain route
  (byte for byte and unbuffered on the fast path) and nothing is retried, even if
  the stream breaks later (the client then gets one error event);
* connect errors, refusals, TLS failures, timeouts before the first byte, a full
  pool, and the route's ``retry.on_status`` (408, 429, 500, 502, 503, 504):
  retried: on the next deployment at once, or, when every one was tried, on the
  one free first after a backoff (exponential, full jitter) or the upstream's
  ``retry-after`` / ``retry-after-ms`` when that is longer;
* ``fallback_on`` statuses (404, 400 ``context_length_exceeded``, ...): the next
  target serves; the failed one is not tried again;
* a refused or rate-limited key of a provider with several keys: the same
  deployment again with the next key;
* anything else (a client's mistake: 400, 413, 422...): answered at once.

A deployment whose model/provider limit is full is skipped before it is sent
anything (no attempt, no breaker verdict); when every one left is full, the
request waits for room, bounded (:mod:`fastgw.admission.quota`).

One deadline (``deadline_s``) bounds every attempt up to the accepted answer,
backoff included; a wait that would pass it is not started. When no deployment
is available (breakers open, ``retry-after`` pending) the client gets one 503
naming the model, with ``retry-after``, at once. The request body is the bytes
already in memory: each deployment's version of it is prepared at most once per
request.
"""

from __future__ import annotations

import asyncio
import math
from random import random
from typing import TYPE_CHECKING, Any

import msgspec

from fastgw.errors import GatewayError, type_for_status
from fastgw.exchange import Exchange, header
from fastgw.routing import balance, stats
from fastgw.routing.keys import ApiKey
from fastgw.routing.targets import Deployment, RoutePlan
from fastgw.upstream.client import Timeouts, UpstreamResponse
from fastgw.upstream.watch import watch_client

if TYPE_CHECKING:
    from fastgw.admission.quota import QuotaRun

OK, RETRY, FALLBACK, KEY, ERROR, LIMITED = "ok", "retry", "fallback", "key", "error", "limited"
_CONVERSATION = b"x-fastgw-conversation-id"


class _User(msgspec.Struct):
    user: str | None = None


class _ErrorCode(msgspec.Struct):
    code: str | None = None


class _Envelope(msgspec.Struct):
    error: _ErrorCode | None = None


_user_decoder = msgspec.json.Decoder(_User)
_envelope_decoder = msgspec.json.Decoder(_Envelope)


class RelayedError(GatewayError):
    """An upstream's error answer, relayed as it was prepared (status, envelope, kept headers)."""

    def __init__(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(status, "upstream error", type=type_for_status(status), headers=headers)
        self.raw = body

    def body(self) -> bytes:
        return self.raw


class _Failure:
    __slots__ = ("error", "gateway_side", "outcome")

    def __init__(self, error: GatewayError, outcome: str, gateway_side: bool) -> None:
        self.error = error
        self.outcome = outcome
        self.gateway_side = gateway_side  # no HTTP answer from the upstream (connect, timeout, pool)


class Door:
    """What a front door does in one attempt; the loop decides between the steps.

    ``prepare`` builds a deployment's request (once per request and deployment);
    ``open`` sends it and returns at the upstream's status line and headers;
    ``error_answer`` turns a 4xx/5xx into the client's (status, body, headers)
    without sending it; ``deliver`` answers the client from an accepted response.
    ``local`` deployments (the in-process mock) are served by ``serve_local``.
    """

    __slots__ = ()

    def local(self, dep: Deployment) -> bool:
        return dep.provider.wire == "mock"

    async def serve_local(self, dep: Deployment) -> None:
        raise NotImplementedError

    def prepare(self, dep: Deployment) -> Any:
        raise NotImplementedError

    async def open(self, dep: Deployment, call: Any, key: ApiKey | None,
                   timeouts: Timeouts | None) -> UpstreamResponse:
        raise NotImplementedError

    async def error_answer(self, dep: Deployment, call: Any,
                           resp: UpstreamResponse) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        raise NotImplementedError

    async def deliver(self, dep: Deployment, call: Any, resp: UpstreamResponse) -> None:
        raise NotImplementedError


async def run(ex: Exchange, plan: RoutePlan, body: bytes, door: Door) -> None:
    """Serve one request on ``plan`` through ``door``'s steps."""
    now = _loop().time()
    session = _session(ex, plan, body) if plan.sticky is not None else None
    order = balance.order(plan, now, session)
    if not order:
        stats.unavailable(plan.name)
        ex.attempt_log = []  # the loop ran and made no attempt: x-fastgw-attempts says 0
        raise _unavailable(plan, ex.model or plan.name, now, "every target is down")
    quota = plan.quota.start(ex, body) if plan.quota is not None else None
    async with watch_client(ex):
        await _Run(ex, plan, now, door, quota).go(order)


def _session(ex: Exchange, plan: RoutePlan, body: bytes) -> bytes | None:
    """The request's session identity for sticky routing, if it carries one."""
    sticky = plan.sticky
    assert sticky is not None
    value = header(ex.scope, plan.sticky_header)
    if value is None and sticky.use_conversation_id:
        value = header(ex.scope, _CONVERSATION)
    if value is None and sticky.use_user and b'"user"' in body:
        try:
            user = _user_decoder.decode(body).user
        except (msgspec.DecodeError, msgspec.ValidationError):
            user = None
        value = user.encode() if user else None
    return value


def _unavailable(plan: RoutePlan, model: str, now: float, why: str) -> GatewayError:
    wait = min((d.retry_in(now) for d in plan.deployments), default=1.0)
    retry_after = str(max(1, math.ceil(wait))).encode()
    return GatewayError(503, f"No target of the model '{model}' can serve the request now ({why}). "
                        f"Retry after {retry_after.decode()} s.", type="overloaded", param="model",
                        code="model_unavailable", headers=[(b"retry-after", retry_after)])


def _retry_after(headers: list[tuple[bytes, bytes]]) -> float:
    """Seconds the upstream asked to wait (``retry-after-ms`` or ``retry-after`` in seconds), else 0."""
    for name, value in headers:
        try:
            if name == b"retry-after-ms":
                return max(0.0, float(value) / 1000)
            if name == b"retry-after":
                return max(0.0, float(value))
        except ValueError:
            continue  # an HTTP date: not worth parsing, the backoff applies
    return 0.0


class _Run:
    """One request's walk over the deployments."""

    __slots__ = ("deadline", "door", "ex", "plan", "prepared", "quota", "waited")

    def __init__(self, ex: Exchange, plan: RoutePlan, now: float, door: Door, quota: QuotaRun | None) -> None:
        self.ex = ex
        self.plan = plan
        self.door = door
        self.quota = quota  # the targets' model/provider limits, when any has one
        self.deadline = now + plan.deadline if plan.deadline else None
        self.prepared: dict[Deployment, Any] = {}
        # Seconds spent on failed attempts and backoff: waiting, not gateway overhead.
        self.waited = 0.0

    async def go(self, order: list[Deployment]) -> None:
        plan = self.plan
        budget = 1 + plan.attempts
        queue = order
        again: list[Deployment] = []  # failed retryably: may be tried once more after a backoff
        limited: list[Deployment] = []  # skipped: a model/provider limit was full
        quota = self.quota
        refused = False
        last: _Failure | None = None
        made = 0
        waits = 0
        loop = _loop()
        while made < budget:
            now = loop.time()
            if queue:
                dep = queue.pop(0)
                if dep.not_before > now:
                    again.append(dep)
                    continue
            elif again and last is not None and last.outcome in (RETRY, KEY):
                # An open breaker is not waited for: only a retry-after or the backoff is.
                again = [d for d in again if d.breaker.available(now)]
                if not again:
                    if limited:
                        continue  # the full targets may still get room
                    break
                dep = min(again, key=_free_at)
                again.remove(dep)
                delay = max(dep.not_before - now, backoff(plan, waits))
                waits += 1
                if self.deadline is not None and now + delay >= self.deadline:
                    break
                await asyncio.sleep(delay)
                self.waited += loop.time() - now
                now = loop.time()
            elif limited and quota is not None:
                # Every target left is full: wait (bounded) for room, then try them again.
                if not await quota.wait(self.deadline):
                    refused = True
                    break
                self.waited += loop.time() - now
                queue, limited = limited, []
                continue
            else:
                break
            if not dep.breaker.allow(now):
                continue
            if quota is not None and not await quota.take(dep):
                dep.breaker.neutral()
                stats.attempt(plan.name, dep.name, LIMITED)
                limited.append(dep)
                continue
            if made:
                if last is not None and last.outcome == FALLBACK:
                    stats.fell_back(plan.name)
                else:
                    stats.retried(plan.name)
            made += 1
            failure = await self.attempt(dep, made, now)
            if failure is None:
                return
            if quota is not None:
                quota.failed()
            self.waited += loop.time() - now
            last = failure
            if failure.outcome == KEY:
                queue.insert(0, dep)
            elif failure.outcome == RETRY:
                again.append(dep)
            elif failure.outcome == ERROR:
                break
        ex = self.ex
        ex.upstream = None
        ex.upstream_wait = self.waited
        if refused:
            assert quota is not None
            raise quota.refused()
        if last is None:
            stats.unavailable(plan.name)
            if ex.attempt_log is None:
                ex.attempt_log = []  # no attempt made: x-fastgw-attempts says 0
            raise _unavailable(plan, self.ex.model or plan.name, loop.time(), "every target is down")
        if last.gateway_side and len(plan.deployments) > 1 and last.error.code != "deadline_exceeded":
            stats.unavailable(plan.name)
            raise _unavailable(plan, self.ex.model or plan.name, loop.time(),
                               f"{made} attempt(s) failed; last: {last.error.message}")
        error = last.error
        if isinstance(error, RelayedError):
            # The upstream's own answer, already in the door's format: sent as it is.
            ex.error_type = error.type
            await ex.respond(error.status, error.raw, extra=error.headers)
            return
        raise error

    async def attempt(self, dep: Deployment, n: int, now: float) -> _Failure | None:
        """One attempt on ``dep``: None when it served the client, else what went wrong."""
        ex = self.ex
        plan = self.plan
        provider = dep.provider
        ex.provider = provider.name
        ex.provider_type = provider.type
        ex.upstream_model = dep.upstream_model
        ex.attempts = n
        log = ex.attempt_log
        if log is None:
            log = ex.attempt_log = []
        ring = provider.keys
        key = ring.pick(now) if ring is not None else None
        breaker = dep.breaker
        dep.inflight += 1
        verdict = 0  # -1 failure, 0 none, 1 success (for the breaker)
        try:
            door = self.door
            if door.local(dep):
                verdict = 1
                stats.attempt(plan.name, dep.name, OK)
                log.append(f"{dep.name}:200")
                await door.serve_local(dep)
                return None
            try:
                call = self.prepared.get(dep)
                if call is None:
                    call = self.prepared[dep] = door.prepare(dep)
                resp = await self._open(dep, call, key)
            except GatewayError as exc:
                gateway_side = exc.code in ("upstream_unreachable", "upstream_timeout", "pool_exhausted",
                                            "upstream_error", "deadline_exceeded")
                if exc.code in ("upstream_unreachable", "upstream_timeout", "upstream_error"):
                    verdict = -1
                if exc.code == "deadline_exceeded" or not gateway_side:
                    outcome = ERROR
                    if not gateway_side and self._falls_back(exc.status, exc.code):
                        outcome = FALLBACK
                else:
                    outcome = RETRY
                stats.attempt(plan.name, dep.name, outcome)
                log.append(f"{dep.name}:{exc.code or exc.status}")
                return _Failure(exc, outcome, gateway_side)
            status = resp.status
            if status < 400:
                verdict = 1
                if key is not None:
                    key.streak_429 = 0
                dep.observe_ttfb(resp.wait)
                stats.ttfb(plan.name, dep.name, resp.wait)
                if self.waited:
                    resp.wait += self.waited
                    ex.upstream_wait = resp.wait
                stats.attempt(plan.name, dep.name, OK)
                log.append(f"{dep.name}:{status}")
                try:
                    await door.deliver(dep, call, resp)
                finally:
                    await resp.aclose()
                if ex.error_type == "upstream_error":
                    verdict = -1  # the stream broke after it started: no retry, but it counts
                return None
            try:
                answer = await self._error_answer(dep, call, resp)
            finally:
                await resp.aclose()
            client_status, data, extra = answer
            outcome = ERROR
            if ring is not None and key is not None and status in (401, 403, 429):
                ring.answered(key, status, now)
                if ring.usable(_loop().time()) and len(ring.keys) > 1:
                    outcome = KEY
            if outcome == ERROR:
                if status in plan.retry_statuses or client_status in plan.retry_statuses:
                    outcome = RETRY
                    wait = _retry_after(resp.headers)
                    if wait:
                        dep.not_before = now + wait
                elif client_status in plan.fallback_statuses or (
                        client_status in plan.fallback_codes
                        and _code(data) in plan.fallback_codes[client_status]):
                    outcome = FALLBACK
            if status >= 500 or status in (408, 429):
                verdict = -1
            stats.attempt(plan.name, dep.name, outcome)
            log.append(f"{dep.name}:{status}")
            return _Failure(RelayedError(client_status, data, extra), outcome, False)
        finally:
            dep.inflight -= 1
            if verdict > 0:
                breaker.success(_loop().time())
            elif verdict < 0:
                breaker.failure(_loop().time())
            else:
                breaker.neutral()

    def _falls_back(self, status: int, code: str | None) -> bool:
        plan = self.plan
        return status in plan.fallback_statuses or (code is not None and code in plan.fallback_codes.get(status, ()))

    async def _open(self, dep: Deployment, call: Any, key: ApiKey | None) -> UpstreamResponse:
        """Open one attempt; its connect and first-byte waits end at the route's deadline.

        The deadline rides on the connection's own timeouts (no extra timer per attempt):
        a timeout that ends at the deadline becomes the route's 504 ``deadline_exceeded``.
        """
        deadline = self.deadline
        timeouts = None
        if deadline is not None:
            left = deadline - _loop().time()
            if left <= 0:
                raise self._deadline_error()
            t = dep.provider.timeouts
            connect = t.connect or math.inf
            first_byte = t.first_byte or math.inf
            if connect + first_byte > left:
                timeouts = Timeouts(min(connect, left), min(first_byte, left), t.idle, t.total)
        try:
            return await self.door.open(dep, call, key, timeouts)
        except GatewayError as exc:
            if (deadline is not None and exc.code == "upstream_timeout"
                    and _loop().time() >= deadline - 0.001):
                raise self._deadline_error() from None
            raise

    def _deadline_error(self) -> GatewayError:
        return GatewayError(504, f"The model '{self.ex.model}' did not answer within the route's deadline "
                            f"({self.plan.deadline:g} s).", type="timeout", code="deadline_exceeded")

    async def _error_answer(self, dep: Deployment, call: Any,
                            resp: UpstreamResponse) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        # Bounded by the provider's idle timeout, like any body read.
        return await self.door.error_answer(dep, call, resp)


def backoff(plan: RoutePlan, waits: int) -> float:
    """Seconds before the ``waits``-th retry of an already tried deployment: exponential, full jitter."""
    return random() * min(plan.backoff_max, plan.backoff_base * 2 ** waits)


def _free_at(d: Deployment) -> float:
    return d.not_before


def _code(data: bytes) -> str | None:
    try:
        env = _envelope_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return env.error.code if env.error is not None else None


_loop = asyncio.get_running_loop
