"""Rate and concurrency limits: which apply to a request, admit or refuse it, settle after.

Limits come from the virtual key (``rpm_limit``, ``tpm_limit``, ``concurrency_limit``;
``limits.default`` for keys without their own), the model (``limits.models``) and the
provider deployment (``limits.providers``). Each is a *rule*: a counter id, a kind and a
number. :meth:`Limiter.admit` checks a request against its key's rules at admission;
:meth:`Limiter.check` is the same for a target's model and provider rules, once per upstream
attempt (:mod:`fastgw.admission.quota`). Either asks the backend to check every rule and, only
when all pass, count the request in all of them, in one step (one Redis round trip with
:mod:`fastgw.admission.redis_limits`). A refusal is a 429 ``rate_limit_exceeded`` naming
the limit, with ``retry-after``; every answer of a limited request carries OpenAI's
``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` headers.

Windows slide: a counter is 61 one-second buckets, and a request is admitted while the
buckets of the last 60 to 61 seconds hold less than the limit, so no 60-second span ever
sees more than the limit (no fixed window letting twice the limit through at a boundary).

Tokens per minute are counted before the request from an estimate (body bytes / 4 plus
``max_tokens`` / ``max_completion_tokens`` / ``max_output_tokens``) and corrected by
:meth:`Limiter.settle` from the real usage once the answer went out; settling also frees
the concurrency slot. A request that never went upstream because its targets' limits
refused it is given back instead (:meth:`Limiter.give_back`): it uses none of its key's limits.

:class:`fastgw.admission.memory_limits.MemoryBackend` keeps the counters in the worker. With several workers and no
Redis, every limit is divided by the number of workers (``limits.per_worker: true`` gives
each worker the whole limit instead); :meth:`Limiter.describe` says which at start-up.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import msgspec

from fastgw.config_shared import LimitsConfig, Rates
from fastgw.errors import GatewayError
from fastgw.tokens import OutputCaps

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


class RuleSet(list[Rule]):
    """A request's rules, compiled once per key or target: each rule's limit, which rules set
    the requests and tokens headers, and a backend's resolved counters (``memo``, valid for
    ``memo_owner``). Rule lists are cached, so this is done once, not per request."""

    __slots__ = ("costs_one", "limit_headers", "limits", "memo", "memo_owner", "req", "tok", "trios")

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        super().__init__(rules)
        self.limits = tuple(r.limit for r in self)
        self.req = tuple(i for i, r in enumerate(self) if r.name == "rpm")
        self.tok = tuple(i for i, r in enumerate(self) if r.name == "tpm")
        # Per rpm or tpm rule its x-ratelimit-limit-* header, and the trios this set answers with.
        self.limit_headers = tuple((_TOKEN_HEADERS[0] if r.name == "tpm" else _REQUEST_HEADERS[0], b"%d" % r.limit)
                                   for r in self)
        self.trios = tuple((idx, names, resets) for idx, names, resets in (
            (self.req, _REQUEST_HEADERS, _RESET_REQUESTS_S), (self.tok, _TOKEN_HEADERS, _RESET_TOKENS_S)) if idx)
        self.costs_one = (1,) * len(self)  # the costs when no rule counts tokens
        self.memo: Any = None
        self.memo_owner: Any = None

    def costs(self, estimate: int) -> Sequence[int]:
        """What a request counts in each rule: ``estimate`` tokens in a tpm rule, else one."""
        if not self.tok:
            return self.costs_one
        costs = list(self.costs_one)
        for i in self.tok:
            costs[i] = estimate
        return costs


class Ticket:
    """What a request holds between admission and settling."""

    __slots__ = ("bucket", "estimate", "headers", "request_id", "reserved_usd", "rules", "settled")

    def __init__(self, rules: list[Rule], request_id: str, estimate: int, bucket: int,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.rules = rules if rules.__class__ is RuleSet else RuleSet(rules)
        self.request_id = request_id
        self.estimate = estimate
        self.bucket = bucket
        self.headers: list[tuple[bytes, bytes]] = headers if headers is not None else []
        self.reserved_usd = 0.0
        self.settled = False


class Backend(Protocol):
    """Where counters live. ``acquire`` checks every rule and, when all pass, counts the request
    in all of them atomically; it returns the :class:`Outcome` at once when ``sync`` is true and
    an awaitable of it otherwise. A ``sync`` backend also has ``admit(rules, estimate,
    request_id)``: the same with the costs :meth:`RuleSet.costs` gives ``estimate``, answering
    the admitted request's :class:`Ticket` (headers included) or the refusing :class:`Outcome`.
    ``release`` is synchronous and never waits on I/O."""

    sync: bool

    def acquire(self, rules: RuleSet, costs: Sequence[int], request_id: str) -> Any: ...
    def release(self, ticket: Ticket, token_delta: int) -> None: ...
    def give_back(self, ticket: Ticket) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


_estimate_decoder = msgspec.json.Decoder(OutputCaps)


def estimate_tokens(body: bytes, fields: Any = None) -> tuple[int, int]:
    """(prompt, completion) tokens a request may use: its size / 4, and its output cap (0 if none).
    ``fields``: the body's ``max_tokens`` / ``max_completion_tokens`` / ``max_output_tokens`` as
    the caller already decoded them (any object with those attributes); decoded here when None."""
    if fields is None:
        try:
            fields = _estimate_decoder.decode(body)
        except msgspec.DecodeError:
            return max(1, len(body) // 4), 0
    a, b, c = fields.max_completion_tokens, fields.max_tokens, fields.max_output_tokens
    if a is None and c is None:  # the common case: max_tokens or no cap
        return max(1, len(body) // 4), b if b.__class__ is int and b > 0 else 0
    return max(1, len(body) // 4), _cap(a) or _cap(b) or _cap(c)


def _cap(value: Any) -> int:
    return value if value.__class__ is int and value > 0 else 0


def rule_costs(rules: list[Rule], body: bytes, estimate: int = -1, fields: Any = None) -> tuple[Sequence[int], int]:
    """What a request counts in each rule (one request, or its token estimate) and that
    estimate: ``estimate`` when known (not -1), else made from ``body`` (and ``fields``, see
    :func:`estimate_tokens`) once a tpm rule needs it."""
    if rules.__class__ is not RuleSet:
        rules = RuleSet(rules)
    if not rules.tok:  # type: ignore[attr-defined]
        return rules.costs_one, estimate  # type: ignore[attr-defined]
    if estimate < 0:
        prompt, cap = estimate_tokens(body, fields)
        estimate = prompt + cap
    return rules.costs(estimate), estimate  # type: ignore[attr-defined]


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


# ``x-ratelimit-reset-*`` in whole seconds, rounded up: a window's counts leave it a second at a
# time, and a client that waits that long finds room. Per header, for 0 to ``BUCKETS`` seconds.
_RESET_SECONDS = tuple(format_reset(s).encode() for s in range(BUCKETS + 1))
_RESET_REQUESTS_S = tuple((_REQUEST_HEADERS[2], v) for v in _RESET_SECONDS)
_RESET_TOKENS_S = tuple((_TOKEN_HEADERS[2], v) for v in _RESET_SECONDS)
NO_RULES = RuleSet()


def rate_headers(rules: RuleSet, now: float, used: Sequence[int], oldest: Sequence[int]) -> list[tuple[bytes, bytes]]:
    """The ``x-ratelimit-*`` trios of the tightest requests and tokens windows of ``rules``, each
    rule's count and oldest second given."""
    headers: list[tuple[bytes, bytes]] = []
    limits = rules.limits
    cur = int(now)
    for idx, names, resets in rules.trios:
        best = min(idx, key=lambda i: limits[i] - used[i])
        left = limits[best] - used[best]
        # The reset: seconds until the window's oldest counted second (-1: none) leaves it.
        wait = oldest[best] + BUCKETS - cur if oldest[best] >= 0 else 0
        headers += (rules.limit_headers[best], (names[1], b"%d" % left if left > 0 else b"0"),
                    resets[wait] if 0 <= wait <= BUCKETS else (names[2], format_reset(max(0, wait)).encode()))
    return headers


