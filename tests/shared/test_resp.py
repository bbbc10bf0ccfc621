"""fastgw.shared.resp against a real redis-server: pipelining, scripts, errors, timeouts, reconnects."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from fastgw.shared.resp import PipelinedRedis, RedisUnavailable, RespError, Script, pack


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_pack_is_resp_bulk_strings() -> None:
    assert pack(["SET", b"k", 12, 1.5]) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$3\r\n1.5\r\n"


def test_many_commands_in_flight_each_get_their_own_reply_in_order(redis_server) -> None:
    async def main() -> list[int]:
        r = PipelinedRedis(redis_server.url, 2.0)
        try:
            return list(await asyncio.gather(*[r.execute("INCR", "n") for _ in range(2000)]))
        finally:
            await r.close()

    assert run(main()) == list(range(1, 2001))


def test_error_reply_raises_resp_error_and_the_connection_stays_usable(redis_server) -> None:
    async def main() -> tuple[str, bytes]:
        r = PipelinedRedis(redis_server.url, 2.0)
        await r.execute("SET", "s", "text")
        with pytest.raises(RespError) as err:
            await r.execute("INCR", "s")
        pong = await r.execute("PING")
        await r.close()
        return str(err.value), pong

    message, pong = run(main())
    assert "not an integer" in message
    assert pong == b"PONG"


def test_script_runs_by_sha_and_is_loaded_again_after_a_flush(redis_server) -> None:
    script = Script("return {KEYS[1], ARGV[1], 7}")

    async def main() -> list[list[object]]:
        r = PipelinedRedis(redis_server.url, 2.0)
        first = await r.evalsha(script, ["k"], ["v"])
        await r.execute("SCRIPT", "FLUSH")
        second = await r.evalsha(script, ["k"], ["v"])
        loaded = await r.execute("SCRIPT", "EXISTS", script.sha)
        await r.close()
        return [first, second, loaded]

    first, second, loaded = run(main())
    assert first == second == [b"k", b"v", 7]
    assert loaded == [1]  # loaded again


def test_send_is_fire_and_forget_and_close_lets_it_be_answered(redis_server) -> None:
    async def main() -> bool:
        r = PipelinedRedis(redis_server.url, 2.0)
        assert not r.send("SET", "x", "1")  # no connection yet: nothing sent
        await r.execute("PING")
        sent = all(r.send("INCR", "f") for _ in range(100))
        await r.close()
        return sent

    assert run(main())
    assert redis_server.command(b"GET", b"f") == b"$3"


def test_password_and_database_from_the_url(redis_server) -> None:
    redis_server.kill()
    redis_server.extra_args = ["--requirepass", "s3cret"]
    redis_server.start()
    url = f"redis://:s3cret@127.0.0.1:{redis_server.port}/3"

    async def main() -> tuple[object, object]:
        r = PipelinedRedis(url, 2.0)
        await r.execute("SET", "in3", "yes")
        db3 = await r.execute("GET", "in3")
        await r.execute("SELECT", 0)
        db0 = await r.execute("GET", "in3")
        await r.close()
        bad = PipelinedRedis(f"redis://:wrong@127.0.0.1:{redis_server.port}/0", 2.0)
        with pytest.raises((RedisUnavailable, RespError)):
            await bad.execute("PING")
        return db3, db0

    assert run(main()) == (b"yes", None)


def test_no_reply_within_the_timeout_fails_every_waiter_then_reconnects() -> None:
    # A server that accepts and never answers, then one that does: the waiters fail by the
    # watchdog (no timer per command), and the next command opens a new connection.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(silent.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()

    async def main() -> list[BaseException]:
        r = PipelinedRedis(f"redis://127.0.0.1:{port}/0", 0.2)
        results = await asyncio.wait_for(
            asyncio.gather(*[r.execute("PING") for _ in range(10)], return_exceptions=True), 5)
        with pytest.raises(RedisUnavailable):
            await asyncio.wait_for(r.execute("PING"), 5)
        return [x for x in results if isinstance(x, BaseException)]

    try:
        errors = run(main())
    finally:
        stop.set()
        t.join()
        silent.close()
        for s in accepted:
            s.close()
    assert len(errors) == 10 and all(isinstance(e, RedisUnavailable) for e in errors)
    assert len(accepted) == 2  # the second command reconnected


def test_server_killed_then_back_on_the_same_port(redis_server) -> None:
    async def main() -> object:
        r = PipelinedRedis(redis_server.url, 1.0)
        assert await r.execute("PING") == b"PONG"
        redis_server.kill()
        with pytest.raises(RedisUnavailable):
            await r.execute("PING")
        with pytest.raises(RedisUnavailable):
            await r.execute("PING")  # refused: still down
        redis_server.start()
        pong = await r.execute("PING")
        await r.close()
        return pong

    assert run(main()) == b"PONG"


def test_waiters_are_bounded(redis_server) -> None:
    async def main() -> int:
        r = PipelinedRedis(redis_server.url, 2.0, max_pending=50)
        await r.execute("PING")
        results = await asyncio.gather(*[r.execute("PING") for _ in range(80)], return_exceptions=True)
        await r.close()
        return sum(isinstance(x, RedisUnavailable) for x in results)

    assert run(main()) == 30


def test_a_unix_socket_url_with_its_database(redis_unix_server) -> None:
    path = redis_unix_server.socket
    assert path is not None

    async def main() -> tuple[list[int], object, object]:
        r = PipelinedRedis(f"unix://{path}?db=5", 2.0)
        counts = list(await asyncio.gather(*[r.execute("INCR", "n") for _ in range(500)]))
        await r.execute("SET", "in5", "yes")
        await r.execute("SELECT", 0)
        db0 = await r.execute("GET", "in5")
        await r.close()
        default = PipelinedRedis(f"unix://{path}", 2.0)  # no db: database 0
        got = await default.execute("GET", "in5")
        await default.close()
        return counts, db0, got

    counts, db0, default = run(main())
    assert counts == list(range(1, 501))
    assert db0 is None and default is None  # the key went to database 5 only


@pytest.mark.parametrize("form", ["userinfo", "query"])
def test_a_password_in_a_unix_socket_url(redis_unix_server, form: str) -> None:
    redis_unix_server.kill()
    redis_unix_server.extra_args = ["--requirepass", "s3cret"]
    redis_unix_server.start()
    path = redis_unix_server.socket

    def url(password: str) -> str:
        if form == "userinfo":
            return f"unix://:{password}@{path}?db=2"
        return f"unix://{path}?db=2&password={password}"

    async def main() -> object:
        r = PipelinedRedis(url("s3cret"), 2.0)
        await r.execute("SET", "in2", "yes")
        got = await r.execute("GET", "in2")
        await r.close()
        bad = PipelinedRedis(url("wrong"), 2.0)
        with pytest.raises((RedisUnavailable, RespError)):
            await bad.execute("PING")
        return got

    assert run(main()) == b"yes"
