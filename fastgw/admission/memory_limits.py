"""Limits counted in this worker: sliding windows and in-flight gauges in memory.

:class:`MemoryBackend` is the backend of one worker without Redis. It runs on the event loop
alone, so checking every rule of a request and counting it in all of them is atomic by
construction, and it answers at once (``sync``: :class:`fastgw.admission.limits.Limiter`
does not await it).

A window is a ring of ``BUCKETS`` one-second counts and their running total. Moving to a new
second drops the seconds that left the window (at most one pass over the ring, once a second);
checking and counting within a second touch one slot. A rule set resolves its counters once
(:attr:`RuleSet.memo`), so a request does no lookup by name. An admitted request's
``x-ratelimit-*`` headers are read off the counters it was just counted in
(:meth:`MemoryBackend.admit`): no outcome is built for a request that passes. A rule set with
at most one rpm, one tpm and one concurrency rule (a key's own limits, and most targets') is a
:class:`_Unit`, admitted in straight-line code rather than by the loop over rules.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from fastgw.admission.limits import (
    _REQUEST_HEADERS,
    _RESET_REQUESTS_S,
    _RESET_TOKENS_S,
    _TOKEN_HEADERS,
    BUCKETS,
    CONCURRENCY_KIND,
    WINDOW,
    Outcome,
    RuleSet,
    Ticket,
    given_back,
    rate_headers,
)


class _Window:
    """Counts of the last ``BUCKETS`` seconds: the window ``[last - WINDOW, last]``."""

    __slots__ = ("counts", "first", "last", "total")

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS  # second s is counted at s % BUCKETS
        self.total = 0
        self.last = 0  # the newest second seen
        self.first = -1  # the oldest second still holding a count; -1 when none

    def advance(self, cur: int) -> None:
        """Move the window to end at ``cur`` (> ``last``), dropping the seconds that left it."""
        last = self.last
        self.last = cur
        first = self.first
        horizon = cur - WINDOW  # the oldest second still in the window
        if first < 0 or first >= horizon:
            return
        counts = self.counts
        if cur - last >= BUCKETS:
            self.counts = [0] * BUCKETS
            self.total = 0
            self.first = -1
            return
        total = self.total
        for s in range(max(first, last - WINDOW), horizon):
            i = s % BUCKETS
            total -= counts[i]
            counts[i] = 0
        self.total = total
        self.first = -1
        for s in range(horizon, cur + 1):
            if counts[s % BUCKETS]:
                self.first = s
                break

    def correct(self, second: int, delta: int) -> None:
        """Change the count of ``second`` by ``delta`` (never below 0) if it is still in the window."""
        if self.last - WINDOW <= second <= self.last:
            i = second % BUCKETS
            if self.counts[i] + delta < 0:
                delta = -self.counts[i]
            self.counts[i] += delta
            self.total += delta


class _Gauge:
    """Requests in flight on one concurrency counter (``total``, as a window names its count;
    it has no oldest second)."""

    __slots__ = ("total",)
    first = -1

    def __init__(self) -> None:
        self.total = 0


class _Memo:
    """A rule set's counters in this backend: per rule its counter, limit and whether it is a
    window (``steps``), the counters alone, the gauges settling frees, the token windows it
    corrects, and the rule set as a :class:`_Unit` when it is one."""

    __slots__ = ("gauges", "handles", "steps", "tokens", "unit")

    def __init__(self, rules: RuleSet, handles: list[_Window | _Gauge]) -> None:
        self.handles = handles
        self.steps = tuple((h, r.limit, h.__class__ is _Window) for h, r in zip(handles, rules, strict=True))
        self.gauges = [h for h in handles if h.__class__ is _Gauge]
        self.tokens = [h for h, r in zip(handles, rules, strict=True) if r.name == "tpm"]
        self.unit = _Unit(rules, handles) if _Unit.fits(rules) else None


class _Unit:
    """A rule set of at most one rpm window, one tpm window and one concurrency gauge: its
    counters, limits and constant headers, so :meth:`take` admits without a loop or lists."""

    __slots__ = ("conc", "gauge", "req", "req_limit", "rpm", "tok", "tok_limit", "tpm")

    @staticmethod
    def fits(rules: RuleSet) -> bool:
        names = [r.name for r in rules]
        return len(names) == len(set(names))

    def __init__(self, rules: RuleSet, handles: list[_Window | _Gauge]) -> None:
        self.req = self.tok = self.gauge = None
        self.rpm = self.tpm = self.conc = 0
        self.req_limit = self.tok_limit = (b"", b"")
        for r, h, header in zip(rules, handles, rules.limit_headers, strict=True):
            if r.name == "rpm":
                self.req, self.rpm, self.req_limit = h, r.limit, header
            elif r.name == "tpm":
                self.tok, self.tpm, self.tok_limit = h, r.limit, header
            else:
                self.gauge, self.conc = h, r.limit

    def take(self, estimate: int, cur: int) -> list[tuple[bytes, bytes]] | None:
        """Count one request of ``estimate`` tokens in every counter, or in none when one is full
        (None); the ``x-ratelimit-*`` headers of the counted request."""
        req, tok, gauge = self.req, self.tok, self.gauge
        if req is not None:
            if cur > req.last:
                req.advance(cur)
            if req.total >= self.rpm:
                return None
        if tok is not None:
            if cur > tok.last:
                tok.advance(cur)
            if tok.total + estimate > self.tpm:
                return None
        if gauge is not None:
            if gauge.total >= self.conc:
                return None
            gauge.total += 1
        headers = []
        if req is not None:
            last = req.last
            req.counts[last % BUCKETS] += 1
            req.total = used = req.total + 1
            if req.first < 0:
                req.first = last
            headers.append(self.req_limit)
            left = self.rpm - used
            headers.append((_REMAINING_REQUESTS, b"%d" % left if left > 0 else b"0"))
            headers.append(_RESET_REQUESTS_S[req.first + BUCKETS - cur])  # first: at most a window old
        if tok is not None:
            last = tok.last
            tok.counts[last % BUCKETS] += estimate
            tok.total = used = tok.total + estimate
            if tok.first < 0:
                tok.first = last
            headers.append(self.tok_limit)
            left = self.tpm - used
            headers.append((_REMAINING_TOKENS, b"%d" % left if left > 0 else b"0"))
            headers.append(_RESET_TOKENS_S[tok.first + BUCKETS - cur])
        return headers


_REMAINING_REQUESTS = _REQUEST_HEADERS[1]
_REMAINING_TOKENS = _TOKEN_HEADERS[1]


class MemoryBackend:
    """Counters in this worker (one event loop: every step is atomic by construction)."""

    sync = True

    def __init__(self, lease: float = 900.0, clock: Callable[[], float] = time.time) -> None:
        self.windows: dict[str, _Window] = {}
        self.gauges: dict[str, _Gauge] = {}
        self.lease = lease  # unused in memory: a worker that dies takes its gauges with it
        self.clock = clock

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def _memo(self, rules: RuleSet) -> _Memo:
        """The rule set's counters, resolved by name once and kept in ``rules.memo``."""
        if rules.memo_owner is self:
            return rules.memo  # type: ignore[no-any-return]
        handles: list[_Window | _Gauge] = []
        for rule in rules:
            table: dict = self.windows if rule.kind != CONCURRENCY_KIND else self.gauges
            h = table.get(rule.counter)
            if h is None:
                h = table[rule.counter] = _Window() if rule.kind != CONCURRENCY_KIND else _Gauge()
            handles.append(h)
        rules.memo = memo = _Memo(rules, handles)
        rules.memo_owner = self
        return memo

    @staticmethod
    def _take(memo: _Memo, costs: Sequence[int], cur: int) -> int:
        """Count the request in each rule in turn: 0 when all had room, else the 1-based index of
        the first without, after undoing what was counted before it (nothing else runs in
        between: all or nothing)."""
        for n, ((h, limit, window), cost) in enumerate(zip(memo.steps, costs, strict=False)):
            if window:
                if cur > h.last:
                    h.advance(cur)
                u = h.total + cost
                if u > limit:
                    return MemoryBackend._undo(memo, costs, n)
                last = h.last
                h.counts[last % BUCKETS] += cost
                h.total = u
                if h.first < 0:
                    h.first = last
            else:
                u = h.total + cost
                if u > limit:
                    return MemoryBackend._undo(memo, costs, n)
                h.total = u
        return 0

    @staticmethod
    def _undo(memo: _Memo, costs: Sequence[int], failed: int) -> int:
        """Take back the counts of the rules before ``failed`` (0-based); ``failed + 1``."""
        for (h, _, window), cost in zip(memo.steps[:failed], costs, strict=False):
            h.total -= cost
            if window:
                h.counts[h.last % BUCKETS] -= cost
                if not h.total:
                    h.first = -1
        return failed + 1

    def acquire(self, rules: RuleSet, costs: Sequence[int], request_id: str) -> Outcome:
        """Count the request in every rule or in none, and report each rule as it stands."""
        memo = self._memo(rules)
        now = self.clock()
        failed = self._take(memo, costs, int(now))
        handles = memo.handles
        return Outcome(failed, now, [h.total for h in handles], [h.first for h in handles])

    def admit(self, rules: RuleSet, estimate: int, request_id: str) -> Ticket | Outcome:
        """:meth:`acquire` for admission (costs: ``rules.costs(estimate)``): the ticket of an
        admitted request, its headers read off the counters, or the refusing :class:`Outcome`
        (nothing counted)."""
        memo = rules.memo if rules.memo_owner is self else self._memo(rules)
        now = self.clock()
        cur = int(now)
        unit = memo.unit
        if unit is not None:
            headers = unit.take(estimate, cur)
            if headers is not None:
                return Ticket(rules, request_id, estimate, cur, headers)
            # A counter is full: the loop below finds which and reports it.
        costs = rules.costs(estimate)
        failed = self._take(memo, costs, cur)
        handles = memo.handles
        used, oldest = [h.total for h in handles], [h.first for h in handles]
        if failed:
            return Outcome(failed, now, used, oldest)
        return Ticket(rules, request_id, estimate, cur, rate_headers(rules, now, used, oldest))

    def release(self, ticket: Ticket, token_delta: int) -> None:
        rules = ticket.rules
        memo = rules.memo if rules.memo_owner is self else self._memo(rules)
        for g in memo.gauges:
            if g.total > 0:
                g.total -= 1
        if token_delta:
            for w in memo.tokens:
                w.correct(ticket.bucket, token_delta)

    def give_back(self, ticket: Ticket) -> None:
        self.release(ticket, 0)  # the concurrency slots
        rules = ticket.rules
        for rule, h in zip(rules, self._memo(rules).handles, strict=True):
            if h.__class__ is _Window:
                h.correct(ticket.bucket, -given_back(rule, ticket))  # type: ignore[union-attr]
