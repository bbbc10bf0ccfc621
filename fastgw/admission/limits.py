"""Rate and concurrency limits: which apply to a request, admit or refuse it, settle after.

Limits come from the virtual key (``rpm_limit``, ``tpm_limit``, ``concurrency_limit``;
``limits.default`` for keys without their own), the model (``limits.models``) and the
provider deployment (``limits.providers``). Each is a *rule*: a counter id, a kind and a
number. :meth:`Limiter.admit` asks the backend to check every rule of the request and, only
when all pass, count it in all of them, in one step (one Redis round trip with
:mod:`fastgw.admission.redis_limits`). A refusal is a 429 ``rate_limit_exceeded`` naming
the limit, with ``retry-after``; every answer of a limited request carries OpenAI's
``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` headers.

Windows slide: a counter is 61 one-second buckets, and a request is admitted while the
buckets of the last 60 to 61 seconds hold less than the limit, so no 60-second span ever
sees more than the limit (no fixed window letting twice the limit through at a boundary).

Tokens per minute are counted before the request from an estimate (body bytes / 4 plus
``max_tokens`` / ``max_completion_tokens`` / ``max_output_tokens``) and corrected by
:meth:`Limiter.settle` from the real usage once the answer went out; settling also frees
the concurrency slot.

:class:`MemoryBackend` keeps the counters in the worker. With several workers and no
Redis, every limit is divided by the number of workers (``limits.per_worker: true`` gives
each worker the whole limit instead); :meth:`Limiter.describe` says which at start-up.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any, Protocol

import msgspec

from fastgw.config_shared import LimitsConfig, Rates
from fastgw.errors import GatewayError

WINDOW = 60
BUCKETS = WINDOW + 1
WINDOW_KIND = "w"
CONCURRENCY_KIND = "c"
_REQUEST_HEADERS = (b"x-ratelimit-limit-requests", b"x-ratelimit-remaining-requests", b"x-ratelimit-reset-requests")
_TOKEN_HEADERS = (b"x-ratelimit-limit-tokens", b"x-ratelimit-remaining-tokens", b"x-ratelimit-reset-tokens")
_UNITS = {"rpm": "requests per minute", "tpm": "tokens per minute", "concurrency": "requests in flight"}


class Rule(msgspec.Struct, frozen=True, array_like=True):
    counter: str  # e.g. "key:key_0123:rpm"
    kind: str  # WINDOW_KIND | CONCURRENCY_KIND
    limit: int
    scope: str  # "key" | "model" | "provider"
    name: str  # "rpm" | "tpm" | "concurrency"


class Outcome(msgspec.Struct, array_like=True):
    """The backend's answer: the 1-based index of the first rule that refused (0: admitted),
    the backend's clock, each rule's count after the check, and each window's oldest bucket
    (-1 when empty)."""

    failed: int
    now: float
    used: list[int]
    oldest: list[int]


class Ticket:
    """What a request holds between admission and settling."""

    __slots__ = ("bucket", "estimate", "headers", "request_id", "reserved_usd", "rules", "settled")

    def __init__(self, rules: list[Rule], request_id: str, estimate: int, bucket: int) -> None:
        self.rules = rules
        self.request_id = request_id
        self.estimate = estimate
        self.bucket = bucket
        self.headers: list[tuple[bytes, bytes]] = []
        self.reserved_usd = 0.0
        self.settled = False


class Backend(Protocol):
    async def acquire(self, rules: list[Rule], costs: list[int], request_id: str) -> Outcome: ...
    def release(self, ticket: Ticket, token_delta: int) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class _Window:
    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets: deque[list[int]] = deque()  # [second, amount], oldest first
        self.total = 0

    def prune(self, cur: int) -> None:
        buckets = self.buckets
        while buckets and buckets[0][0] < cur - WINDOW:
            self.total -= buckets.popleft()[1]

    def add(self, cur: int, amount: int) -> None:
        buckets = self.buckets
        if buckets and buckets[-1][0] == cur:
            buckets[-1][1] += amount
        else:
            buckets.append([cur, amount])
        self.total += amount

    def correct(self, second: int, delta: int) -> None:
        for bucket in reversed(self.buckets):
            if bucket[0] == second:
                bucket[1] += delta
                self.total += delta
                return


class MemoryBackend:
    """Counters in this worker (one event loop: every step is atomic by construction)."""

    def __init__(self, lease: float = 900.0) -> None:
        self.windows: dict[str, _Window] = {}
        self.inflight: dict[str, int] = {}
        self.lease = lease

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def acquire(self, rules: list[Rule], costs: list[int], request_id: str) -> Outcome:
        return self.acquire_now(rules, costs)

    def acquire_now(self, rules: list[Rule], costs: list[int]) -> Outcome:
        now = time.time()
        cur = int(now)
        used: list[int] = []
        oldest: list[int] = []
        failed = 0
        windows = self.windows
        for i, rule in enumerate(rules):
            if rule.kind == WINDOW_KIND:
                w = windows.get(rule.counter)
                if w is None:
                    w = windows[rule.counter] = _Window()
                w.prune(cur)
                u = w.total
                oldest.append(w.buckets[0][0] if w.buckets else -1)
            else:
                u = self.inflight.get(rule.counter, 0)
                oldest.append(-1)
            used.append(u)
            if not failed and u + costs[i] > rule.limit:
                failed = i + 1
        if not failed:
            for i, rule in enumerate(rules):
                cost = costs[i]
                if rule.kind == WINDOW_KIND:
                    w = windows[rule.counter]
                    w.add(cur, cost)
                    if oldest[i] < 0:
                        oldest[i] = cur
                else:
                    self.inflight[rule.counter] = used[i] + cost
                used[i] += cost
        return Outcome(failed, now, used, oldest)

    def release(self, ticket: Ticket, token_delta: int) -> None:
        for rule in ticket.rules:
            if rule.kind == CONCURRENCY_KIND:
                left = self.inflight.get(rule.counter, 0) - 1
                if left > 0:
                    self.inflight[rule.counter] = left
                else:
                    self.inflight.pop(rule.counter, None)
            elif token_delta and rule.name == "tpm":
                w = self.windows.get(rule.counter)
                if w is not None:
                    w.correct(ticket.bucket, token_delta)


class _Estimate(msgspec.Struct):
    max_tokens: Any = None
    max_completion_tokens: Any = None
    max_output_tokens: Any = None


_estimate_decoder = msgspec.json.Decoder(_Estimate)


def estimate_tokens(body: bytes) -> tuple[int, int]:
    """(prompt, completion) tokens a request may use: its size / 4, and its output cap (0 if none)."""
    try:
        fields = _estimate_decoder.decode(body)
    except msgspec.DecodeError:
        return max(1, len(body) // 4), 0
    cap = 0
    for value in (fields.max_completion_tokens, fields.max_tokens, fields.max_output_tokens):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            cap = value
            break
    return max(1, len(body) // 4), cap


def rule_costs(rules: list[Rule], body: bytes, estimate: int = -1) -> tuple[list[int], int]:
    """What a request counts in each rule (one request, or its token estimate) and that
    estimate: ``estimate`` when known (not -1), else made from ``body`` once a tpm rule needs it."""
    costs = []
    for rule in rules:
        if rule.name == "tpm":
            if estimate < 0:
                prompt, cap = estimate_tokens(body)
                estimate = prompt + cap
            costs.append(estimate)
        else:
            costs.append(1)
    return costs, estimate


def format_reset(seconds: float) -> str:
    """A duration as OpenAI writes it in ``x-ratelimit-reset-*``: ``120ms``, ``1.5s``, ``1m0s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes = int(seconds // 60)
    return f"{minutes}m{int(seconds - minutes * 60)}s"


_RESETS: dict[int, bytes] = {}


def _reset_header(seconds: float) -> bytes:
    """:func:`format_reset` as header bytes, remembered per step of its last digit (a reset
    of a second or more is written with three significant digits, so the steps are few)."""
    if seconds < 1:
        return format_reset(seconds).encode()
    k = int(seconds * 100) if seconds < 10 else 1000 + int(seconds * 10) if seconds < 60 else 2000 + int(seconds)
    value = _RESETS.get(k)
    if value is None:
        value = format_reset(seconds).encode()
        if len(_RESETS) < 8192:
            _RESETS[k] = value
    return value


def _rules_of(scope: str, ident: str, rates: Rates, divisor: int) -> list[Rule]:
    out = []
    for name in ("rpm", "tpm", "concurrency"):
        value = getattr(rates, name)
        if value is None:
            continue
        kind = CONCURRENCY_KIND if name == "concurrency" else WINDOW_KIND
        out.append(Rule(f"{scope}:{ident}:{name}", kind, max(1, value // divisor), scope, name))
    return out


def _match(table: dict[str, Rates], *names: str) -> Rates | None:
    for name in names:
        rates = table.get(name)
        if rates is not None:
            return rates
    return None


class Limiter:
    """The worker's limits: rules per request, admission through a backend, settling."""

    def __init__(self, cfg: LimitsConfig, backend: Backend, *, divisor: int = 1, fail_open: bool = True) -> None:
        self.cfg = cfg
        self.backend = backend
        self.divisor = divisor
        self.fail_open = fail_open
        self.has_config_rules = bool(cfg.models or cfg.providers)
        self._default = cfg.default if cfg.default.any() else None
        # (provider, upstream model, client model) -> the model and provider rules
        self._route_rules: dict[tuple[str, str, str], list[Rule]] = {}
        # key id -> (its limits when the rules were made, the rules); remade when the limits change
        self._key_rules: dict[str, tuple[tuple[int | None, ...], list[Rule]]] = {}

    def describe(self, workers: int, backend_name: str) -> str:
        if backend_name == "redis":
            return "limits: shared through Redis (one limit across every worker and instance)"
        if workers <= 1:
            return "limits: in-process (one worker)"
        if self.divisor > 1:
            return (f"limits: {workers} workers without Redis: each worker enforces 1/{workers} of every "
                    "limit (set redis.url to share them, or limits.per_worker: true for a whole limit each)")
        return (f"limits: {workers} workers without Redis and limits.per_worker: true: each worker enforces "
                f"the whole limit, so up to {workers}x each limit in total")

    def route_rules(self, provider: str, upstream_model: str, model: str) -> list[Rule]:
        k = (provider, upstream_model, model)
        rules = self._route_rules.get(k)
        if rules is None:
            rules = []
            qualified = f"{provider}/{upstream_model}"
            rates = _match(self.cfg.models, model, qualified, upstream_model)
            if rates is not None:
                rules += _rules_of("model", qualified, rates, self.divisor)
            rates = self.cfg.providers.get(provider)
            if rates is not None:
                rules += _rules_of("provider", provider, rates, self.divisor)
            if len(self._route_rules) > 4096:
                self._route_rules.clear()
            self._route_rules[k] = rules
        return rules

    def key_rules(self, key: Any) -> list[Rule]:
        if key is None:
            return []
        own = (key.rpm_limit, key.tpm_limit, key.concurrency_limit)
        cached = self._key_rules.get(key.id)
        if cached is not None and cached[0] == own:
            return cached[1]
        if own == (None, None, None):
            rules = [] if self._default is None else _rules_of("key", key.id, self._default, self.divisor)
        else:
            rules = _rules_of("key", key.id, Rates(*own), self.divisor)
        if len(self._key_rules) > 65536:
            self._key_rules.clear()
        self._key_rules[key.id] = (own, rules)
        return rules

    async def admit(self, key: Any, provider: str, upstream_model: str, model: str, body: bytes,
                    request_id: str, *, targets: bool = True) -> Ticket | None:
        """Check and count a request; None when no limit applies. Raises 429 on refusal.
        ``targets=False``: the key's limits only (the target's are counted per attempt)."""
        rules = self.key_rules(key)
        if self.has_config_rules and targets:
            rules = rules + self.route_rules(provider, upstream_model, model)
        if not rules:
            return None
        costs, _ = rule_costs(rules, body)
        result = await self.check(rules, costs, request_id)
        if isinstance(result, Refusal):
            raise result.error
        return result

    def settle(self, ticket: Ticket, tokens: int | None) -> None:
        """Free the request's concurrency slots and correct its token estimate. Sync, never raises."""
        if ticket.settled:
            return
        ticket.settled = True
        delta = tokens - ticket.estimate if tokens is not None and ticket.estimate else 0
        self.backend.release(ticket, delta)

    @staticmethod
    def _headers(rules: list[Rule], outcome: Outcome) -> list[tuple[bytes, bytes]]:
        """The ``x-ratelimit-*`` trios of the tightest requests and tokens windows."""
        req = tok = -1
        req_left = tok_left = 0
        used = outcome.used
        for i, rule in enumerate(rules):
            name = rule.name
            if name == "rpm":
                left = rule.limit - used[i]
                if req < 0 or left < req_left:
                    req, req_left = i, left
            elif name == "tpm":
                left = rule.limit - used[i]
                if tok < 0 or left < tok_left:
                    tok, tok_left = i, left
        headers: list[tuple[bytes, bytes]] = []
        for best, left, names in ((req, req_left, _REQUEST_HEADERS), (tok, tok_left, _TOKEN_HEADERS)):
            if best < 0:
                continue
            oldest = outcome.oldest[best]
            reset = oldest + BUCKETS - outcome.now if oldest >= 0 else 0.0
            headers += ((names[0], b"%d" % rules[best].limit), (names[1], b"%d" % (left if left > 0 else 0)),
                        (names[2], _reset_header(reset)))
        return headers

    @staticmethod
    def _refusal(rules: list[Rule], costs: list[int], outcome: Outcome,
                 headers: list[tuple[bytes, bytes]]) -> GatewayError:
        i = outcome.failed - 1
        rule = rules[i]
        if rule.kind == CONCURRENCY_KIND:
            retry = 1
            detail = f"{rule.limit} {_UNITS[rule.name]}"
        else:
            oldest = outcome.oldest[i]
            retry = max(1, math.ceil(oldest + BUCKETS - outcome.now)) if oldest >= 0 else 1
            detail = f"{rule.limit} {_UNITS[rule.name]}, {outcome.used[i]} used"
            if rule.name == "tpm":
                detail += f", this request needs up to {costs[i]}"
        message = (f"Rate limit exceeded: the {rule.scope} {rule.name} limit ({detail}). "
                   f"Retry after {retry}s.")
        return GatewayError(429, message, type="rate_limit_exceeded", param=None,
                            code=f"{rule.scope}_{rule.name}_limit",
                            headers=[(b"retry-after", str(retry).encode()), *headers])

    async def check(self, rules: list[Rule], costs: list[int], request_id: str) -> Ticket | Refusal | None:
        """Check and count ``rules`` (with ``costs``) without raising a refusal: the ticket, the
        :class:`Refusal`, or None when the backend cannot answer and limits fail open (503 when
        they fail closed)."""
        backend = self.backend
        try:
            if type(backend) is MemoryBackend:
                outcome = backend.acquire_now(rules, costs)  # no I/O: no coroutine to run
            else:
                outcome = await backend.acquire(rules, costs, request_id)
        except LimitsUnavailable:
            if self.fail_open:
                return None
            raise GatewayError(503, "Rate limits cannot be checked right now; retry shortly.",
                               type="overloaded", code="limits_unavailable",
                               headers=[(b"retry-after", b"1")]) from None
        estimate = 0
        for rule, cost in zip(rules, costs, strict=True):
            if rule.name == "tpm":
                estimate = cost
        ticket = Ticket(rules, request_id, estimate, int(outcome.now))
        ticket.headers = self._headers(rules, outcome)
        if not outcome.failed:
            return ticket
        i = outcome.failed - 1
        rule = rules[i]
        if rule.kind == CONCURRENCY_KIND:
            wait, slot = math.inf, rule.counter
        elif costs[i] > rule.limit or outcome.oldest[i] < 0:
            wait, slot = math.inf, None  # never fits
        else:
            wait, slot = max(0.0, outcome.oldest[i] + BUCKETS - outcome.now), None
        return Refusal(self._refusal(rules, costs, outcome, ticket.headers), wait, slot)


class Refusal:
    """A refused :meth:`Limiter.check`: the 429 to answer, the seconds until the refusing window
    has room (``inf``: not by waiting), and the refusing concurrency counter (room comes when one of
    its slots is freed)."""

    __slots__ = ("error", "slot", "wait")

    def __init__(self, error: GatewayError, wait: float, slot: str | None) -> None:
        self.error = error
        self.wait = wait
        self.slot = slot


class LimitsUnavailable(Exception):
    """The shared backend could not answer in time (the configured fail mode applies)."""
