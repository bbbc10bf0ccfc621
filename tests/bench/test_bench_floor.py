"""``python -m bench floor``: the three servers answer the same load without errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import main as bench_main
from bench.floor import SERVERS, SHAPES, summarize


def test_floor_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "floor.json"
    assert bench_main(["floor", "--duration", "0.3", "--concurrency", "4", "--rounds", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert {(r["server"], r["shape"]) for r in rows} == {(s, h) for s in SERVERS for h in SHAPES}
    assert all(r["errors"] == 0 and r["rps"] > 0 and r["cpu_us_per_req"] > 0 for r in rows)
    # the streams came through as SSE events (the relay hands them on as they arrive)
    assert all(r["sse_events"] > 0 for r in rows if r["shape"] == "chat_stream" and r["server"] != "hello")
    means = summarize(rows)
    assert set(means) == set(SHAPES) and all(set(v) == set(SERVERS) for v in means.values())
    text = capsys.readouterr().out
    assert "fastgw's own logic" in text and "relay" in text
