"""Request log: one record per request, written in batches off the request path.

Hot path contract: :meth:`RequestLogger.log` is synchronous, O(1) and never blocks or
awaits; call it from the event loop thread. Records go into a bounded deque; when it is
full the record is dropped and ``dropped`` counts it (export it as
``fastgw_log_dropped_total``; ``depth`` as ``fastgw_log_queue_depth``). A background task
(``start()``) drains the deque every ``flush_interval`` s, or as soon as ``batch_size``
records wait, with one ``executemany`` per batch. ``await stop()`` drains everything
before returning, so a graceful shutdown loses nothing. A failed write puts the batch
back (as far as the queue has room) and is retried at the next interval. Rows older than
``retention_days`` are deleted every ``retention_interval`` s.

Bodies (the audit log) are kept only when ``log_bodies`` is on: the caller may attach the
raw request/response bytes to the record (check ``logger.log_bodies`` first to avoid
copying them for nothing); the writer, in a worker thread, caps each at ``body_cap``
bytes and redacts secrets (:func:`redact`).

Conversations (the audit thread): a record's ``conversation_id`` is the client's
``x-fastgw-conversation-id`` header when sent, else :func:`derive_conversation_id`: a
hash of the key id and the first system and first user message of the request. Every
turn of a chat resends that prefix, so all turns of one conversation share the id.
:func:`get_log` returns one entry plus its ``thread``: the earlier records (same key,
same conversation id), oldest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from collections import deque
from typing import Any

import msgspec

from fastgw.controls.store import Store


class RequestRecord(msgspec.Struct, kw_only=True):
    request_id: str
    ts: float = 0.0  # unix seconds the request started; 0 -> filled at log() time
    key_id: str | None = None
    key_name: str | None = None
    provider: str | None = None
    model: str | None = None
    path: str | None = None  # fast | rewritten | translated | passthrough
    stream: bool = False
    status: int = 0
    error_type: str | None = None
    ttfb_ms: float | None = None
    total_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: float | None = None
    # Usage is fastgw's estimate (a stream cancelled before the provider's usage arrived).
    usage_estimated: bool = False
    conversation_id: str | None = None
    # Every upstream attempt of a routed request, "provider/model:outcome" space-separated.
    attempts: str | None = None
    request_body: bytes | str | None = None
    response_body: bytes | str | None = None


COLUMNS = (
    "ts",
    "day",
    "request_id",
    "key_id",
    "key_name",
    "provider",
    "model",
    "path",
    "stream",
    "status",
    "error_type",
    "ttfb_ms",
    "total_ms",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_usd",
    "usage_estimated",
    "conversation_id",
    "attempts",
    "request_body",
    "response_body",
)
_INSERT = f"INSERT INTO request_log ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
_LIST_COLS = ("id", *COLUMNS[:-2])

# -- redaction ----------------------------------------------------------------------

REDACTED = "[REDACTED]"
_SECRET_FIELDS = (
    "api_key|apikey|api-key|x-api-key|x-goog-api-key|authorization|proxy-authorization|"
    "password|secret|client_secret|access_token|refresh_token|master_key"
)
_PATTERNS = [
    (re.compile(r'("(?:' + _SECRET_FIELDS + r')"\s*:\s*)"(?:[^"\\]|\\.)*"', re.I), r'\1"' + REDACTED + '"'),
    (re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=\-]{6,}", re.I), r"\1 " + REDACTED),
    (re.compile(r"sk-[A-Za-z0-9_\-]{6,}"), REDACTED),
    (re.compile(r"AIza[0-9A-Za-z_\-]{20,}"), REDACTED),
]
_PARTIAL_TAIL = re.compile(r"(sk-|AIza|\bBearer\s+)[A-Za-z0-9._~+/=\-]*$", re.I)


def redact(text: str) -> str:
    """Replace API keys (``sk-...``, Google ``AIza...``), ``Bearer``/``Basic`` credentials
    and JSON members named like secrets (``api_key``, ``authorization``, ...) with
    ``[REDACTED]``."""
    for pat, repl in _PATTERNS:
        text = pat.sub(repl, text)
    return text


def cap_and_redact(body: bytes | str | None, cap: int) -> str | None:
    """Redacted text of at most ``cap`` characters (plus a truncation note)."""
    if body is None:
        return None
    raw = body.encode() if isinstance(body, str) else body
    window = raw[: max(cap * 4, cap + 65536)]
    text = redact(window.decode("utf-8", errors="replace"))
    if len(text) <= cap and len(window) == len(raw):
        return text
    # a secret cut in half by the cap must not leak its first characters
    return _PARTIAL_TAIL.sub(REDACTED, text[:cap]) + f"...[truncated: {len(raw)} bytes]"


# -- conversations ------------------------------------------------------------------


class _Msg(msgspec.Struct):
    role: str = ""
    content: msgspec.Raw = msgspec.Raw(b"null")


class _Convo(msgspec.Struct):
    messages: list[_Msg] | None = None
    input: msgspec.Raw | None = None  # Responses API
    instructions: msgspec.Raw | None = None


_convo_dec = msgspec.json.Decoder(_Convo)


def derive_conversation_id(key_id: str | None, body: bytes) -> str | None:
    """Conversation id of a chat / Responses request body (see the module docstring)."""
    try:
        c = _convo_dec.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    msgs = c.messages
    system: bytes = bytes(c.instructions) if c.instructions is not None else b""
    if msgs is None and c.input is not None:
        raw = bytes(c.input)
        if raw[:1] == b'"':
            msgs = [_Msg("user", msgspec.Raw(raw))]
        else:
            try:
                msgs = msgspec.json.decode(raw, type=list[_Msg])
            except (msgspec.DecodeError, msgspec.ValidationError):
                return None
    if not msgs:
        return None
    user = next((bytes(m.content) for m in msgs if m.role == "user"), None)
    if user is None:
        return None
    if not system:
        system = next((bytes(m.content) for m in msgs if m.role in ("system", "developer")), b"")
    h = hashlib.sha256()
    for part in ((key_id or "").encode(), system, user):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return "c_" + h.hexdigest()[:24]


# -- the logger ---------------------------------------------------------------------


_last_day: tuple[int, str] = (-1, "")


def _day(ts: float) -> str:
    """The UTC date of ``ts`` (``YYYY-MM-DD``), formatted once per day, not once per row."""
    global _last_day
    n = int(ts // 86400)
    if n != _last_day[0]:
        _last_day = (n, time.strftime("%Y-%m-%d", time.gmtime(n * 86400)))
    return _last_day[1]


class RequestLogger:
    """Batched, bounded, non-blocking request log writer. See the module docstring."""

    def __init__(
        self,
        store: Store,
        *,
        queue_size: int = 10000,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        log_bodies: bool = False,
        body_cap: int = 16384,
        retention_days: float | None = 30,
        retention_interval: float = 3600.0,
    ) -> None:
        self.store = store
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.log_bodies = log_bodies
        self.body_cap = body_cap
        self.retention_days = retention_days
        self.retention_interval = retention_interval
        self._q: deque[RequestRecord] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._next_purge = 0.0
        self.dropped = 0
        self.written = 0
        self.write_errors = 0
        self.purged = 0

    @property
    def depth(self) -> int:
        return len(self._q)

    def log(self, rec: RequestRecord) -> None:
        """Enqueue one record. Sync, O(1), never blocks; drops (and counts) when full."""
        if len(self._q) >= self.queue_size:
            self.dropped += 1
            return
        if not rec.ts:
            rec.ts = time.time()
        if not self.log_bodies:
            rec.request_body = rec.response_body = None
        self._q.append(rec)
        if len(self._q) >= self.batch_size and self._wake is not None:
            self._wake.set()

    def start(self) -> None:
        """Start the writer on the running loop (idempotent)."""
        if self._task is None:
            self._stopping = False
            self._wake = asyncio.Event()
            self._next_purge = time.monotonic()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="fastgw-reqlog")

    async def stop(self) -> None:
        """Write everything queued, then stop the writer. Does not close the store."""
        if self._task is not None:
            self._stopping = True
            assert self._wake is not None
            self._wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            try:
                await self.flush()
                if self.retention_days is not None and time.monotonic() >= self._next_purge:
                    self._next_purge = time.monotonic() + self.retention_interval
                    await self.purge()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.write_errors += 1

    def _rows(self, batch: list[RequestRecord]) -> list[tuple[Any, ...]]:
        cap = self.body_cap
        return [
            (
                r.ts,
                _day(r.ts),
                r.request_id,
                r.key_id,
                r.key_name,
                r.provider,
                r.model,
                r.path,
                int(r.stream),
                r.status,
                r.error_type,
                r.ttfb_ms,
                r.total_ms,
                r.prompt_tokens,
                r.completion_tokens,
                r.cached_tokens,
                r.reasoning_tokens,
                r.cost_usd,
                int(r.usage_estimated),
                r.conversation_id,
                r.attempts,
                cap_and_redact(r.request_body, cap),
                cap_and_redact(r.response_body, cap),
            )
            for r in batch
        ]

    async def flush(self) -> None:
        """Write all queued records now, batch by batch. On a store error the batch is
        put back (as far as there is room) and the error propagates."""
        q = self._q
        while q:
            batch = [q.popleft() for _ in range(min(self.batch_size, len(q)))]
            try:
                if any(r.request_body is not None or r.response_body is not None for r in batch):
                    rows = await asyncio.get_running_loop().run_in_executor(None, self._rows, batch)
                else:
                    rows = self._rows(batch)
                await self.store.executemany(_INSERT, rows)
            except BaseException:
                room = self.queue_size - len(q)
                keep = batch[:room] if room > 0 else []
                self.dropped += len(batch) - len(keep)
                q.extendleft(reversed(keep))
                raise
            self.written += len(batch)

    async def purge(self, now: float | None = None) -> int:
        """Delete rows older than ``retention_days``; returns how many."""
        if self.retention_days is None:
            return 0
        cutoff = (time.time() if now is None else now) - self.retention_days * 86400
        n = await self.store.execute("DELETE FROM request_log WHERE ts < ?", (cutoff,))
        self.purged += max(n, 0)
        return n


# -- queries (admin API) ------------------------------------------------------------


def _time_window(where: list[str], params: list[Any], since: float | None, until: float | None) -> None:
    """Add the clauses for ``since <= ts < until`` (each bound only when given)."""
    if since is not None:
        where.append("ts >= ?")
        params.append(since)
    if until is not None:
        where.append("ts < ?")
        params.append(until)


def _where_sql(where: list[str]) -> str:
    return " WHERE " + " AND ".join(where) if where else ""


async def query_logs(
    store: Store,
    *,
    limit: int = 50,
    cursor: str | None = None,
    model: str | None = None,
    key: str | None = None,
    status: int | None = None,
    provider: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first (by insertion), without bodies. Returns (rows, next_cursor or None).
    ``key`` matches a key id or a key name."""
    limit = max(1, min(int(limit), 1000))
    where: list[str] = []
    params: list[Any] = []
    if cursor:
        where.append("id < ?")
        params.append(int(cursor))
    for col, val in (("model", model), ("provider", provider), ("status", status)):
        if val is not None:
            where.append(f"{col} = ?")
            params.append(val)
    if key is not None:
        where.append("(key_id = ? OR key_name = ?)")
        params += [key, key]
    _time_window(where, params, since, until)
    sql = f"SELECT {', '.join(_LIST_COLS)} FROM request_log{_where_sql(where)} ORDER BY id DESC LIMIT ?"
    rows = await store.fetchall(sql, (*params, limit))
    out = [_as_dict(_LIST_COLS, r) for r in rows]
    nxt = str(out[-1]["id"]) if len(out) == limit else None
    return out, nxt


