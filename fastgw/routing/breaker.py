"""Passive circuit breaker per deployment: real requests' outcomes open, probe and close it.

States: *closed* (traffic flows), *open* (no traffic until the cool-down ends),
*half-open* (up to ``half_open_probes`` real requests probe it; a success closes
it, a failure opens it again). It opens on ``consecutive_failures`` failures in a
row, or when ``error_rate`` of the requests in the current window (at least
``min_requests`` of them) failed. Only failures that are the deployment's fault
are reported here (connect errors, timeouts, 408/429/5xx); the attempt loop never
reports a client's mistake. Every call is a few attribute operations (hot path).
"""

from __future__ import annotations

from fastgw.routing.policy import BreakerConfig

CLOSED, HALF_OPEN, OPEN = 0, 1, 2
STATE_NAMES = ("closed", "half_open", "open")


class Breaker:
    __slots__ = ("cfg", "enabled", "failures", "opened_until", "probes", "state", "streak", "window_n",
                 "window_start")

    def __init__(self, cfg: BreakerConfig) -> None:
        self.cfg = cfg
        self.enabled = cfg.enabled
        self.state = CLOSED
        self.streak = 0
        self.window_start = 0.0
        self.window_n = 0
        self.failures = 0
        self.opened_until = 0.0
        self.probes = 0

    def available(self, now: float) -> bool:
        """Whether a request may go here now (does not take a probe slot)."""
        state = self.state
        if state == CLOSED:
            return True
        if state == OPEN:
            return now >= self.opened_until
        return self.probes < self.cfg.half_open_probes

    def allow(self, now: float) -> bool:
        """Take the right to send one request (a probe slot when half-open)."""
        state = self.state
        if state == CLOSED:
            return True
        if state == OPEN:
            if now < self.opened_until:
                return False
            self.state = HALF_OPEN
            self.probes = 0
        if self.probes >= self.cfg.half_open_probes:
            return False
        self.probes += 1
        return True

    def success(self, now: float) -> None:
        self.streak = 0
        if self.state == HALF_OPEN:
            self._close()
            return
        self._count(now, False)

    def failure(self, now: float) -> None:
        if not self.enabled:
            return
        if self.state == HALF_OPEN:
            self._open(now)
            return
        if self.state == OPEN:
            return
        self.streak += 1
        cfg = self.cfg
        if cfg.consecutive_failures and self.streak >= cfg.consecutive_failures:
            self._open(now)
            return
        self._count(now, True)
        if cfg.error_rate and self.window_n >= cfg.min_requests and self.failures >= cfg.error_rate * self.window_n:
            self._open(now)

    def neutral(self) -> None:
        """An allowed request ended with no verdict on the deployment (client error, client left)."""
        if self.state == HALF_OPEN and self.probes:
            self.probes -= 1

    def _count(self, now: float, failed: bool) -> None:
        if now - self.window_start > self.cfg.window_s:
            self.window_start = now
            self.window_n = 0
            self.failures = 0
        self.window_n += 1
        if failed:
            self.failures += 1

    def _open(self, now: float) -> None:
        self.state = OPEN
        self.opened_until = now + self.cfg.cooldown_s
        self.probes = 0
        self.streak = 0

    def _close(self) -> None:
        self.state = CLOSED
        self.probes = 0
        self.streak = 0
        self.window_n = 0
        self.failures = 0

    def retry_in(self, now: float) -> float:
        """Seconds until this deployment may take traffic again (0 when it may now)."""
        return max(0.0, self.opened_until - now) if self.state == OPEN else 0.0

    @property
    def state_name(self) -> str:
        return STATE_NAMES[self.state]
