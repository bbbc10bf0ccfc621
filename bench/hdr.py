"""A small HDR-style (log-linear) histogram of non-negative integers.

Values (microseconds in the harness) below ``2**SUB_BITS`` get one exact bucket each; above,
each power-of-two range is split into ``2**(SUB_BITS-1)`` equal buckets, so any recorded value
is reported within a relative error of ``2**-(SUB_BITS-1)``: 0.098 % with SUB_BITS=11 (about
three significant digits, as HDR histograms usually keep). A bucket at 100 ms is then under
0.1 ms wide: fine enough to judge a +1 ms budget on a 100 ms time to first byte.

Histograms are mergeable (bucket counts add up) and serialise to a small sparse dict, which is
how loadgen worker processes hand their results to the parent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

SUB_BITS = 11
SUB = 1 << SUB_BITS  # values below this are exact
HALF = SUB >> 1


def bucket_index(v: int) -> int:
    """Bucket of a non-negative integer value."""
    if v < SUB:
        return v if v > 0 else 0
    shift = v.bit_length() - SUB_BITS
    return SUB + (shift - 1) * HALF + ((v >> shift) - HALF)


def bucket_bounds(idx: int) -> tuple[int, int]:
    """Inclusive [low, high] range of values that fall into bucket ``idx``."""
    if idx < SUB:
        return idx, idx
    shift, m = divmod(idx - SUB, HALF)
    shift += 1
    low = (m + HALF) << shift
    return low, low + (1 << shift) - 1


class Histogram:
    """Log-linear histogram with exact count, sum, min and max."""

    __slots__ = ("count", "counts", "max", "min", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.total = 0
        self.min = 0
        self.max = 0

    def record(self, v: int, n: int = 1) -> None:
        if v < 0:
            v = 0
        if v < SUB:
            idx = v
        else:
            shift = v.bit_length() - SUB_BITS
            idx = SUB + (shift - 1) * HALF + ((v >> shift) - HALF)
        c = self.counts
        c[idx] = c.get(idx, 0) + n
        if self.count == 0 or v < self.min:
            self.min = v
        if v > self.max:
            self.max = v
        self.count += n
        self.total += v * n

    def record_many(self, values: Iterable[int]) -> None:
        for v in values:
            self.record(v)

    def merge(self, other: Histogram) -> Histogram:
        if other.count == 0:
            return self
        c = self.counts
        for idx, n in other.counts.items():
            c[idx] = c.get(idx, 0) + n
        if self.count == 0 or other.min < self.min:
            self.min = other.min
        self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total
        return self

    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def percentile(self, p: float) -> int:
        """Nearest-rank percentile: the value of the ceil(p/100*n)-th smallest sample.

        Returns the midpoint of the bucket holding that sample, clamped to [min, max], so the
        result is exact below ``SUB`` and within the bucket's relative width above it.
        """
        if self.count == 0:
            return 0
        rank = max(1, math.ceil(p / 100.0 * self.count))
        if rank >= self.count:
            return self.max
        seen = 0
        for idx in sorted(self.counts):
            seen += self.counts[idx]
            if seen >= rank:
                low, high = bucket_bounds(idx)
                mid = (low + high) // 2
                return min(max(mid, self.min), self.max)
        return self.max  # pragma: no cover - unreachable when counts are consistent

    def percentiles(self, ps: Iterable[float]) -> dict[str, int]:
        return {pct_key(p): self.percentile(p) for p in ps}

    def to_dict(self) -> dict[str, object]:
        return {
            "sub_bits": SUB_BITS,
            "count": self.count,
            "total": self.total,
            "min": self.min,
            "max": self.max,
            "counts": {str(k): v for k, v in self.counts.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Histogram:
        if d.get("sub_bits", SUB_BITS) != SUB_BITS:
            raise ValueError("histogram precision mismatch")
        h = cls()
        raw = d.get("counts", {})
        assert isinstance(raw, dict)
        h.counts = {int(k): int(v) for k, v in raw.items()}
        h.count = int(d.get("count", 0))  # type: ignore[arg-type]
        h.total = int(d.get("total", 0))  # type: ignore[arg-type]
        h.min = int(d.get("min", 0))  # type: ignore[arg-type]
        h.max = int(d.get("max", 0))  # type: ignore[arg-type]
        return h


def pct_key(p: float) -> str:
    """'p50', 'p99', 'p99.9'."""
    return "p" + (f"{p:g}")


STD_PCTS = (50.0, 90.0, 99.0, 99.9)


def exact_percentile(sorted_values: list[int], p: float) -> int:
    """Reference nearest-rank percentile on sorted data (used by tests and small samples)."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]
