"""Tests for usdcm.models.registry: the one list of model names, sides and builders."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from usdcm.errors import ModelError
from usdcm.models.registry import MIN_SIDE, MODEL_NAMES, REGISTRY, model_spec

ROOT = Path(__file__).resolve().parents[2]


def test_every_entry_is_consistent() -> None:
    assert len(set(MODEL_NAMES)) == len(MODEL_NAMES) == len(REGISTRY)
    for name in MODEL_NAMES:
        spec = model_spec(name)
        assert spec.name == name
        assert MIN_SIDE[name] == spec.min_side >= 16
        assert spec.summary


def test_an_unknown_name_lists_the_choices() -> None:
    with pytest.raises(ModelError, match="'vgg16'") as info:
        model_spec("vgg16")
    for name in MODEL_NAMES:
        assert name in str(info.value)


def test_the_registry_cannot_be_changed_in_place() -> None:
    with pytest.raises(TypeError):
        REGISTRY["vgg16"] = REGISTRY["seed_cnn"]  # type: ignore[index]


def test_importing_the_registry_imports_neither_torch_nor_the_config() -> None:
    code = (
        "import sys, usdcm.models.registry\n"
        "print(sorted(m for m in ('torch', 'monai', 'usdcm.config', 'usdcm.training') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def _listing_files() -> list[Path]:
    sources = sorted((ROOT / "src" / "usdcm").rglob("*.py"))
    docs = [ROOT / "configs" / "README.md", ROOT / "configs" / "default.yaml"]
    return [path for path in [*sources, *docs] if path.name != "registry.py"]


def test_no_other_file_lists_the_model_names() -> None:
    """A file naming two or more models is a second list that would drift from the registry."""
    listing = {}
    for path in _listing_files():
        text = path.read_text(encoding="utf-8")
        named = {name for name in MODEL_NAMES if re.search(rf"\b{re.escape(name)}\b", text)}
        if len(named) >= 2:
            listing[str(path.relative_to(ROOT))] = sorted(named)
    assert listing == {}
