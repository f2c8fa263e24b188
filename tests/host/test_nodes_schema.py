"""Saved workflows keep working: node ids, category, and a committed schema snapshot.

The snapshot records, for every node of the pack, each input's name, section (required/optional),
type and default in order, fixed combo choices, and the outputs. Two tests guard it:

- ``test_schema_is_backward_compatible`` can never be "fixed" by updating the snapshot: ids may not
  disappear, existing inputs may not be renamed, retyped, reordered or get a new default, no input may
  be inserted before an existing one, and outputs may only be appended.
- ``test_schema_snapshot_is_current`` wants the snapshot to list exactly what is live; after a
  *compatible* addition, record it with ``CVX_UPDATE_SCHEMA_SNAPSHOT=1`` and commit the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

SNAPSHOT = Path(__file__).with_name("schema_snapshot.json")
CATEGORY_ROOT = "CustomVideoX"
NODE_IDS = {
    "LoadCustomVideoX",
    "CustomVideoXReferenceEncode",
    "CustomVideoXTimeAwareBias",
    "CustomVideoXERAEMask",
    "CustomVideoXSample",
    "CustomVideoXApply",
    "CustomVideoXTrainAdapter",
    "CustomVideoXLoadStandIn",
    "CustomVideoXApplyStandIn",
}
# Combo inputs whose choices depend on the machine (files, ComfyUI's sampler list): only the default is kept.
DYNAMIC_COMBOS = {"adapter", "resume_from", "sampler_name", "scheduler", "standin_name"}


def _input_record(name: str, section: str, spec) -> dict:
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    record = {"name": name, "section": section}
    if isinstance(kind, list):  # V1-style combo
        record["type"] = "COMBO"
        if name not in DYNAMIC_COMBOS:
            record["choices"] = list(kind)
    else:
        record["type"] = kind
        if kind == "COMBO" and name not in DYNAMIC_COMBOS:
            record["choices"] = list(options.get("options", []))
    if "default" in options:
        record["default"] = options["default"]
    return record


def live_schema(comfy_host, pack_module) -> dict:
    """The V1 node info (what /object_info serves and the editor saves against) of the pack's nodes."""
    schema = {}
    for node_id in sorted(comfy_host.node_ids()):
        node = comfy_host.node_class(node_id)
        if not node.__module__.startswith(pack_module.__name__ + "."):
            continue
        info = node.GET_NODE_INFO_V1()
        inputs = []
        for section in ("required", "optional"):
            for name in info["input_order"].get(section, []):
                inputs.append(_input_record(name, section, info["input"][section][name]))
        schema[node_id] = {
            "display_name": info["display_name"],
            "category": info["category"],
            "inputs": inputs,
            "outputs": [
                {"type": kind, "name": name}
                for kind, name in zip(info["output"], info["output_name"], strict=True)
            ],
        }
    return schema


@pytest.fixture(scope="module")
def schema(comfy_host, pack_module) -> dict:
    live = live_schema(comfy_host, pack_module)
    if os.environ.get("CVX_UPDATE_SCHEMA_SNAPSHOT") == "1":
        SNAPSHOT.write_text(json.dumps(live, indent=2, sort_keys=True) + "\n")
    return live


def test_all_node_ids_are_registered_under_one_category_root(comfy_host, schema):
    assert set(schema) >= NODE_IDS
    for node_id, node in schema.items():
        assert node["category"].split("/")[0] == CATEGORY_ROOT, node_id


def test_schema_is_backward_compatible(schema):
    recorded = json.loads(SNAPSHOT.read_text())
    problems = []
    for node_id, old in recorded.items():
        new = schema.get(node_id)
        if new is None:
            problems.append(f"{node_id}: node id removed (deprecate it instead)")
            continue
        for index, old_input in enumerate(old["inputs"]):
            if index >= len(new["inputs"]):
                problems.append(f"{node_id}: input '{old_input['name']}' removed")
                continue
            if new["inputs"][index] != old_input:
                problems.append(f"{node_id}: input {index} was {old_input}, now {new['inputs'][index]}")
        if new["outputs"][: len(old["outputs"])] != old["outputs"]:
            problems.append(f"{node_id}: outputs were {old['outputs']}, now {new['outputs']}")
    assert not problems, "changes that break saved workflows:\n" + "\n".join(problems)


def test_schema_snapshot_is_current(schema):
    recorded = json.loads(SNAPSHOT.read_text())
    assert schema == recorded, (
        "the live schema differs from tests/host/schema_snapshot.json; if the change is a compatible "
        "addition, record it with CVX_UPDATE_SCHEMA_SNAPSHOT=1 and commit the file"
    )
