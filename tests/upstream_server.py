"""A scriptable upstream HTTP/1.1 server on 127.0.0.1 for the tests.

It runs its own event loop in a background thread and parses requests with
h11. Each test sets ``server.handler``: a function from :class:`Received` to
:class:`Reply`. A reply is a status, headers and a list of body chunks, each
written as its own chunk of a chunked body (or one Content-Length body), with
optional pacing, a delay before the headers, and a mid-stream drop. Every
request is recorded (method, target, headers, body bytes) so tests can assert
byte identity of what the gateway sent.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import h11


@dataclass
class Received:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=lambda: [("content-type", "application/json")])
    chunks: list[bytes] = field(default_factory=list)
    delay_before_headers: float = 0.0
    interval: float = 0.0
    # Close the connection after this many chunks (mid-stream death).
    drop_after: int | None = None
    # Send Content-Length instead of chunked framing.
    content_length: bool = False
    # Keep the stream open after the chunks (the client must leave first).
    hang: bool = False
    # Write these pieces as they are after a chunked head instead of ``chunks``
    # (hand-made framing: extensions, trailers, splits inside a chunk header).
    # The message must end inside them; the connection stays open for reuse.
    raw_body: list[bytes] | None = None


def json_reply(body: bytes, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Reply:
    hdrs = [("content-type", "application/json")] + (headers or [])
    return Reply(status=status, headers=hdrs, chunks=[body], content_length=True)


def sse_reply(body: bytes | list[bytes], *, interval: float = 0.0, content_type: str = "text/event-stream") -> Reply:
    """An SSE body; a bytes body is split into one chunk per event (``\\n\\n``)."""
    if isinstance(body, bytes):
        parts = body.split(b"\n\n")
        chunks = [p + b"\n\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    else:
        chunks = body
    return Reply(headers=[("content-type", content_type)], chunks=chunks, interval=interval)


class UpstreamServer:
    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl = ssl_context  # serve HTTPS with this context
        self.handler: Callable[[Received], Reply] = lambda r: json_reply(b'{"ok":true}')
        self.requests: list[Received] = []
        self.open_connections = 0
        self.closed_midstream = 0
        self.connections_accepted = 0
        self._loop = asyncio.new_event_loop()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(512)
        self.port = sock.getsockname()[1]
        self._sock = sock
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._started.wait(5)

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, sock=self._sock,
                                                                                  ssl=self._ssl))
        self._started.set()
        self._loop.run_forever()

    def close(self) -> None:
        async def shutdown() -> None:
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_connections += 1
        self.connections_accepted += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = None
                body = bytearray()
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await reader.read(65536)
                        conn.receive_data(data)
                        if not data and conn.their_state is not h11.DONE and request is None:
                            return
                        continue
                    if isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                assert request is not None
                received = Received(
                    request.method.decode(),
                    request.target.decode(),
                    # latin-1: header bytes are not always UTF-8 (the fuzz tests send any byte).
                    {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers},
                    bytes(body),
                )
                self.requests.append(received)
                reply = self.handler(received)
                if not await self._reply(conn, reader, writer, reply):
                    return
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.RemoteProtocolError):
            return
        finally:
            self.open_connections -= 1
            writer.close()

    async def _reply(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reply: Reply
    ) -> bool:
        if reply.delay_before_headers:
            await asyncio.sleep(reply.delay_before_headers)
        headers = list(reply.headers)
        if reply.content_length:
            headers.append(("content-length", str(sum(len(c) for c in reply.chunks))))
        else:
            headers.append(("transfer-encoding", "chunked"))
        writer.write(conn.send(h11.Response(status_code=reply.status, headers=headers)))
        await writer.drain()
        if reply.raw_body is not None:
            for i, piece in enumerate(reply.raw_body):
                if i and reply.interval:
                    await asyncio.sleep(reply.interval)
                writer.write(piece)
                await writer.drain()
            # h11 framed none of it: mark our side done so the next request can come.
            conn.send(h11.EndOfMessage())
            return True
        for i, chunk in enumerate(reply.chunks):
            if reply.drop_after is not None and i >= reply.drop_after:
                self.closed_midstream += 1
                writer.transport.abort()
                return False
            if i and reply.interval:
                await asyncio.sleep(reply.interval)
            writer.write(conn.send(h11.Data(data=chunk)))
            await writer.drain()
        if reply.hang:
            # Hold the stream open until the gateway closes the connection (bounded).
            try:
                async with asyncio.timeout(30):
                    while await reader.read(65536):
                        pass
            except TimeoutError:
                pass
            self.closed_midstream += 1
            return False
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        return True


# -- an OpenAI-compatible upstream's answers ------------------------------------------

UPSTREAM_JSON = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"hi \xf0\x9f\x91\x8b"},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5},'
    b'"weird_extra":  [1, 2 ,3]}'
)


def sse_events(n: int = 20, *, usage: bool = False) -> bytes:
    out = []
    for i in range(n):
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
                 "choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}]}
        out.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    if usage:
        out.append(b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",'
                   b'"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}\n\n')
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


def provider_like_stream(r, n: int = 20, interval: float = 0.0):
    """Like a real provider: the usage chunk only when the request asked for it."""
    return sse_reply(sse_events(n, usage=b'"include_usage":true' in r.body), interval=interval)
