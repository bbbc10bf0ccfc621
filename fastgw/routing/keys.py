"""API-key rotation for one provider: several keys in turn, a refused key set aside.

A provider configured with ``api_keys`` gets a :class:`KeyRing`. Each attempt
takes the next key in turn (:meth:`KeyRing.pick`), skipping keys that are
cooling down. A key the upstream refuses (401/403), or that is rate limited
(429) twice in a row, is set aside for ``key_cooldown_s`` and logged, masked.
When every key is cooling down the one that comes back first is used anyway:
a request is never refused for want of a key. Each key's request headers are
built and checked once.
"""

from __future__ import annotations

import logging

from fastgw.config import ProviderConfig, mask_secret
from fastgw.upstream.connection import HeaderItems

log = logging.getLogger("fastgw.routing.keys")

# 429s in a row on one key before it is set aside.
RATE_LIMIT_STREAK = 2


class ApiKey:
    __slots__ = ("auth_headers", "cool_until", "json_request_headers", "masked", "streak_429")

    def __init__(self, secret: str, auth_headers: list[tuple[bytes, bytes]], json_request_headers: HeaderItems) -> None:
        self.masked = mask_secret(secret)
        self.auth_headers = auth_headers
        self.json_request_headers = json_request_headers
        self.cool_until = 0.0
        self.streak_429 = 0


class KeyRing:
    __slots__ = ("cooldown", "keys", "provider", "turn")

    def __init__(self, provider: str, keys: list[ApiKey], cooldown: float) -> None:
        self.provider = provider
        self.keys = keys
        self.cooldown = cooldown
        self.turn = 0

    def pick(self, now: float) -> ApiKey:
        keys = self.keys
        n = len(keys)
        for _ in range(n):
            key = keys[self.turn % n]
            self.turn += 1
            if key.cool_until <= now:
                return key
        return min(keys, key=lambda k: k.cool_until)

    def usable(self, now: float) -> int:
        return sum(1 for k in self.keys if k.cool_until <= now)

    def answered(self, key: ApiKey, status: int, now: float) -> bool:
        """Note the upstream's status for ``key``; True when the key was just set aside."""
        if status == 429:
            key.streak_429 += 1
            if key.streak_429 < RATE_LIMIT_STREAK:
                return False
            reason = f"{RATE_LIMIT_STREAK} rate limits in a row"
        elif status in (401, 403):
            reason = f"refused ({status})"
        else:
            key.streak_429 = 0
            return False
        key.streak_429 = 0
        key.cool_until = now + self.cooldown
        log.warning("provider %s: API key %s %s; set aside for %.0f s", self.provider, key.masked, reason,
                    self.cooldown)
        return True

    def state(self, now: float) -> list[dict[str, object]]:
        return [{"key": k.masked, "cooling_down_s": round(max(0.0, k.cool_until - now), 1)} for k in self.keys]


def secrets_of(cfg: ProviderConfig) -> list[str]:
    """Every credential the provider is configured with (for redaction)."""
    return [k for k in (cfg.api_key, *cfg.api_keys) if k]