def _as_dict(cols: tuple[str, ...], row: tuple[Any, ...]) -> dict[str, Any]:
    d = dict(zip(cols, row, strict=True))
    if "stream" in d:
        d["stream"] = bool(d["stream"])
    if "usage_estimated" in d:
        d["usage_estimated"] = bool(d["usage_estimated"])
    d.pop("day", None)
    return d


async def get_log(store: Store, request_id: str) -> dict[str, Any] | None:
    """One entry (with bodies) and its ``thread``: earlier turns of its conversation."""
    cols = ("id", *COLUMNS)
    row = await store.fetchone(
        f"SELECT {', '.join(cols)} FROM request_log WHERE request_id = ? ORDER BY id DESC LIMIT 1",
        (request_id,),
    )
    if row is None:
        return None
    entry = _as_dict(cols, row)
    thread: list[dict[str, Any]] = []
    if entry["conversation_id"]:
        same_key = "key_id IS NULL" if entry["key_id"] is None else "key_id = ?"
        key_param = () if entry["key_id"] is None else (entry["key_id"],)
        rows = await store.fetchall(
            f"SELECT {', '.join(cols)} FROM request_log WHERE conversation_id = ? AND {same_key} "
            "AND id <> ? AND ts <= ? ORDER BY ts, id",
            (entry["conversation_id"], *key_param, entry["id"], entry["ts"]),
        )
        thread = [_as_dict(cols, r) for r in rows]
    entry["thread"] = thread
    return entry


