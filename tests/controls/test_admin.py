from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fastgw.cli.keys import main as keys_main
from fastgw.controls.admin import AdminContext, handle, parse_duration
from fastgw.controls.keys import KeyManager
from fastgw.controls.reqlog import RequestLogger, RequestRecord
from fastgw.controls.store import open_store
from fastgw.errors import GatewayError


def test_admin_api(tmp_path: Path) -> None:
    async def t() -> None:
        store = await open_store(f"sqlite:///{tmp_path}/a.db")
        km = KeyManager(store)
        lg = RequestLogger(store, log_bodies=True)
        ctx = AdminContext(keys=km, store=store, logger=lg)

        async def call(method: str, path: str, query: str = "", body: Any = None) -> tuple[int, Any]:
            raw = b"" if body is None else json.dumps(body).encode()
            status, out = await handle(method, path, query, raw, ctx)
            return status, json.loads(out)

        st, created = await call(
            "POST",
            "/admin/keys",
            body={
                "name": "ci",
                "models": ["gpt-4o*"],
                "budget_usd": 2.5,
                "budget_period": "daily",
                "expires_in": "30d",
                "metadata": {"team": "ml"},
                "rpm_limit": 60,
            },
        )
        assert st == 201 and created["key"].startswith("sk-fgw-")
        assert created["expires_at"] > time.time() + 29 * 86400
        assert (await km.authenticate(created["key"], "gpt-4o")).id == created["id"]
        st, listed = await call("GET", "/admin/keys")
        assert [k["name"] for k in listed["data"]] == ["ci"]
        assert created["key"] not in json.dumps(listed) and "hash" not in listed["data"][0]
        st, one = await call("GET", f"/admin/keys/{created['id']}")
        assert one["rpm_limit"] == 60 and "key" not in one

        for bad in (
            {"models": []},
            {"name": "x", "budget_period": "yearly"},
            {"name": "x", "expires_in": "soon"},
            {"name": "x", "unknown": 1},
        ):
            with pytest.raises(GatewayError) as e:
                await call("POST", "/admin/keys", body=bad)
            assert e.value.status == 400
        with pytest.raises(GatewayError) as e:
            await handle("POST", "/admin/keys", "", b"not json", ctx)
        assert e.value.status == 400

        for i in range(5):
            lg.log(
                RequestRecord(
                    request_id=f"r{i}",
                    key_id=created["id"],
                    key_name="ci",
                    provider="openai",
                    model="gpt-4o",
                    status=200,
                    prompt_tokens=10,
                    completion_tokens=1,
                    cost_usd=0.1,
                    ts=1_700_000_000 + i,
                    conversation_id="c1",
                    request_body=b'{"x":1}',
                )
            )
        await lg.flush()
        st, page = await call("GET", "/admin/logs", "limit=2")
        assert [r["request_id"] for r in page["data"]] == ["r4", "r3"] and page["next_cursor"]
        st, page2 = await call("GET", "/admin/logs", f"limit=2&cursor={page['next_cursor']}")
        assert [r["request_id"] for r in page2["data"]] == ["r2", "r1"]
        st, filt = await call("GET", "/admin/logs", "key=ci&status=200&model=gpt-4o&provider=openai")
        assert len(filt["data"]) == 5 and filt["next_cursor"] is None
        st, entry = await call("GET", "/admin/logs/r3")
        assert entry["request_body"] == '{"x":1}' and [x["request_id"] for x in entry["thread"]] == [
            "r0",
            "r1",
            "r2",
        ]
        st, usage = await call("GET", "/admin/usage", "group_by=model&since=2023-11-14")
        assert usage["data"][0]["model"] == "gpt-4o" and usage["data"][0]["requests"] == 5
        assert abs(usage["data"][0]["cost_usd"] - 0.5) < 1e-9
        st, usage = await call("GET", "/admin/usage", "until=1000")
        assert usage["data"] == []

        errors = [
            ("GET", "/admin/logs/nope", "", 404),
            ("GET", "/admin/usage", "group_by=color", 400),
            ("GET", "/admin/logs", "limit=x", 400),
            ("GET", "/admin/usage", "since=yesterday", 400),
            ("PUT", "/admin/keys/x", "", 405),
            ("GET", "/admin/nothing", "", 404),
            ("GET", "/admin", "", 404),
            ("DELETE", "/admin/keys/key_missing", "", 404),
            ("GET", "/admin/keys/key_missing", "", 404),
        ]
        for method, path, query, status in errors:
            with pytest.raises(GatewayError) as e:
                await handle(method, path, query, b"", ctx)
            assert e.value.status == status, (method, path, query)
            json.loads(e.value.body())

        st, rv = await call("DELETE", f"/admin/keys/{created['id']}")
        assert rv == {"id": created["id"], "revoked": True}
        with pytest.raises(GatewayError) as e:
            await km.authenticate(created["key"], "gpt-4o")
        assert e.value.status == 401
        await lg.stop()
        await km.close()
        await store.close()

    asyncio.run(t())


def test_parse_duration() -> None:
    assert parse_duration("30d") == 30 * 86400
    assert parse_duration("12h") == 43200
    assert parse_duration("90m") == 5400
    assert parse_duration("3600") == 3600
    assert parse_duration(5) == 5
    with pytest.raises(ValueError):
        parse_duration("a week")


def test_keys_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("FASTGW_STORE_URL", url)
    assert (
        keys_main(
            [
                "create",
                "--name",
                "bob",
                "--models",
                "gpt-4o*,claude-*",
                "--budget",
                "5",
                "--budget-period",
                "monthly",
                "--expires-in",
                "7d",
                "--rpm",
                "10",
                "--tpm",
                "1000",
                "--concurrency",
                "3",
                "--metadata",
                "team=a",
                "--metadata",
                "env=prod",
            ]
        )
        == 0
    )
    token = capsys.readouterr().out.strip()
    assert token.startswith("sk-fgw-")
    assert keys_main(["list"]) == 0
    out = capsys.readouterr().out
    assert "bob" in out and token not in out and token[:11] in out and "active" in out
    assert keys_main(["list", "--json", "--store", url]) == 0
    [rec] = json.loads(capsys.readouterr().out)
    assert rec["models"] == ["gpt-4o*", "claude-*"] and rec["metadata"] == {"team": "a", "env": "prod"}
    assert rec["rpm_limit"] == 10 and rec["budget_period"] == "monthly"
    assert rec["tpm_limit"] == 1000 and rec["concurrency_limit"] == 3
    assert keys_main(["revoke", rec["id"]]) == 0
    assert keys_main(["revoke", "key_nope"]) == 1
    assert keys_main(["create", "--name", "x", "--metadata", "novalue"]) == 2
    assert keys_main(["create", "--name", "x", "--expires-in", "soon"]) == 2
    capsys.readouterr()
    assert keys_main(["list"]) == 0
    assert "revoked" in capsys.readouterr().out


def test_fastgw_keys_entry_point(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ep.db"
    r = subprocess.run(
        [sys.executable, "-m", "fastgw", "keys", "create", "--name", "n", "--store", url, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["key"].startswith("sk-fgw-")
