"""Limits counted in this worker: sliding windows and in-flight gauges in memory.

:class:`MemoryBackend` is the backend of one worker without Redis. It runs on the event loop
alone, so checking every rule of a request and counting it in all of them is atomic by
construction, and it answers at once (``sync``: :meth:`Limiter.check` does not await it).

A window is a ring of ``BUCKETS`` one-second counts and their running total. Moving to a new
second drops the seconds that left the window (at most one pass over the ring, once a second);
checking and counting within a second touch one slot. A rule set resolves its counters once
(:attr:`RuleSet.memo`), so a request does no lookup by name.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from fastgw.admission.limits import BUCKETS, CONCURRENCY_KIND, WINDOW, Outcome, RuleSet, Ticket, given_back


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
    """Requests in flight on one concurrency counter."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


class _Memo:
    """A rule set's counters in this backend: all of them in rule order, its gauges, its token windows."""

    __slots__ = ("gauges", "handles", "tokens")

    def __init__(self, handles: list[_Window | _Gauge], gauges: list[_Gauge], tokens: list[_Window]) -> None:
        self.handles = handles
        self.gauges = gauges
        self.tokens = tokens


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

    def _resolve(self, rules: RuleSet) -> list[_Window | _Gauge]:
        """The rule set's counters in rule order, kept in ``rules.memo`` together with the gauges
        :meth:`release` frees and the token windows it corrects."""
        handles: list[_Window | _Gauge] = []
        for rule in rules:
            table: dict = self.windows if rule.kind != CONCURRENCY_KIND else self.gauges
            h = table.get(rule.counter)
            if h is None:
                h = table[rule.counter] = _Window() if rule.kind != CONCURRENCY_KIND else _Gauge()
            handles.append(h)
        rules.memo = _Memo(handles, [h for h in handles if h.__class__ is _Gauge],
                           [h for h, r in zip(handles, rules, strict=True) if r.name == "tpm"])
        rules.memo_owner = self
        return handles

    def acquire(self, rules: RuleSet, costs: Sequence[int], request_id: str) -> Outcome:
        """Count the request in each rule in turn; the first rule without room undoes what was
        counted before it (nothing else runs in between: all or nothing)."""
        handles = rules.memo.handles if rules.memo_owner is self else self._resolve(rules)
        now = self.clock()
        cur = int(now)
        limits = rules.limits
        used: list[int] = []
        oldest: list[int] = []
        for i, h in enumerate(handles):
            cost = costs[i]
            if h.__class__ is _Window:
                if cur > h.last:  # type: ignore[union-attr]
                    h.advance(cur)  # type: ignore[union-attr]
                u = h.total  # type: ignore[union-attr]
                if u + cost > limits[i]:
                    return self._refuse(handles, costs, i, now)
                last = h.last  # type: ignore[union-attr]
                h.counts[last % BUCKETS] += cost  # type: ignore[union-attr]
                h.total = u + cost  # type: ignore[union-attr]
                if h.first < 0:  # type: ignore[union-attr]
                    h.first = last  # type: ignore[union-attr]
                oldest.append(h.first)  # type: ignore[union-attr]
            else:
                u = h.n  # type: ignore[union-attr]
                if u + cost > limits[i]:
                    return self._refuse(handles, costs, i, now)
                h.n = u + cost  # type: ignore[union-attr]
                oldest.append(-1)
            used.append(u + cost)
        return Outcome(0, now, used, oldest)

    @staticmethod
    def _refuse(handles: list[_Window | _Gauge], costs: Sequence[int], failed: int, now: float) -> Outcome:
        """Undo the counts of the rules before ``failed`` and report every rule as it stands."""
        for h, cost in zip(handles[:failed], costs, strict=False):
            if h.__class__ is _Window:
                h.counts[h.last % BUCKETS] -= cost  # type: ignore[union-attr]
                h.total -= cost  # type: ignore[union-attr]
                if not h.total:  # type: ignore[union-attr]
                    h.first = -1  # type: ignore[union-attr]
            else:
                h.n -= cost  # type: ignore[union-attr]
        used = [h.total if h.__class__ is _Window else h.n for h in handles]  # type: ignore[union-attr]
        oldest = [h.first if h.__class__ is _Window else -1 for h in handles]  # type: ignore[union-attr]
        return Outcome(failed + 1, now, used, oldest)

    def release(self, ticket: Ticket, token_delta: int) -> None:
        rules = ticket.rules
        if rules.memo_owner is not self:
            self._resolve(rules)
        memo: _Memo = rules.memo
        for g in memo.gauges:
            if g.n > 0:
                g.n -= 1
        if token_delta:
            for w in memo.tokens:
                w.correct(ticket.bucket, token_delta)

    def give_back(self, ticket: Ticket) -> None:
        self.release(ticket, 0)  # the concurrency slots
        rules = ticket.rules
        for rule, h in zip(rules, rules.memo.handles, strict=True):
            if h.__class__ is _Window:
                h.correct(ticket.bucket, -given_back(rule, ticket))  # type: ignore[union-attr]
