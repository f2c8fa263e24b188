"""onnxruntime is optional: only ``face_onnx.py`` imports it, and without it the message says what to install."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
OPTIONAL = {"onnxruntime", "onnx", "insightface"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_face_onnx_imports_the_optional_packages() -> None:
    importers = {
        str(path.relative_to(REPO_ROOT))
        for folder in ("customvideox_core", "nodes")
        for path in (REPO_ROOT / folder).rglob("*.py")
        if imported_modules(path) & OPTIONAL
    }
    assert importers == {"customvideox_core/metrics/face_onnx.py"}
    root_imports = imported_modules(REPO_ROOT / "__init__.py")
    assert not root_imports & OPTIONAL


def test_without_onnxruntime_the_error_says_what_to_install(monkeypatch, tmp_path) -> None:
    from customvideox_core.metrics.face_onnx import load_face_model

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # "import onnxruntime" now raises ImportError
    with pytest.raises(ImportError, match=r"pip install onnxruntime.*requirements-face.txt"):
        load_face_model(tmp_path)