def _rules_of(scope: str, ident: str, rates: Rates, divisor: int) -> list[Rule]:
    out: list[Rule] = []
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
        self._route_rules: dict[tuple[str, str, str], RuleSet] = {}
        # key id -> (the record last seen, its limits, the rules); remade when the limits change
        self._key_rules: dict[str, tuple[Any, tuple[int | None, ...], RuleSet]] = {}

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

    def route_rules(self, provider: str, upstream_model: str, model: str) -> RuleSet:
        k = (provider, upstream_model, model)
        rules = self._route_rules.get(k)
        if rules is None:
            found: list[Rule] = []
            qualified = f"{provider}/{upstream_model}"
            rates = _match(self.cfg.models, model, qualified, upstream_model)
            if rates is not None:
                found += _rules_of("model", qualified, rates, self.divisor)
            rates = self.cfg.providers.get(provider)
            if rates is not None:
                found += _rules_of("provider", provider, rates, self.divisor)
            if len(self._route_rules) > 4096:
                self._route_rules.clear()
            rules = self._route_rules[k] = RuleSet(found)
        return rules

    def key_rules(self, key: Any) -> RuleSet:
        if key is None:
            return NO_RULES
        cached = self._key_rules.get(key.id)
        if cached is not None and cached[0] is key:  # the same record: its limits are known
            return cached[2]
        own = (key.rpm_limit, key.tpm_limit, key.concurrency_limit)
        if cached is not None and cached[1] == own:
            self._key_rules[key.id] = (key, own, cached[2])
            return cached[2]
        if own == (None, None, None):
            rules = NO_RULES if self._default is None else RuleSet(
                _rules_of("key", key.id, self._default, self.divisor))
        else:
            rules = RuleSet(_rules_of("key", key.id, Rates(*own), self.divisor))
        if len(self._key_rules) > 65536:
            self._key_rules.clear()
        self._key_rules[key.id] = (key, own, rules)
        return rules

    async def admit(self, key: Any, body: bytes, request_id: str, fields: Any = None) -> Ticket | None:
        """Check and count a request in its key's limits (a target's are counted per attempt by
        :mod:`fastgw.admission.quota`); None when the key has none. Raises 429 on refusal.
        ``fields``: the body's output caps, already decoded (see :func:`estimate_tokens`)."""
        if self.backend.sync:
            return self.admit_now(key, body, request_id, fields)
        rules = self.key_rules(key)
        if not rules:
            return None
        costs, _ = rule_costs(rules, body, -1, fields)
        try:
            outcome = await self.backend.acquire(rules, costs, request_id)
        except LimitsUnavailable:
            return self._unavailable()
        result = self._decide(rules, costs, request_id, outcome)
        if result.__class__ is Refusal:
            raise result.error  # type: ignore[union-attr]
        return result  # type: ignore[return-value]

    def admit_now(self, key: Any, body: bytes, request_id: str, fields: Any = None) -> Ticket | None:
        """:meth:`admit` with a backend that answers at once (``backend.sync``): no coroutine."""
        cached = self._key_rules.get(key.id) if key is not None else None
        rules = cached[2] if cached is not None and cached[0] is key else self.key_rules(key)
        if not rules:
            return None
        if rules.tok:
            prompt, cap = estimate_tokens(body, fields)
            estimate = prompt + cap
        else:
            estimate = 0
        got = self.backend.admit(rules, estimate, request_id)  # type: ignore[attr-defined]
        if got.__class__ is Ticket:
            return got  # type: ignore[no-any-return]
        raise self._decide(rules, rules.costs(estimate), request_id, got).error  # type: ignore[union-attr]

    def settle(self, ticket: Ticket, tokens: int | None) -> None:
        """Free the request's concurrency slots and correct its token estimate. Sync, never raises."""
        if ticket.settled:
            return
        ticket.settled = True
        delta = tokens - ticket.estimate if tokens is not None and ticket.estimate else 0
        self.backend.release(ticket, delta)

    def give_back(self, ticket: Ticket) -> None:
        """Undo an admission that sent nothing upstream (every target refused it): free its
        concurrency slots and take what it counted out of its windows (one request per rpm, its
        estimate per tpm), so the refusal costs the key nothing. Instead of :meth:`settle`; sync,
        never raises."""
        if ticket.settled:
            return
        ticket.settled = True
        self.backend.give_back(ticket)

    @staticmethod
    def _refusal(rules: list[Rule], costs: Sequence[int], outcome: Outcome,
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

    async def check(self, rules: list[Rule], costs: Sequence[int], request_id: str) -> Ticket | Refusal | None:
        """Check and count ``rules`` (with ``costs``) without raising a refusal: the ticket, the
        :class:`Refusal`, or None when the backend cannot answer and limits fail open (503 when
        they fail closed)."""
        if rules.__class__ is not RuleSet:
            rules = RuleSet(rules)
        backend = self.backend
        if backend.sync:
            tok = rules.tok  # type: ignore[attr-defined]
            got = backend.admit(rules, costs[tok[0]] if tok else 0, request_id)  # type: ignore[attr-defined]
            return got if got.__class__ is Ticket else self._decide(rules, costs, request_id, got)  # type: ignore[arg-type]
        try:
            outcome = await backend.acquire(rules, costs, request_id)  # type: ignore[arg-type]
        except LimitsUnavailable:
            return self._unavailable()
        return self._decide(rules, costs, request_id, outcome)  # type: ignore[arg-type]

    def _unavailable(self) -> None:
        """The backend could not answer: None (admit without limits) when limits fail open,
        else the 503 to answer."""
        if self.fail_open:
            return None
        raise GatewayError(503, "Rate limits cannot be checked right now; retry shortly.",
                           type="overloaded", code="limits_unavailable", headers=[(b"retry-after", b"1")])

    def _decide(self, rules: RuleSet, costs: Sequence[int], request_id: str, outcome: Outcome) -> Ticket | Refusal:
        """The ticket of an admitted request, or the refusal, from the backend's outcome."""
        tok = rules.tok
        ticket = Ticket(rules, request_id, costs[tok[0]] if tok else 0, int(outcome.now),
                        rate_headers(rules, outcome.now, outcome.used, outcome.oldest))
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


def given_back(rule: Rule, ticket: Ticket) -> int:
    """What ``ticket`` counted in the window ``rule``: its token estimate for tpm, else one request."""
    return ticket.estimate if rule.name == "tpm" else 1


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
