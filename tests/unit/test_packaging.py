"""The pack's frame: registry metadata, requirements in sync, a guarded entry point, a host-free core."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import tomllib

REPO_ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
HOST_MODULES = {
    "comfy",
    "comfy_api",
    "comfy_extras",
    "comfy_execution",
    "folder_paths",
    "nodes",
    "server",
    "execution",
    "latent_preview",
    "node_helpers",
}
ALLOWED_DEPENDENCIES = {
    "torch",
    "einops",
    "safetensors",
    "peft",
    "numpy",
    "comfyui-frontend-package",
    "websocket-client",
    "urllib3",
}


def _requirement_name(line: str) -> str:
    return re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0].lower()


def _requirements_file() -> list[str]:
    lines = (REPO_ROOT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_requirements_txt_mirrors_pyproject_dependencies():
    assert sorted(_requirements_file()) == sorted(PYPROJECT["project"]["dependencies"])


def test_dependencies_are_the_agreed_ones_with_lower_bounds_only():
    dependencies = PYPROJECT["project"]["dependencies"]
    assert {_requirement_name(d) for d in dependencies} == ALLOWED_DEPENDENCIES
    for dependency in dependencies:
        assert not re.search(r"==|<|~=|!=", dependency), f"{dependency}: lower bounds only"
    assert "torch" in dependencies, "torch is listed without any version"


def test_registry_metadata():
    comfy = PYPROJECT["tool"]["comfy"]
    for key in ("PublisherId", "DisplayName", "Icon", "requires-comfyui"):
        assert comfy.get(key), f"[tool.comfy] {key} is missing"
    # The first release with native CogVideoX (comfy/ldm/cogvideo) is 0.21.0.
    assert comfy["requires-comfyui"] == ">=0.21.0"
    assert PYPROJECT["project"]["urls"]
    assert "build-system" not in PYPROJECT, "the pack is never pip-installed (nodes/ would shadow ComfyUI's)"


def test_root_init_outside_comfyui_is_inert_and_silent():
    script = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('cvx_pack', {str(REPO_ROOT / '__init__.py')!r},\n"
        f"    submodule_search_locations=[{str(REPO_ROOT)!r}])\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "sys.modules['cvx_pack'] = module\n"
        "spec.loader.exec_module(module)\n"
        "assert not hasattr(module, 'comfy_entrypoint'), 'entry point exposed outside ComfyUI'\n"
        "assert module.__all__ == []\n"
        "assert 'cvx_pack.nodes' not in sys.modules, 'node glue imported outside ComfyUI'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd="/", timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""


def _python_files(*folders: str) -> list[Path]:
    files = []
    for folder in folders:
        files.extend(sorted((REPO_ROOT / folder).rglob("*.py")))
    return files


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_never_imports_comfyui():
    offenders = {
        str(path.relative_to(REPO_ROOT)): sorted(_imported_roots(path) & HOST_MODULES)
        for path in _python_files("customvideox_core")
    }
    assert not {path: mods for path, mods in offenders.items() if mods}


def test_no_print_in_shipped_code():
    offenders = []
    for path in [*_python_files("customvideox_core", "nodes"), REPO_ROOT / "__init__.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    assert not offenders


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO_ROOT / "README.md").read_text()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "The test command itself is `python -m pytest`" in readme
    assert '"$venv_python" -m pytest\n' in ci


def test_registry_icon_is_a_square_png_in_the_repository():
    """``[tool.comfy] Icon`` points at this repository's ``main`` branch: the file must exist here."""
    import struct

    icon_url = PYPROJECT["tool"]["comfy"]["Icon"]
    relative = icon_url.split("/main/", 1)[1]
    data = (REPO_ROOT / relative).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width == height and width >= 128, (width, height)
