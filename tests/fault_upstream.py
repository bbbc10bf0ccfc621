"""A misbehaving upstream on 127.0.0.1, one fault on command, for the fault tests.

A raw asyncio server in a background thread (no HTTP library: the faults are
byte-level). It reads one request head (and its ``content-length`` body), then acts
out ``server.fault``:

* ``ok``: a proper keep-alive JSON (or SSE, when the request asked to stream) answer;
* ``reset_before_headers`` / ``reset_after_headers``: a TCP reset (SO_LINGER 0) before
  any byte, or after a chunked SSE head and one event;
* ``slow_headers``: the head only after ``delay`` seconds;
* ``silent_midstream``: a head and one SSE event, then nothing;
* ``garbage``: bytes that are not HTTP;
* ``bad_chunked``: a chunked head, one good chunk, then an invalid chunk size;
* ``huge_header``: a 1 MB header line;
* ``short_body``: ``content-length`` longer than the body that follows;
* ``truncated_json``: a 200 whose JSON body (correctly framed) is cut short;
* ``http10_no_length``: an HTTP/1.0 answer without a length, ended by closing;
* ``endless``: an SSE stream that never ends (an event every 50 ms).

Unless the fault closes the connection itself, the server then holds it open until the
gateway closes it (bounded), so ``open_connections`` going back to 0 proves the gateway
let go of a broken connection. ``connections_accepted`` counts connections.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading

SSE_EVENT = (b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
             b'"choices":[{"index":0,"delta":{"content":"hi "},"finish_reason":null}]}\n\n')
OK_JSON = (b'{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
           b'"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],'
           b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}')
FAULTS = ("reset_before_headers", "reset_after_headers", "slow_headers", "silent_midstream", "garbage",
          "bad_chunked", "huge_header", "short_body", "truncated_json", "http10_no_length", "endless")


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class FaultUpstream:
    def __init__(self) -> None:
        self.fault = "ok"
        self.delay = 3.0
        self.open_connections = 0
        self.connections_accepted = 0
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(512)
        self.port = sock.getsockname()[1]
        self._sock = sock
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, sock=self._sock))
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        started.wait(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        async def shutdown() -> None:
            self._server.close()
            for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_connections += 1
        self.connections_accepted += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                self.requests += 1
                stream = b'"stream":true' in body.replace(b" ", b"")
                if not await self._act(self.fault, stream, reader, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.open_connections -= 1
            writer.close()

    async def _hold(self, reader: asyncio.StreamReader) -> bool:
        """Keep the connection open until the gateway closes it (at most 20 s)."""
        try:
            async with asyncio.timeout(20):
                while await reader.read(65536):
                    pass
        except (TimeoutError, ConnectionError):
            pass
        return False

    @staticmethod
    def _reset(writer: asyncio.StreamWriter) -> bool:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        return False

    async def _act(self, fault: str, stream: bool, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> bool:
        sse_head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        if fault == "ok":
            if stream:
                writer.write(sse_head + _chunk(SSE_EVENT) + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             + f"content-length: {len(OK_JSON)}\r\n\r\n".encode() + OK_JSON)
            await writer.drain()
            return True
        if fault == "reset_before_headers":
            return self._reset(writer)
        if fault == "reset_after_headers":
            writer.write(sse_head + _chunk(SSE_EVENT))
            await writer.drain()
            await asyncio.sleep(0.05)
            return self._reset(writer)
        if fault == "slow_headers":
            await asyncio.sleep(self.delay)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        elif fault == "silent_midstream":
            writer.write(sse_head + _chunk(SSE_EVENT))
        elif fault == "garbage":
            writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02 definitely not HTTP\r\n\r\n")
        elif fault == "bad_chunked":
            writer.write(sse_head + _chunk(SSE_EVENT) + b"zz-not-hex\r\nxx\r\n")
        elif fault == "huge_header":
            writer.write(b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * (1024 * 1024) + b"\r\ncontent-length: 2\r\n\r\n{}")
        elif fault == "short_body":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n"
                         + OK_JSON[:100])
        elif fault == "truncated_json":
            cut = OK_JSON[:60]
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         + f"content-length: {len(cut)}\r\n\r\n".encode() + cut)
            await writer.drain()
            writer.close()  # correctly framed; closed so no idle connection lingers in a pool
            return False
        elif fault == "http10_no_length":
            body = sse_head.split(b"\r\n", 1)[0] and (SSE_EVENT + b"data: [DONE]\n\n" if stream else OK_JSON)
            ctype = b"text/event-stream" if stream else b"application/json"
            writer.write(b"HTTP/1.0 200 OK\r\ncontent-type: " + ctype + b"\r\n\r\n" + body)
            await writer.drain()
            writer.close()
            return False
        elif fault == "endless":
            writer.write(sse_head)
            try:
                async with asyncio.timeout(20):
                    while not writer.is_closing():
                        writer.write(_chunk(SSE_EVENT))
                        await writer.drain()
                        await asyncio.sleep(0.05)
            except (TimeoutError, ConnectionError):
                pass
            return False
        else:
            raise ValueError(f"unknown fault {fault!r}")
        await writer.drain()
        return await self._hold(reader)
