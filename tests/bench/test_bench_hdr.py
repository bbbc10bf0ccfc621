"""HDR-style histogram maths against exact computations on known data."""

from __future__ import annotations

import random

import pytest

from bench.hdr import SUB, SUB_BITS, Histogram, bucket_bounds, bucket_index, exact_percentile, pct_key

PCTS = [0.0, 1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 99.0, 99.9, 99.99, 100.0]
REL = 2.0 ** -(SUB_BITS - 1)  # half-width of a bucket relative to its low end


def test_buckets_partition_the_integers() -> None:
    prev_high = -1
    for idx in range(0, 6000):
        low, high = bucket_bounds(idx)
        assert low == prev_high + 1, idx
        assert bucket_index(low) == idx and bucket_index(high) == idx
        assert high == low if low < SUB else (high - low + 1) / low <= REL
        prev_high = high


def test_small_values_are_exact() -> None:
    data = list(range(SUB)) * 3
    h = Histogram()
    h.record_many(data)
    s = sorted(data)
    for p in PCTS:
        assert h.percentile(p) == exact_percentile(s, p)
    assert h.min == 0 and h.max == SUB - 1 and h.count == len(data)


def test_nearest_rank_reference() -> None:
    s = [15, 20, 35, 40, 50]
    assert [exact_percentile(s, p) for p in (5, 30, 40, 50, 100)] == [15, 20, 20, 35, 50]
    assert exact_percentile([], 50) == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_within_bucket_error(seed: int) -> None:
    rnd = random.Random(seed)
    data = [int(rnd.lognormvariate(7, 1.5)) for _ in range(20000)] + [0, 1, 10**9]
    h = Histogram()
    h.record_many(data)
    s = sorted(data)
    for p in PCTS:
        exact = exact_percentile(s, p)
        got = h.percentile(p)
        assert abs(got - exact) <= max(1, exact * 2 * REL), (p, exact, got)
    assert h.min == s[0] and h.max == s[-1]
    assert h.mean() == pytest.approx(sum(data) / len(data))


def test_merge_equals_single_histogram() -> None:
    rnd = random.Random(7)
    parts = [[rnd.randrange(0, 5_000_000) for _ in range(3000)] for _ in range(4)]
    whole = Histogram()
    merged = Histogram()
    for part in parts:
        whole.record_many(part)
        h = Histogram()
        h.record_many(part)
        merged.merge(Histogram.from_dict(h.to_dict()))  # as worker processes hand them over
    assert merged.counts == whole.counts
    assert (merged.count, merged.total, merged.min, merged.max) == (whole.count, whole.total, whole.min, whole.max)
    for p in PCTS:
        assert merged.percentile(p) == whole.percentile(p)


def test_empty_and_edge_cases() -> None:
    h = Histogram()
    assert h.percentile(50) == 0 and h.mean() == 0.0
    h.record(-5)  # clamped to 0
    h.record(100, n=3)
    assert h.count == 4 and h.percentile(50) == 100 and h.percentile(0) == 0
    assert h.merge(Histogram()) is h and h.count == 4
    assert pct_key(99.9) == "p99.9" and pct_key(50) == "p50"
    assert set(h.percentiles([50, 99.9])) == {"p50", "p99.9"}
    with pytest.raises(ValueError):
        Histogram.from_dict({"sub_bits": 3, "counts": {}})
