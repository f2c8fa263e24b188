"""Saved workflows keep working: node ids, category, and a committed schema snapshot.

The snapshot records, for every node of the pack, each input's name, section (required/optional),
type and default in order, fixed combo choices, and the outputs. Two tests guard it:

- ``test_schema_is_backward_compatible`` (rule in :func:`compatibility_problems`): ids may not
  disappear; sockets and widgets each keep their order, names, types and defaults, with new ones only
  after them; added inputs are optional and optional ones stay optional (an input may only be relaxed
  from required to optional); outputs may only be appended. It compares the live schema with the
  snapshot as it was read *before* anything could rewrite it (the ``recorded`` fixture), and the update
  mode refuses to write a snapshot that breaks that rule, so updating the snapshot can never "fix" it.
- ``test_schema_snapshot_is_current`` wants the snapshot to list exactly what is live; after a
  *compatible* addition, record it with ``CVX_UPDATE_SCHEMA_SNAPSHOT=1`` and commit the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from nodes_support import PACK_NODE_IDS

SNAPSHOT = Path(__file__).with_name("schema_snapshot.json")
CATEGORY_ROOT = "CustomVideoX"
NODE_IDS = PACK_NODE_IDS
# Combo inputs whose choices depend on the machine (files, ComfyUI's sampler list): only the default is kept.
DYNAMIC_COMBOS = {"adapter", "resume_from", "sampler_name", "scheduler", "checkpoint", "standin_name", "pack"}


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
def recorded() -> dict:
    """The snapshot as committed: read once, before the ``schema`` fixture may rewrite the file."""
    return json.loads(SNAPSHOT.read_text())


@pytest.fixture(scope="module")
def schema(comfy_host, pack_module, recorded) -> dict:
    live = live_schema(comfy_host, pack_module)
    if os.environ.get("CVX_UPDATE_SCHEMA_SNAPSHOT") == "1":
        problems = compatibility_problems(recorded, live)
        if problems:
            pytest.fail(
                "CVX_UPDATE_SCHEMA_SNAPSHOT=1 refuses to record a schema that breaks saved workflows:\n"
                + "\n".join(problems)
            )
        SNAPSHOT.write_text(json.dumps(live, indent=2, sort_keys=True) + "\n")
    return live


def test_all_node_ids_are_registered_under_one_category_root(comfy_host, schema):
    assert set(schema) >= NODE_IDS
    for node_id, node in schema.items():
        assert node["category"].split("/")[0] == CATEGORY_ROOT, node_id


WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})


def _frontend_order(inputs: list[dict], *, widgets: bool) -> list[dict]:
    """Inputs as a saved graph depends on them: the editor lays out sockets (links point at slot
    indices) and widgets (``widgets_values`` is a list) each as required first, then optional."""
    chosen = [record for record in inputs if (record["type"] in WIDGET_TYPES) == widgets]
    ordered = [record for record in chosen if record["section"] == "required"]
    return ordered + [record for record in chosen if record["section"] == "optional"]


def _without_section(record: dict) -> dict:
    return {key: value for key, value in record.items() if key != "section"}


def compatibility_problems(recorded: dict, live: dict) -> list[str]:
    """Why ``live`` would break graphs saved against ``recorded`` (both ``live_schema`` form).

    Saved graphs keep working when no node id disappears; the sockets and the widgets each keep their
    order (a saved graph's links and widget values are positional) with the same names, types, choices
    and defaults, new ones only after them; API graphs (inputs by name) still pass validation, so an
    added input must be optional and an optional one may not become required. An input may become
    optional (a relaxation: every saved graph still validates) when both orders above are unchanged.
    Outputs may only be appended.
    """
    problems = []
    for node_id, old in recorded.items():
        new = live.get(node_id)
        if new is None:
            problems.append(f"{node_id}: node id removed (deprecate it instead)")
            continue
        for widgets, kind in ((False, "socket"), (True, "widget")):
            old_order = _frontend_order(old["inputs"], widgets=widgets)
            new_order = _frontend_order(new["inputs"], widgets=widgets)
            for index, old_input in enumerate(old_order):
                if index >= len(new_order):
                    problems.append(f"{node_id}: {kind} '{old_input['name']}' removed")
                elif _without_section(new_order[index]) != _without_section(old_input):
                    problems.append(f"{node_id}: {kind} {index} was {old_input}, now {new_order[index]}")
        old_sections = {record["name"]: record["section"] for record in old["inputs"]}
        for record in new["inputs"]:
            before = old_sections.get(record["name"])
            if record["section"] == "required" and before in (None, "optional"):
                what = "added" if before is None else "made required"
                problems.append(
                    f"{node_id}: input '{record['name']}' {what} as required (API graphs would fail)"
                )
        if new["outputs"][: len(old["outputs"])] != old["outputs"]:
            problems.append(f"{node_id}: outputs were {old['outputs']}, now {new['outputs']}")
    return problems


def test_schema_is_backward_compatible(schema, recorded):
    problems = compatibility_problems(recorded, schema)
    assert not problems, "changes that break saved workflows:\n" + "\n".join(problems)


def _node(*inputs: tuple[str, str, str]) -> dict:
    return {
        "inputs": [{"name": name, "section": section, "type": kind} for name, section, kind in inputs],
        "outputs": [{"type": "MODEL", "name": "MODEL"}],
    }


def test_the_compatibility_rule_allows_relaxations_and_additions_and_refuses_breaks():
    old = {
        "N": _node(("model", "required", "MODEL"), ("ref", "required", "REF"), ("on", "required", "BOOLEAN"))
    }
    relaxed = _node(
        ("model", "required", "MODEL"),
        ("on", "required", "BOOLEAN"),
        ("ref", "optional", "REF"),
        ("x", "optional", "INT"),
    )
    assert compatibility_problems(old, {"N": relaxed}) == []
    added_required = _node(
        *[(r["name"], r["section"], r["type"]) for r in old["N"]["inputs"]], ("x", "required", "INT")
    )
    assert compatibility_problems(old, {"N": added_required})
    reordered = _node(
        ("ref", "required", "REF"), ("model", "required", "MODEL"), ("on", "required", "BOOLEAN")
    )
    assert compatibility_problems(old, {"N": reordered})
    renamed = _node(
        ("model", "required", "MODEL"), ("ref", "required", "REF"), ("enabled", "required", "BOOLEAN")
    )
    assert compatibility_problems(old, {"N": renamed})
    assert compatibility_problems(old, {})
    tightened = {"N": _node(("model", "required", "MODEL"), ("ref", "optional", "REF"))}
    assert compatibility_problems(
        tightened, {"N": _node(("model", "required", "MODEL"), ("ref", "required", "REF"))}
    )


def test_schema_snapshot_is_current(schema):
    recorded = json.loads(SNAPSHOT.read_text())
    assert schema == recorded, (
        "the live schema differs from tests/host/schema_snapshot.json; if the change is a compatible "
        "addition, record it with CVX_UPDATE_SCHEMA_SNAPSHOT=1 and commit the file"
    )
