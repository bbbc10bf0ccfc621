"""The design card's own cost: two ASGI apps with no gateway logic at all, run on granian.

* ``hello``: reads the request body and answers a fixed JSON body. What granian's
  HTTP/1.1 server and its ASGI bridge (``receive``/``send`` across its Rust and Python
  threads) cost per request on this machine.
* ``relay``: reads the body and relays it to the upstream over fastgw's own pool and
  httpcore/h11 connection (the same objects the gateway uses), then streams the answer back
  as it arrives. No routing, no header policy, no usage, metrics or request log: the least
  any gateway built on this card (granian ASGI + uvloop + httpcore/h11) can spend.

``python -m bench floor`` meters them beside ``fastgw serve`` on the same mock and load.
Run one directly with ``python -m bench.floor_apps hello|relay serve --host H --port P``
(the upstream port comes from ``FLOOR_UPSTREAM_PORT``, else from the first loopback
``base_url`` in ``--config``); the argument shape matches ``fastgw serve``, so the matrix can
run the floor in the gateway's place:
``python -m bench --gateway-cmd "python -m bench.floor_apps relay" --scenarios paced_stream``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]
_HELLO = b'{"ok":true}'


async def _lifespan(receive: Receive, send: Send, startup: Callable[[], None] | None = None) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if startup is not None:
                startup()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    while message.get("more_body"):
        message = await receive()
        body += message.get("body", b"")
    return body


async def hello(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """Read the body, answer 200 with a fixed JSON body."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    await _read_body(receive)
    await send({"type": "http.response.start", "status": 200, "headers": _JSON})
    await send({"type": "http.response.body", "body": _HELLO})


class Relay:
    """Relay every POST to 127.0.0.1:$FLOOR_UPSTREAM_PORT, same path, bytes as they arrive."""

    def __init__(self) -> None:
        self.pool: Any = None
        self.fixed: Any = None
        self.with_content_length: Any = None

    def _startup(self) -> None:
        import httpcore

        from fastgw.upstream.backend import AsyncioBackend
        from fastgw.upstream.connection import prevalidate, with_content_length
        from fastgw.upstream.pool import Pool

        self.with_content_length = with_content_length  # imported once, not per request

        port = int(os.environ["FLOOR_UPSTREAM_PORT"])
        self.pool = Pool(httpcore.Origin(b"http", b"127.0.0.1", port), backend=AsyncioBackend(),
                         max_connections=1024)
        self.fixed = prevalidate([(b"host", f"127.0.0.1:{port}".encode()), (b"content-type", b"application/json")])

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, self._startup)
            return
        body = await _read_body(receive)
        if scope["method"] != "POST":
            await send({"type": "http.response.start", "status": 200, "headers": _JSON})
            await send({"type": "http.response.body", "body": _HELLO})
            return
        conn = await self.pool.acquire()
        try:
            status, headers = await conn.http.start(b"POST", scope["raw_path"],
                                                    self.with_content_length(self.fixed, len(body)), body)
            await send({"type": "http.response.start", "status": status,
                        "headers": [h for h in headers if h[0] == b"content-type"]})
            while (chunk := await conn.http.next_chunk()) is not None:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            conn.http.finish()
            self.pool.release(conn)


relay = Relay()


def main(argv: list[str]) -> int:
    """``hello|relay serve [--config X] --host H --port P [--workers W]``: run it on granian."""
    app, args = argv[0], argv[1:]
    if app not in ("hello", "relay") or not args or args[0] != "serve":
        print("usage: python -m bench.floor_apps hello|relay serve --host H --port P [--workers W]",
              file=sys.stderr)
        return 2
    opts = dict(zip(args[1::2], args[2::2], strict=False))
    if "FLOOR_UPSTREAM_PORT" not in os.environ and "--config" in opts:
        # Launched by ``python -m bench --gateway-cmd``: relay to the mock its config names.
        import re
        from pathlib import Path

        found = re.search(r"base_url:\s*http://127\.0\.0\.1:(\d+)", Path(opts["--config"]).read_text())
        if found:
            os.environ["FLOOR_UPSTREAM_PORT"] = found.group(1)
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops

    Granian(target=f"bench.floor_apps:{app}", address=opts.get("--host", "127.0.0.1"),
            port=int(opts["--port"]), interface=Interfaces.ASGI, loop=Loops.uvloop, http=HTTPModes.http1,
            websockets=False, workers=int(opts.get("--workers", "1")), log_access=False,
            log_level="warning").serve()  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
