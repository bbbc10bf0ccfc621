"""A throwaway ``redis-server`` for tests.

``redis_server`` (a pytest fixture, registered in conftest) yields a :class:`RedisServer`
started from Debian's ``redis-server`` binary on a free port on 127.0.0.1, in a temp dir,
with persistence off; it is stopped after the test. ``redis_unix_server`` is the same
listening only on a unix socket in its temp dir (``url`` is then ``unix:///.../redis.sock?db=0``). :meth:`RedisServer.kill` and
:meth:`RedisServer.start` let a test take Redis away mid-test and bring it back on the
same port.

Without the binary the test is skipped with the reason, except under ``CI=true``, where it
fails: CI must install ``redis-server`` (scripts/test does, when root).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, binary: str, *, unix: bool = False) -> None:
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="fastgw-redis-")
        # A unix socket instead of TCP (no port at all): its path, else None.
        self.socket: str | None = os.path.join(self.dir, "redis.sock") if unix else None
        self.port = 0 if unix else _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra_args: list[str] = []  # e.g. ["--requirepass", "pw"] (set before start)

    @property
    def url(self) -> str:
        if self.socket is not None:
            return f"unix://{self.socket}?db=0"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = open(os.path.join(self.dir, "redis.log"), "ab")  # noqa: SIM115 - owned by the process
        if self.socket is not None:
            listen = ["--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "700"]
        else:
            listen = ["--port", str(self.port), "--bind", "127.0.0.1"]
        self.proc = subprocess.Popen(
            [self.binary, *listen, "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--protected-mode", "no", *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            if self.command(b"PING") in (b"+PONG", b"-NOAUTH Authentication required."):
                return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING within 10 s")

    def command(self, *parts: bytes) -> bytes | None:
        """One RESP command; its first reply line, or None when Redis does not answer."""
        payload = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        try:
            if self.socket is not None:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(1)
                s.connect(self.socket)
            else:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=1)
            with s:
                s.sendall(payload)
                return s.recv(65536).split(b"\r\n", 1)[0]
        except OSError:
            return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def _serve(unix: bool) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
    if binary is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"Redis tests cannot run under CI: {reason}", pytrace=False)
        pytest.skip(reason)
    server = RedisServer(binary, unix=unix)
    try:
        server.start()
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    yield from _serve(unix=False)


@pytest.fixture
def redis_unix_server() -> Iterator[RedisServer]:
    yield from _serve(unix=True)
