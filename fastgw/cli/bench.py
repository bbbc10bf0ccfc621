"""``fastgw bench ...``: delegates to the benchmark toolkit's entry point (``python -m bench``).

The ``bench`` package lives at the repository root (it is not part of the installed wheel), so
this shim finds it next to the ``fastgw`` package when it is not importable already.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    try:
        from bench.__main__ import main as bench_main
    except ImportError:
        root = Path(__file__).resolve().parents[2]
        if not (root / "bench" / "__main__.py").exists():
            print("fastgw bench: the bench/ toolkit is not available (run from a source checkout)", file=sys.stderr)
            return 2
        sys.path.insert(0, str(root))
        from bench.__main__ import main as bench_main
    return bench_main(list(argv))
