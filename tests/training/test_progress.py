"""The library reports training progress through a protocol and never imports the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

from usdcm.training.progress import NoProgress, TrainingProgress

SRC = Path(__file__).resolve().parents[2] / "src" / "usdcm"


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def test_no_library_layer_below_the_cli_imports_it_even_lazily() -> None:
    packages = ("training", "runtime", "models", "data", "inference")
    files = [path for package in packages for path in sorted((SRC / package).rglob("*.py"))]
    files.append(SRC / "config.py")
    offenders = {
        str(path.relative_to(SRC)): sorted(m for m in _imported_modules(path) if "cli" in m)
        for path in files
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_silent_default_is_a_training_progress() -> None:
    silent: TrainingProgress = NoProgress()
    silent.phase("epoch 1", 3)
    silent.advance(2)
