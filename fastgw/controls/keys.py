"""Virtual API keys: issue, list, revoke, and authenticate from an in-process cache.

Keys look like ``sk-fgw-<43 urlsafe chars>`` (32 random bytes, 256 bits). Only the
SHA-256 hex digest is stored. A fast unsalted hash is the right tool here: with 256 bits
of entropy no dictionary or brute-force attack on a leaked digest is feasible, so a slow
KDF (bcrypt/argon2) would only cost hot-path CPU. The plaintext is returned once, by
:meth:`KeyManager.create`, and never logged.

Authentication contract (:meth:`KeyManager.authenticate`), raising ``GatewayError``:

==========================  ======  ======================  =====================
situation                   status  type                    code
==========================  ======  ======================  =====================
unknown, malformed, revoked 401     invalid_request_error   invalid_api_key
expired                     401     invalid_request_error   expired_api_key
model not allowed           403     permission_error        model_not_allowed
over budget (this period)   429     insufficient_quota      insufficient_quota
==========================  ======  ======================  =====================

401 for expiry (not 403): the credential itself is no longer valid, the client must
replace it, exactly as for a revoked key; 403 means "valid key, not allowed to do this".
The 401 type follows what OpenAI itself sends for a bad key.

Caching: records are cached by hash for ``cache_ttl`` seconds (negative results too, in a
bounded map). A hit is a dict lookup plus the checks, with no I/O; a miss reads the store
once, and concurrent misses for the same hash share one read. ``revoke`` updates this
process's cache at once; other processes see it when their entry expires (<= TTL).

Spend: :meth:`KeyManager.record_spend` is synchronous and O(1); amounts are added to an
in-memory pending map that counts toward the budget in this process immediately and is
flushed to the ``spend`` table (additive upsert) by a background task every
``flush_interval`` s. :meth:`KeyManager.check` refuses a key whose known spend reached its
budget; before the request, :meth:`KeyManager.reserve` adds the request's worst-case cost
to the stored spend only if that stays within the budget (one conditional upsert, atomic
across instances sharing the store), and accounting later records the difference to the
real cost through ``record_spend`` (see :mod:`fastgw.controls.budgets`). Budget periods are calendar periods in
UTC (day; ISO week from Monday; month); a key without a period has a lifetime budget.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import fnmatch
import hashlib
import secrets
import time
from typing import Any, Literal

import msgspec

from fastgw.controls.store import Store
from fastgw.errors import GatewayError

KEY_PREFIX = "sk-fgw-"
DISPLAY_PREFIX_LEN = len(KEY_PREFIX) + 4
BudgetPeriod = Literal["daily", "weekly", "monthly"]
PERIODS = ("daily", "weekly", "monthly")


class KeyRecord(msgspec.Struct, kw_only=True):
    id: str
    name: str
    prefix: str
    models: list[str] = []
    budget_usd: float | None = None
    budget_period: BudgetPeriod | None = None
    spend_usd: float = 0.0
    """Spend in the current budget period, as stored when the record was loaded."""
    period_start: float = 0.0
    """Unix time the current budget period started (0 for lifetime budgets)."""
    expires_at: float | None = None
    metadata: dict[str, Any] = {}
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    concurrency_limit: int | None = None
    revoked: bool = False
    created_at: float = 0.0


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def period_start(period: str | None, now: float) -> float:
    """Start (unix seconds, UTC) of the budget period containing ``now``."""
    if period is None:
        return 0.0
    t = time.gmtime(now)
    day0 = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
    if period == "daily":
        return float(day0)
    if period == "weekly":
        return float(day0 - t.tm_wday * 86400)
    if period == "monthly":
        return float(calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0)))
    raise ValueError(f"unknown budget period: {period!r}")


def model_allowed(patterns: list[str], model: str) -> bool:
    """fnmatch-style patterns (``gpt-4o*``, ``openai/*``); an empty list allows every model."""
    if not patterns:
        return True
    return any(p == model or fnmatch.fnmatchcase(model, p) for p in patterns)


_COLS = (
    "id, name, prefix, models, budget_usd, budget_period, expires_at, metadata, "
    "rpm_limit, tpm_limit, revoked, created_at, concurrency_limit"
)
_json_enc = msgspec.json.Encoder()


def _row_to_record(row: tuple[Any, ...], spend: float, pstart: float) -> KeyRecord:
    return KeyRecord(
        id=row[0],
        name=row[1],
        prefix=row[2],
        models=msgspec.json.decode(row[3]),
        budget_usd=row[4],
        budget_period=row[5],
        expires_at=row[6],
        metadata=msgspec.json.decode(row[7]),
        rpm_limit=row[8],
        tpm_limit=row[9],
        revoked=bool(row[10]),
        created_at=row[11],
        concurrency_limit=row[12],
        spend_usd=spend,
        period_start=pstart,
    )


def _invalid() -> GatewayError:
    return GatewayError(
        401,
        "Incorrect API key provided.",
        type="invalid_request_error",
        code="invalid_api_key",
    )


def over_budget() -> GatewayError:
    return GatewayError(
        429,
        "This API key has exceeded its budget for the current period.",
        type="insufficient_quota",
        code="insufficient_quota",
        # Retrying cannot help until the budget is raised or the period ends; the
        # OpenAI SDKs honour this and do not retry the 429.
        headers=[(b"x-should-retry", b"false")],
    )


class KeyManager:
    """Issue and check virtual keys. See the module docstring for the full contract."""

    def __init__(
        self,
        store: Store,
        cache_ttl: float = 5.0,
        *,
        flush_interval: float = 1.0,
        negative_cache_size: int = 10000,
    ) -> None:
        self.store = store
        self.cache_ttl = cache_ttl
        self.flush_interval = flush_interval
        self._neg_max = negative_cache_size
        # hash -> (record, expiry on the monotonic clock, spend-write generation at read)
        self._cache: dict[str, tuple[KeyRecord, float, int]] = {}
        self._gen = 0
        self._negative: dict[str, float] = {}
        self._inflight: dict[str, asyncio.Future[KeyRecord | None]] = {}
        # (key_id, period_start) -> USD not yet written / being written
        self._pending: dict[tuple[str, float], float] = {}
        self._flushing: dict[tuple[str, float], float] = {}
        self._periods: dict[str, str | None] = {}  # key_id -> budget_period, for record_spend
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self.flush_errors = 0
        self.store_reads = 0

    # -- admin operations -------------------------------------------------------------

    async def create(
        self,
        name: str,
        *,
        models: list[str] | None = None,
        budget_usd: float | None = None,
        budget_period: BudgetPeriod | None = None,
        expires_at: float | None = None,
        metadata: dict[str, Any] | None = None,
        rpm_limit: int | None = None,
        tpm_limit: int | None = None,
        concurrency_limit: int | None = None,
    ) -> tuple[str, KeyRecord]:
        """Create a key. Returns ``(plaintext, record)``: the plaintext is never seen again."""
        if not name:
            raise ValueError("a key needs a name")
        if budget_period is not None and budget_period not in PERIODS:
            raise ValueError(f"budget_period must be one of {', '.join(PERIODS)}")
        if budget_usd is not None and budget_usd < 0:
            raise ValueError("budget_usd must be >= 0")
        for field, value in (("rpm_limit", rpm_limit), ("tpm_limit", tpm_limit),
                             ("concurrency_limit", concurrency_limit)):
            if value is not None and value < 1:
                raise ValueError(f"{field} must be >= 1")
        token = KEY_PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        rec = KeyRecord(
            id="key_" + secrets.token_hex(8),
            name=name,
            prefix=token[:DISPLAY_PREFIX_LEN],
            models=list(models or []),
            budget_usd=budget_usd,
            budget_period=budget_period,
            period_start=period_start(budget_period, now),
            expires_at=expires_at,
            metadata=dict(metadata or {}),
            rpm_limit=rpm_limit,
            tpm_limit=tpm_limit,
            concurrency_limit=concurrency_limit,
            created_at=now,
        )
        await self.store.execute(
            f"INSERT INTO keys (hash, {_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                hash_key(token),
                rec.id,
                rec.name,
                rec.prefix,
                _json_enc.encode(rec.models).decode(),
                rec.budget_usd,
                rec.budget_period,
                rec.expires_at,
                _json_enc.encode(rec.metadata).decode(),
                rec.rpm_limit,
                rec.tpm_limit,
                0,
                rec.created_at,
                rec.concurrency_limit,
            ),
        )
        return token, rec

    async def _spend_for(self, key_id: str, period: str | None, now: float) -> tuple[float, float]:
        ps = period_start(period, now)
        row = await self.store.fetchone(
            "SELECT usd FROM spend WHERE key_id = ? AND period_start = ?", (key_id, ps)
        )
        return (float(row[0]) if row else 0.0), ps

    async def list(self) -> list[KeyRecord]:
        """All keys (revoked ones included), oldest first, with current-period spend."""
        rows = await self.store.fetchall(f"SELECT {_COLS} FROM keys ORDER BY created_at, id")
        now = time.time()
        out = []
        for row in rows:
            spend, ps = await self._spend_for(row[0], row[5], now)
            rec = _row_to_record(row, spend, ps)
            rec.spend_usd = self.current_spend(rec, now)
            out.append(rec)
        return out

    async def get(self, key_id_or_prefix: str) -> KeyRecord | None:
        rows = await self.store.fetchall(
            f"SELECT {_COLS} FROM keys WHERE id = ? OR prefix = ?", (key_id_or_prefix, key_id_or_prefix)
        )
        if len(rows) != 1:
            return None
        now = time.time()
        spend, ps = await self._spend_for(rows[0][0], rows[0][5], now)
        return _row_to_record(rows[0], spend, ps)

    async def revoke(self, key_id_or_prefix: str) -> bool:
        """Revoke by id, or by display prefix when that prefix is unique.

        Returns False when nothing matched; raises ValueError when a prefix is ambiguous.
        Takes effect in this process at once, elsewhere within ``cache_ttl``.
        """
        rows = await self.store.fetchall(
            "SELECT id FROM keys WHERE id = ? OR prefix = ?", (key_id_or_prefix, key_id_or_prefix)
        )
        ids = {r[0] for r in rows}
        if not ids:
            return False
        if len(ids) > 1:
            raise ValueError("prefix matches several keys; revoke by id")
        key_id = ids.pop()
        await self.store.execute(
            "UPDATE keys SET revoked = 1, revoked_at = ? WHERE id = ?", (time.time(), key_id)
        )
        self.invalidate(key_id)
        return True

    def invalidate(self, key_id: str | None = None) -> None:
        """Drop cached entries (all, or one key's) so the next check reads the store."""
        if key_id is None:
            self._cache.clear()
            self._negative.clear()
            return
        for h in [h for h, (rec, _, _) in self._cache.items() if rec.id == key_id]:
            del self._cache[h]

    # -- hot path -----------------------------------------------------------------------

    def current_spend(self, rec: KeyRecord, now: float | None = None) -> float:
        """Stored spend for the current period plus this process's unflushed spend."""
        now = time.time() if now is None else now
        ps = period_start(rec.budget_period, now)
        base = rec.spend_usd if ps == rec.period_start else 0.0
        k = (rec.id, ps)
        return base + self._pending.get(k, 0.0) + self._flushing.get(k, 0.0)

    def check(self, rec: KeyRecord, model: str, now: float | None = None) -> KeyRecord:
        """Apply the revoke / expiry / model / budget checks to a loaded record."""
        if rec.revoked:
            raise _invalid()
        now = time.time() if now is None else now
        if rec.expires_at is not None and now >= rec.expires_at:
            raise GatewayError(
                401, "This API key has expired.", type="invalid_request_error", code="expired_api_key"
            )
        if not model_allowed(rec.models, model):
            raise GatewayError(
                403,
                f"This API key is not allowed to use model '{model}'.",
                type="permission_error",
                param="model",
                code="model_not_allowed",
            )
        if rec.budget_usd is not None and self.current_spend(rec, now) >= rec.budget_usd:
            raise over_budget()
        return rec

    async def reserve(self, rec: KeyRecord, usd: float) -> bool:
        """Add ``usd`` to the key's stored spend only if that keeps it within the budget.

        One conditional upsert: the database checks and adds in one statement, so gateways
        racing on the same key can never spend past its budget between them.
        """
        assert rec.budget_usd is not None
        if usd > rec.budget_usd:
            return False
        ps = period_start(rec.budget_period, time.time())
        self._periods[rec.id] = rec.budget_period
        changed = await self.store.execute(
            "INSERT INTO spend (key_id, period_start, usd) VALUES (?, ?, ?) "
            "ON CONFLICT (key_id, period_start) DO UPDATE SET usd = spend.usd + excluded.usd "
            "WHERE spend.usd + excluded.usd <= ?",
            (rec.id, ps, usd, rec.budget_usd),
        )
        return changed > 0

    def lookup_cached(self, token: str) -> KeyRecord | None:
        """The cached, unexpired record for ``token``, or None (no I/O, no checks)."""
        entry = self._cache.get(hash_key(token))
        if entry is not None and entry[1] > time.monotonic():
            return entry[0]
        return None

    async def authenticate(self, token: str, model: str) -> KeyRecord:
        """Check ``token`` for ``model``; return its record or raise GatewayError."""
        if not token.startswith(KEY_PREFIX):
            raise _invalid()
        h = hash_key(token)
        mono = time.monotonic()
        entry = self._cache.get(h)
        if entry is not None and entry[1] > mono:
            return self.check(entry[0], model)
        neg = self._negative.get(h)
        if neg is not None and neg > mono:
            raise _invalid()
        rec = await self._load(h)
        if rec is None:
            raise _invalid()
        return self.check(rec, model)

    async def _load(self, h: str) -> KeyRecord | None:
        fut = self._inflight.get(h)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[h] = fut
        try:
            rec = await self._read(h)
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # mark retrieved: waiters (if any) re-raise it
            raise
        else:
            fut.set_result(rec)
        finally:
            del self._inflight[h]
        return rec

    async def _read(self, h: str) -> KeyRecord | None:
        self.store_reads += 1
        row = await self.store.fetchone(f"SELECT {_COLS} FROM keys WHERE hash = ?", (h,))
        expiry = time.monotonic() + self.cache_ttl
        if row is None:
            if len(self._negative) >= self._neg_max:
                self._negative.clear()
            self._negative[h] = expiry
            return None
        gen = self._gen  # store calls run in submission order: this read sees writes < gen
        spend, ps = await self._spend_for(row[0], row[5], time.time())
        rec = _row_to_record(row, spend, ps)
        self._cache[h] = (rec, expiry, gen)
        self._periods[rec.id] = rec.budget_period
        return rec

    def record_spend(self, key_id: str, usd: float | None) -> None:
        """Add ``usd`` to the key's spend. Sync, O(1), never blocks; flushed in background."""
        if not usd:
            return
        ps = period_start(self._periods.get(key_id), time.time())
        k = (key_id, ps)
        self._pending[k] = self._pending.get(k, 0.0) + usd
        if self._task is None:
            with contextlib.suppress(RuntimeError):  # no running loop: flushed by close()
                self.start()

    # -- background flushing ----------------------------------------------------------

    def start(self) -> None:
        """Start the spend flusher on the running loop (idempotent)."""
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._flusher(), name="fastgw-spend-flush")

    async def _flusher(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.flush_errors += 1

    async def flush(self) -> None:
        """Write pending spend now. On failure the amounts go back to pending."""
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        for k, v in batch.items():
            self._flushing[k] = self._flushing.get(k, 0.0) + v
        self._gen += 1
        gen = self._gen
        try:
            await self.store.executemany(
                "INSERT INTO spend (key_id, period_start, usd) VALUES (?, ?, ?) "
                "ON CONFLICT (key_id, period_start) DO UPDATE SET usd = spend.usd + excluded.usd",
                [(k[0], k[1], v) for k, v in batch.items()],
            )
        except BaseException:
            for k, v in batch.items():
                self._pending[k] = self._pending.get(k, 0.0) + v
            raise
        finally:
            for k, v in batch.items():
                left = self._flushing.get(k, 0.0) - v
                if abs(left) < 1e-12:
                    self._flushing.pop(k, None)
                else:
                    self._flushing[k] = left
        # Reflect the write in cached records read before it, so the amount still counts
        # once it left the flushing map; records read after it already include it.
        for h, (rec, exp, g) in list(self._cache.items()):
            add = batch.get((rec.id, rec.period_start))
            if add and g < gen:
                rec = msgspec.structs.replace(rec, spend_usd=rec.spend_usd + add)
                self._cache[h] = (rec, exp, gen)

    async def close(self) -> None:
        """Stop the flusher and write any pending spend. Does not close the store."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
