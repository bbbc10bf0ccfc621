"""The in-process limit counters and helpers, on a clock the test sets: sliding buckets,
estimates, the reset format, and rules per key, model and provider."""

from __future__ import annotations

import pytest

from fastgw.admission.limits import WINDOW_KIND, Limiter, Rule, RuleSet, estimate_tokens, format_reset
from fastgw.admission.memory_limits import MemoryBackend
from fastgw.config_shared import LimitsConfig, Rates
from fastgw.controls.keys import KeyRecord
from fastgw.errors import GatewayError


def test_a_window_slides_one_second_at_a_time_and_never_forgets_early():
    now = [100.0]
    backend = MemoryBackend(clock=lambda: now[0])
    rules = RuleSet([Rule("w", WINDOW_KIND, 1000, "key", "rpm")])

    def count(second: int, amount: int) -> None:
        now[0] = float(second)
        assert backend.acquire(rules, [amount], "r").failed == 0

    count(100, 5)
    w = backend.windows["w"]
    count(130, 3)
    assert (w.total, w.first) == (8, 100)
    w.advance(160)  # 60 s after the first bucket: still counted (no 60-second span sees more)
    assert (w.total, w.first) == (8, 100)
    w.advance(161)
    assert (w.total, w.first) == (3, 130)
    w.correct(130, -2)
    assert w.total == 1
    w.correct(10, 7)  # a bucket already gone: nothing to correct
    assert w.total == 1
    w.advance(191)
    assert (w.total, w.first) == (0, -1)
    count(191, 4)
    w.advance(400)  # a long silence clears the whole ring
    assert (w.total, w.first) == (0, -1)
    count(400, 2)
    assert (w.total, w.first, w.counts[400 % len(w.counts)]) == (2, 400, 2)


def test_estimates_come_from_the_body_and_the_output_cap():
    assert estimate_tokens(b'{"model":"m","max_tokens":100}') == (7, 100)
    assert estimate_tokens(b'{"max_completion_tokens":9,"max_tokens":100}')[1] == 9
    assert estimate_tokens(b'{"max_output_tokens":3}')[1] == 3
    assert estimate_tokens(b'{"max_tokens":true}')[1] == 0
    assert estimate_tokens(b"not json") == (2, 0)


def test_reset_durations_are_written_like_openai():
    assert format_reset(0) == "0s"
    assert format_reset(0.12) == "120ms"
    assert format_reset(1.5) == "1.5s"
    assert format_reset(59) == "59s"
    assert format_reset(61) == "1m1s"


def test_rules_divide_by_workers_and_fall_back_to_the_default():
    cfg = LimitsConfig(default=Rates(rpm=10), models={"m": Rates(tpm=101)}, providers={"p": Rates(concurrency=3)})
    lim = Limiter(cfg, MemoryBackend(), divisor=2)
    plain = KeyRecord(id="key_a", name="a", prefix="sk-fgw-a")
    own = KeyRecord(id="key_b", name="b", prefix="sk-fgw-b", tpm_limit=7)
    assert [(r.counter, r.limit) for r in lim.key_rules(plain)] == [("key:key_a:rpm", 5)]
    assert [(r.counter, r.limit) for r in lim.key_rules(own)] == [("key:key_b:tpm", 3)]
    assert lim.key_rules(None) == []
    rules = lim.route_rules("p", "m", "m")
    assert [(r.counter, r.kind, r.limit) for r in rules] == [("model:p/m:tpm", "w", 50), ("provider:p:concurrency", "c", 1)]
    assert lim.route_rules("q", "x", "x") == []


def test_memory_backend_counts_all_rules_or_none():
    backend = MemoryBackend()
    lim = Limiter(LimitsConfig(), backend)
    key = KeyRecord(id="key_c", name="c", prefix="sk-fgw-c", rpm_limit=5, concurrency_limit=1)
    rules = lim.key_rules(key)
    first = backend.acquire(rules, [1, 1], "r1")
    assert first.failed == 0 and first.used == [1, 1]
    second = backend.acquire(rules, [1, 1], "r2")
    assert second.failed == 2  # the concurrency rule refused...
    assert backend.windows["key:key_c:rpm"].total == 1  # ...and the rpm window did not count it


def test_reset_headers_are_whole_seconds_until_the_oldest_count_leaves() -> None:
    now = [1000.3]
    backend = MemoryBackend(clock=lambda: now[0])
    lim = Limiter(LimitsConfig(), backend)
    key = KeyRecord(id="key_r", name="r", prefix="sk-fgw-r", rpm_limit=10, tpm_limit=10_000)

    def resets() -> tuple[bytes, bytes]:
        ticket = lim.admit_now(key, b'{"max_tokens":10}', "r")
        assert ticket is not None
        h = dict(ticket.headers)
        return h[b"x-ratelimit-reset-requests"], h[b"x-ratelimit-reset-tokens"]

    # Counted in second 1000: it leaves the window at 1061, 60.7 s from now, written rounded up.
    assert resets() == (b"1m1s", b"1m1s")
    now[0] = 1059.5  # 1.5 s left: never written shorter than the wait
    assert resets() == (b"2s", b"2s")
    now[0] = 1061.0  # the first second left; the oldest is now 1059
    assert resets() == (b"59s", b"59s")


@pytest.mark.parametrize("seed", range(6))
def test_a_single_limit_set_is_admitted_as_the_loop_over_rules_would(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key's own limits take the straight-line path (a unit); random traffic gives the same
    tickets, headers, refusals and counts as the general loop over rules."""
    import random

    from fastgw.admission import memory_limits
    from fastgw.admission.limits import Ticket

    rng = random.Random(seed)
    rpm, tpm, conc = rng.choice([None, 3, 8]), rng.choice([None, 200, 900]), rng.choice([None, 2, 5])
    if rpm is tpm is conc is None:
        rpm = 4
    now = [5000.0]

    def run(unit: bool) -> list[object]:
        backend = MemoryBackend(clock=lambda: now[0])
        lim = Limiter(LimitsConfig(), backend)
        key = KeyRecord(id="key_u", name="u", prefix="sk-fgw-u", rpm_limit=rpm, tpm_limit=tpm, concurrency_limit=conc)
        rules = lim.key_rules(key)
        with monkeypatch.context() as m:
            if not unit:
                m.setattr(memory_limits._Unit, "fits", staticmethod(lambda rules: False))
            assert (backend._memo(rules).unit is not None) is unit
        r = random.Random(seed)
        held: list[Ticket] = []
        seen: list[object] = []
        now[0] = 5000.0
        for i in range(300):
            now[0] += r.choice([0.0, 0.05, 0.4, 3.0, 20.0])
            body = b'{"max_tokens":%d}' % r.choice([1, 40, 150])
            try:
                ticket = lim.admit_now(key, body, f"r{i}")
            except GatewayError as exc:
                seen.append((exc.status, exc.code, exc.headers))
            else:
                assert ticket is not None
                seen.append((ticket.estimate, ticket.bucket, ticket.headers))
                held.append(ticket)
            if held and r.random() < 0.6:
                lim.settle(held.pop(r.randrange(len(held))), r.choice([None, 5, 90]))
            seen.append(sorted((k, w.total, w.first) for k, w in backend.windows.items()))
            seen.append(sorted((k, g.total) for k, g in backend.gauges.items()))
        return seen

    assert run(unit=True) == run(unit=False)
