"""Data types of the load generator: requests, a run's spec, and its mergeable result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.hdr import STD_PCTS, Histogram


@dataclass
class RequestSpec:
    raw: bytes  # the whole pre-encoded HTTP/1.1 request
    stream: bool = False


@dataclass
class LoadSpec:
    host: str
    port: int
    requests: list[RequestSpec]
    mode: str = "closed"  # closed | open
    concurrency: int = 64
    rate: float = 0.0
    duration: float = 5.0
    warmup: float = 0.5
    max_requests: int = 5_000_000
    timeout: float = 30.0
    max_conns: int = 4096
    procs: int = 1
    tls: bool = False
    server_hostname: str | None = None


@dataclass
class LoadResult:
    ttfb: Histogram = field(default_factory=Histogram)
    total: Histogram = field(default_factory=Histogram)
    gap: Histogram = field(default_factory=Histogram)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    completed: int = 0  # completions inside the measurement window
    window: float = 0.0
    issued: int = 0
    bytes: int = 0
    events: int = 0
    cpu_s: float = 0.0  # CPU time of the load generator processes
    procs: int = 0

    @property
    def rps(self) -> float:
        return self.completed / self.window if self.window > 0 else 0.0

    @property
    def recorded(self) -> int:
        return self.total.count

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def cpu_us_per_req(self) -> float:
        n = max(1, self.issued)
        return self.cpu_s * 1e6 / n

    def merge(self, o: LoadResult) -> LoadResult:
        self.ttfb.merge(o.ttfb)
        self.total.merge(o.total)
        self.gap.merge(o.gap)
        for k, v in o.statuses.items():
            self.statuses[k] = self.statuses.get(k, 0) + v
        for k2, v in o.errors.items():
            self.errors[k2] = self.errors.get(k2, 0) + v
        self.completed += o.completed
        self.window = max(self.window, o.window)
        self.issued += o.issued
        self.bytes += o.bytes
        self.events += o.events
        self.cpu_s += o.cpu_s
        self.procs += o.procs
        return self

    def summary(self) -> dict[str, Any]:
        return {
            "rps": round(self.rps, 1),
            "completed": self.completed,
            "recorded": self.recorded,
            "issued": self.issued,
            "window_s": round(self.window, 3),
            "errors": self.error_count,
            "error_kinds": dict(self.errors),
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "bytes": self.bytes,
            "events": self.events,
            "ttfb_us": {**self.ttfb.percentiles(STD_PCTS), "mean": round(self.ttfb.mean()), "max": self.ttfb.max},
            "total_us": {**self.total.percentiles(STD_PCTS), "mean": round(self.total.mean()), "max": self.total.max},
            "max_gap_us": {**self.gap.percentiles(STD_PCTS), "max": self.gap.max},
            "loadgen_cpu_us_per_req": round(self.cpu_us_per_req, 2),
            "loadgen_procs": self.procs,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "ttfb": self.ttfb.to_dict(), "total": self.total.to_dict(), "gap": self.gap.to_dict(),
            "statuses": self.statuses, "errors": self.errors, "completed": self.completed,
            "window": self.window, "issued": self.issued, "bytes": self.bytes, "events": self.events,
            "cpu_s": self.cpu_s, "procs": self.procs,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoadResult:
        return cls(
            Histogram.from_dict(d["ttfb"]), Histogram.from_dict(d["total"]), Histogram.from_dict(d["gap"]),
            {int(k): v for k, v in d["statuses"].items()}, dict(d["errors"]), d["completed"], d["window"],
            d["issued"], d["bytes"], d["events"], d["cpu_s"], d["procs"],
        )
