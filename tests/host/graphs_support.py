"""Helpers shared by the example-graph host tests (test_workflows.py, test_browser.py).

What the pack owns in a saved graph (its nodes' entries and every wire) must match what the generator
writes from the live schemas on every ComfyUI; core nodes' own entries follow the running release's
schemas, so they are compared exactly only where the live schemas still produce them unchanged.
Imports nothing of ComfyUI (collected by the unit tier too).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from typing import Any

from harness import PACK_FOLDER_NAME, REPO_ROOT

GENERATOR_PATH = REPO_ROOT / "scripts" / "make_workflows.py"


def load_generator() -> types.ModuleType:
    """``scripts/make_workflows.py`` as a module (it is a script, not part of a package)."""
    if "cvx_make_workflows" in sys.modules:
        return sys.modules["cvx_make_workflows"]
    spec = importlib.util.spec_from_file_location("cvx_make_workflows", GENERATOR_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


def pack_node_types(object_info: dict) -> set[str]:
    """The node types this pack registers, as the live ``/object_info`` says (its ``python_module``)."""
    return {
        node_type
        for node_type, info in object_info.items()
        if PACK_FOLDER_NAME in str(info.get("python_module", ""))
    }


def owned_parts(text: str, pack_types: set[str]) -> dict:
    """What the pack owns in a UI or API graph: its nodes' entries and every wire, by node id.

    Core nodes' own entries (their widgets, input and output slots) are left out: they follow the
    schemas of whichever ComfyUI is running, and a newer release may change them in ways that do not
    break the graph (those graphs are checked to validate and open instead).
    """
    graph = json.loads(text)
    if "nodes" in graph:
        return {
            "nodes": {node["id"]: node for node in graph["nodes"] if node["type"] in pack_types},
            "types": {node["id"]: node["type"] for node in graph["nodes"]},
            "links": graph["links"],
        }
    return {
        "nodes": {key: node for key, node in graph.items() if node["class_type"] in pack_types},
        "wires": {
            key: {name: value for name, value in node["inputs"].items() if isinstance(value, list)}
            for key, node in graph.items()
        },
    }


def unchanged_node_ids(name: str, object_info: dict) -> tuple[set[Any], set[str]]:
    """Ids of the nodes of example ``name`` whose committed entries are exactly what the generator writes
    from the live schemas: ``(UI node ids, API node ids)``. On the release the graphs are saved from that
    is every node; on a newer one, a core node whose schema changed drops out."""
    files = load_generator().build_all(object_info)
    committed_ui = json.loads((REPO_ROOT / "workflows" / f"{name}.json").read_text(encoding="utf-8"))
    live_ui = json.loads(files[f"{name}.json"])
    live_nodes = {node["id"]: node for node in live_ui["nodes"]}
    ui_ids = {node["id"] for node in committed_ui["nodes"] if live_nodes.get(node["id"]) == node}
    committed_api = json.loads(
        (REPO_ROOT / "workflows" / "api" / f"{name}_api.json").read_text(encoding="utf-8")
    )
    live_api = json.loads(files[f"api/{name}_api.json"])
    # A node counts as unchanged only when both its UI entry and its API entry are: the frontend writes
    # the API form from the UI widgets, so a changed widget (a dynamic combo's sub-widgets) shows there.
    api_ids = {
        key for key, node in committed_api.items() if live_api.get(key) == node and _ui_id(key) in ui_ids
    }
    return ui_ids, api_ids


def _ui_id(api_key: str) -> Any:
    return int(api_key) if api_key.isdigit() else api_key