GROUPS = {"key": "key_id", "model": "model", "provider": "provider", "day": "day"}


async def usage_summary(
    store: Store, group_by: str = "key", since: float | None = None, until: float | None = None
) -> list[dict[str, Any]]:
    """Requests, tokens and cost per key / model / provider / day (UTC).

    ``cost_usd`` sums the priced requests only; ``unpriced_requests`` counts those whose
    model had no price (cost null), so a partial total is never mistaken for a full one.
    """
    col = GROUPS.get(group_by)
    if col is None:
        raise ValueError(f"group_by must be one of {', '.join(GROUPS)}")
    where: list[str] = []
    params: list[Any] = []
    _time_window(where, params, since, until)
    sql = (
        f"SELECT {col}, MAX(key_name), COUNT(*), "
        "SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), "
        "SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens), SUM(reasoning_tokens), "
        "SUM(cost_usd), COUNT(*) - COUNT(cost_usd), AVG(total_ms) FROM request_log"
        f"{_where_sql(where)} GROUP BY {col} ORDER BY {col}"
    )
    out = []
    for r in await store.fetchall(sql, params):
        d: dict[str, Any] = {
            group_by: r[0],
            "requests": int(r[2]),
            "errors": int(r[3] or 0),
            "prompt_tokens": int(r[4] or 0),
            "completion_tokens": int(r[5] or 0),
            "cached_tokens": int(r[6] or 0),
            "reasoning_tokens": int(r[7] or 0),
            "cost_usd": None if r[8] is None else float(r[8]),
            "unpriced_requests": int(r[9]),
            "avg_total_ms": None if r[10] is None else float(r[10]),
        }
        if group_by == "key":
            d["key_name"] = r[1]
        out.append(d)
    return out
