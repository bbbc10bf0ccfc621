"""``python -m bench instr``: instructions per request of a real gateway worker under callgrind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.__main__ import main as bench_main
from bench.index import load_runs, render_index
from bench.instr import available, total_ir


def test_total_ir_reads_a_callgrind_dump() -> None:
    dump = b"version: 1\ncreator: callgrind-3.19.0\nevents: Ir\n\nfn=(1) main\n3 12\n\nsummary: 977001\ntotals: 977001\n"
    assert total_ir(dump) == 977001
    assert total_ir(b"events: Ir\ntotals: 42\n") == 42
    with pytest.raises(ValueError):
        total_ir(b"events: Ir\n")


@pytest.fixture
def callgrind() -> None:
    why = available()
    if why:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"bench instr cannot run under CI: callgrind {why}", pytrace=False)
        pytest.skip(f"callgrind {why}")


def test_instr_counts_what_a_mode_adds(callgrind: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "instr" / "instr-t.json"
    rc = bench_main(["instr", "off", "limits", "--scenarios", "chat_nonstream", "--requests", "30", "--warmup", "10",
                     "--concurrency", "2", "--json", str(out)])
    assert rc == 0
    rows = json.loads(out.read_text())
    assert [(r["mode"], r["requests"], r["warmup"], r["concurrency"], r["errors"]) for r in rows] == [
        ("off", 30, 10, 2, 0), ("limits", 30, 10, 2, 0)]
    off, limits = (r["ir_per_req"] for r in rows)
    # A request through Python, granian and h11 takes hundreds of thousands of instructions; a
    # virtual key with limits, the request log and usage injection add to them, every time.
    assert 100_000 < off < 10_000_000 and limits > off * 1.05, rows
    text = capsys.readouterr().out
    assert "chat_nonstream" in text and "limits" in text and "%" in text
    assert [r.kind for r in load_runs(tmp_path)] == ["instr"]
    index = render_index(tmp_path)
    assert "Instructions per request" in index and f"off {off:,.0f} / limits {limits:,.0f}" in index


def test_instr_refuses_bad_counts() -> None:
    assert bench_main(["instr", "all", "limits", "--requests", "0"]) == 2


def test_instr_runs_the_gateway_command_it_is_given(callgrind: None) -> None:
    from bench.gateway import GatewayError

    # "off" creates no key: the command is the one run under callgrind, and it does not exist.
    with pytest.raises(GatewayError, match="not healthy"):
        bench_main(["instr", "off", "off", "--scenarios", "chat_nonstream", "--requests", "5", "--warmup", "0",
                    "--gateway-cmd", "/nonexistent/fastgw"])
