"""The project's extension-less scripts (``scripts/soak``, ``scripts/compare-revs``) loaded as
modules, so tests can call their functions."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType


def load_script(name: str) -> ModuleType:
    """``scripts/NAME`` as a module (its ``main`` is not run)."""
    path = Path(__file__).resolve().parent.parent / "scripts" / name
    module_name = name.replace("-", "_") + "_script"
    loader = importlib.machinery.SourceFileLoader(module_name, str(path))
    spec = importlib.util.spec_from_loader(module_name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module
