"""The soak script's leak rule: a rising floor fails, load-driven fd swings do not."""

from __future__ import annotations

from types import ModuleType

from scripts_support import load_script


def load_soak() -> ModuleType:
    return load_script("soak")


def samples(fds: list[float], rss: list[float] | None = None) -> list[dict[str, float]]:
    rss = rss or [80.0] * len(fds)
    return [{"t": float(i * 2), "fds": f, "rss_mb": r} for i, (f, r) in enumerate(zip(fds, rss, strict=True))]


def test_pool_swings_are_not_a_leak() -> None:
    soak = load_soak()
    # Bursts open upstream connections that close when idle: up and down, flat floor.
    fds = [400.0] * 10 + [200, 250, 190, 300, 195, 280, 190, 210, 290, 192] * 4
    verdict = soak.judge(samples(fds), 0.2, 8.0, 8.0)
    assert verdict["verdict"] == "pass", verdict


def test_rising_floor_is_a_leak() -> None:
    soak = load_soak()
    fds = [200.0 + i for i in range(60)]  # one more fd every sample, never released
    verdict = soak.judge(samples(fds), 0.2, 8.0, 8.0)
    assert verdict["verdict"] == "fail" and "floor of open fds" in verdict["reason"]


def test_growing_memory_is_a_leak() -> None:
    soak = load_soak()
    rss = [80.0 + 0.5 * i for i in range(60)]
    verdict = soak.judge(samples([200.0] * 60, rss), 0.2, 8.0, 8.0)
    assert verdict["verdict"] == "fail" and "RSS grows" in verdict["reason"]
