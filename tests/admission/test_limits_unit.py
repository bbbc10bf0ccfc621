"""The in-process limit counters and helpers, on a clock the test sets: sliding buckets,
estimates, the reset format, and rules per key, model and provider."""

from __future__ import annotations

from fastgw.admission.limits import WINDOW_KIND, Limiter, Rule, RuleSet, estimate_tokens, format_reset
from fastgw.admission.memory_limits import MemoryBackend
from fastgw.config_shared import LimitsConfig, Rates
from fastgw.controls.keys import KeyRecord


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


def test_reset_header_is_format_reset_to_its_last_digit() -> None:
    from fastgw.admission.limits import _reset_header, format_reset

    for x in (0.0, 0.004, 0.12, 0.999, 1.0, 1.234, 9.5, 12.34, 45.6, 59.9, 60.0, 61.2, 119.9, 3600.0):
        first = _reset_header(x)
        assert _reset_header(x) == first  # remembered
        # The same text as format_reset, or its neighbour in the last digit (one cache step).
        assert first in {format_reset(x).encode(), format_reset(x - 0.01 if x < 10 else x - 0.1 if x < 60 else x - 1).encode()}
