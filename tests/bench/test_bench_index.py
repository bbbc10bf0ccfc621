"""``python -m bench index``: INDEX.md and the README's figures are generated from the committed results."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bench import index
from bench.__main__ import main as bench_main
from bench.report import REPO_ROOT, RESULTS_DIR


def _full_history() -> bool:
    """Commits of files that do not record one come from git log: needs git and a full clone."""
    try:
        r = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--is-shallow-repository"],
                           capture_output=True, text=True, timeout=10)
    except OSError:
        return False
    return r.returncode == 0 and r.stdout.strip() == "false"


needs_history = pytest.mark.skipif(not _full_history(), reason="needs git and the full history")


def test_one_reference_run_at_the_top() -> None:
    ref = index.reference_path()
    assert ref is not None and len(ref.parts) == 1
    top = sorted(p.name for p in RESULTS_DIR.glob("bench-*.json"))
    assert top == [ref.name]
    kinds = {r.path: r.kind for r in index.load_runs()}
    assert kinds[ref] == "matrix"
    assert {"floor", "soak"} <= set(kinds.values())


@needs_history
def test_index_md_is_up_to_date() -> None:
    text = index.render_index()
    assert (RESULTS_DIR / "INDEX.md").read_text() == text, "run: python -m bench index"
    ref = index.reference_path()
    assert f"[{ref}]({ref}) **reference**" in text
    assert text.count("**reference**") == 1
    for run in index.load_runs():  # every run listed, each with a known commit
        assert f"]({run.path})" in text
        assert run.commit != "?", run.path


@needs_history
def test_readme_generated_blocks_are_up_to_date() -> None:
    text = index.README.read_text()
    assert "<!-- generated:reference -->" in text and "<!-- generated:headroom -->" in text
    assert index.update_readme(text) == text, "run: python -m bench index"


def test_update_readme_fills_blocks_and_rejects_unknown(tmp_path: Path) -> None:
    text = "a\n<!-- generated:headroom -->\nstale 123\n<!-- /generated:headroom -->\nb\n"
    out = index.update_readme(text)
    assert "stale 123" not in out and out.startswith("a\n<!-- generated:headroom -->\nIn the reference run")
    assert out.endswith("<!-- /generated:headroom -->\nb\n") and index.update_readme(out) == out
    with pytest.raises(SystemExit):
        index.update_readme("<!-- generated:nope -->\n<!-- /generated:nope -->\n")


def test_promote_moves_the_previous_reference_to_archive(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    ref = index.reference_path()
    assert ref is not None
    old = results / "bench-20260101-000000.json"
    shutil.copy(RESULTS_DIR / ref, old)
    old.with_suffix(".md").write_text("old run\n")
    (results / index.REFERENCE_FILE).write_text(old.name + "\n")
    new = tmp_path / "elsewhere" / "bench-20260102-000000.json"
    new.parent.mkdir()
    data = json.loads((RESULTS_DIR / ref).read_text())
    data["meta"]["label"] = "newer"
    new.write_text(json.dumps(data))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- generated:reference -->\n<!-- /generated:reference -->\n")

    assert bench_main(["index", "--reference", str(new), "--results", str(results), "--readme", str(readme)]) == 0

    assert sorted(p.name for p in results.glob("bench-*")) == [new.name]
    assert sorted(p.name for p in (results / "archive").iterdir()) == [old.name, old.with_suffix(".md").name]
    assert (results / index.REFERENCE_FILE).read_text().strip() == new.name
    text = (results / "INDEX.md").read_text()
    assert f"[{new.name}]({new.name}) **reference**" in text and f"archive/{old.name}" in text
    assert "| newer |" in text
    assert f"Reference run: `bench/results/{new.name}`" in readme.read_text()
    with pytest.raises(SystemExit):  # only matrix runs can be the reference
        index.promote(RESULTS_DIR / "soak-20261127-010031.json", results)
