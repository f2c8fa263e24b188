"""The example workflows in a real browser: ComfyUI's own frontend, headless Chromium, no mocks.

A dedicated ComfyUI server (this pack installed) serves the installed ``comfyui-frontend-package``;
its models folders hold empty placeholder files named like the files the workflows' loaders ask for
(so the editor sees what a user who downloaded them sees), its input folder the subject pictures.
Chromium (Debian's ``chromium``, driven by Playwright for Python through ``browser.py``) opens the editor
and loads each UI workflow the way the template browser does: fetch
``/api/workflow_templates/<pack>/<name>.json``, then ``app.loadGraphData(json, …, {openSource:
"template"})``. Then, for each workflow:

- no missing node, checked three ways: every node type is in ``LiteGraph.registered_node_types``
  (the predicate the frontend itself uses), the list of missing types the frontend hands to its
  extensions' ``afterConfigureGraph`` hook is empty, and no node came out as an error placeholder;
  and the page shows no error overlay or dialog. A control graph with an unknown node type shows
  that each of these checks does fire.
- each of our nodes is on the canvas, drawn in the current frame, with the widgets its schema
  declares (names and order from ``/object_info``);
- the frontend reads the file back to the same widget values and links, and converts it
  (``app.graphToPrompt``) to exactly the committed API twin;
- no two nodes overlap, and a screenshot is saved into pytest's temporary folder. With
  ``CVX_UPDATE_SCREENSHOTS=1`` the CogVideoX-5B one also replaces ``docs/images/workflow_cogvideox5b.png``.

Skips with one line when Chromium or Playwright is missing. Every wait is bounded; Chromium and the server are
killed at the end of the module.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from browser import Chromium, find_chromium
from graphs_support import owned_parts, pack_node_types, unchanged_node_ids
from harness import PACK_FOLDER_NAME, REPO_ROOT, ComfyServer
from nodes_support import PACK_NODE_IDS

pytestmark = pytest.mark.browser

WORKFLOWS_DIR = REPO_ROOT / "workflows"
UI_NAMES = tuple(sorted(path.stem for path in WORKFLOWS_DIR.glob("*.json")))
"""Every UI graph shipped in workflows/ (test_workflows.py checks the folder holds exactly the examples)."""
OUR_NODE_TYPES = PACK_NODE_IDS
MODEL_FOLDERS = {
    "UNETLoader": "diffusion_models",
    "CLIPLoader": "text_encoders",
    "VAELoader": "vae",
    "CLIPVisionLoader": "clip_vision",
    "CustomVideoXLoadStandIn": "loras",
    "LoraLoaderModelOnly": "loras",
}
FRONTEND_WIDGET_EXTRAS = {"control_after_generate", "upload", "$$canvas-image-preview"}
"""Widgets the frontend adds on its own (seed control mode, upload button, image preview)."""
EDITOR_SIZE = (1600, 1000)
EDITOR_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False}
"""No first-run template dialog over the canvas, no minimap over the screenshot."""
README_SCREENSHOT = REPO_ROOT / "docs" / "images" / "workflow_cogvideox5b.png"
UPDATE_SCREENSHOTS_ENV = "CVX_UPDATE_SCREENSHOTS"
MAX_SCREENSHOT_BYTES = 300_000
SETTLE_SECONDS = 1.0

APP_READY = (
    "!!(window.app && window.app.graph && window.app.canvas && window.LiteGraph"
    " && window.LiteGraph.registered_node_types"
    " && 'CustomVideoXSample' in window.LiteGraph.registered_node_types)"
)

INSTALL_PROBE = """
(() => {
  window.__cvx = {missing: null};
  app.registerExtension({
    name: 'customvideox.tests.missing-node-probe',
    afterConfigureGraph(missing) {
      window.__cvx.missing = (missing || []).map((item) => (typeof item === 'string' ? item : item.type));
    },
  });
  return true;
})()
"""

LOAD_AND_REPORT = """
(async (source, name, settleMs) => {
  const data = typeof source === 'string' ? await (await fetch(source)).json() : source;
  const registered = window.LiteGraph.registered_node_types;
  const unregistered = data.nodes.map((node) => node.type).filter((type) => !(type in registered));
  window.__cvx.missing = null;
  await app.loadGraphData(data, true, true, name, {openSource: 'template'});
  await new Promise((resolve) => setTimeout(resolve, settleMs));
  app.canvas.draw(true, true);
  const drawn = new Set((app.canvas.visible_nodes || []).map((node) => String(node.id)));
  const visible = (element) => element.offsetParent !== null || element.getClientRects().length > 0;
  const texts = (selector) =>
    Array.from(document.querySelectorAll(selector)).filter(visible).map((element) => element.innerText.trim());
  return JSON.stringify({
    unregistered,
    missing: window.__cvx.missing,
    placeholders: app.graph._nodes.filter((node) => node.has_errors || node.last_serialization).map((node) => node.type),
    nodes: app.graph._nodes.map((node) => ({
      id: String(node.id),
      type: node.type,
      pos: Array.from(node.pos),
      size: Array.from(node.size),
      widgets: (node.widgets || []).map((widget) => widget.name),
      drawn: drawn.has(String(node.id)),
    })),
    titleHeight: window.LiteGraph.NODE_TITLE_HEIGHT,
    serialized: app.graph.serialize(),
    prompt: (await app.graphToPrompt()).output,
    overlays: texts('[data-testid="error-overlay"]'),
    dialogs: texts('[role="dialog"]'),
    pageText: document.body.innerText,
  });
})
"""


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def draw_subject(path: Path, tint: int = 0) -> None:
    """A plush-bear-like subject on white: something recognisable in the editor's image preview."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (360, 480), "white")
    draw = ImageDraw.Draw(image)
    fur, muzzle = (150 + tint, 100, 60), (215, 180, 140)
    for box in (
        (70, 40, 150, 120),
        (210, 40, 290, 120),
        (90, 250, 270, 440),
        (60, 300, 120, 380),
        (240, 300, 300, 380),
    ):
        draw.ellipse(box, fill=fur)
    draw.ellipse((80, 60, 280, 260), fill=fur)
    draw.ellipse((140, 160, 220, 230), fill=muzzle)
    for box in ((135, 120, 155, 140), (205, 120, 225, 140), (168, 165, 192, 185)):
        draw.ellipse(box, fill=(30, 20, 15))
    image.save(path)


def save_readme_screenshot(source: Path) -> None:
    """Copy a screenshot to the README's image, reduced to a 256-colour palette if it is too large."""
    from PIL import Image

    README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, README_SCREENSHOT)
    if README_SCREENSHOT.stat().st_size > MAX_SCREENSHOT_BYTES:
        with Image.open(source) as image:
            image.convert("RGB").quantize(colors=256).save(README_SCREENSHOT, optimize=True)
    assert README_SCREENSHOT.stat().st_size < MAX_SCREENSHOT_BYTES


def schema_widgets(object_info: dict, class_type: str) -> list[str]:
    """Widget input names of a node, in the order ``/object_info`` declares them."""
    info = object_info[class_type]
    names = []
    for section in ("required", "optional"):
        for name in info["input_order"].get(section, []):
            spec = info["input"][section][name]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            declared = spec[0]
            widget = isinstance(declared, list) or declared in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
            if widget and not options.get("forceInput"):
                names.append(name)
    return names


def overlapping_nodes(nodes: list[dict], title_height: float) -> list[tuple[str, str]]:
    """Pairs of nodes whose boxes (title bar included) intersect."""
    boxes = [
        (
            node["id"],
            node["pos"][0],
            node["pos"][1] - title_height,
            node["size"][0],
            node["size"][1] + title_height,
        )
        for node in nodes
    ]
    pairs = []
    for index, (first, x1, y1, w1, h1) in enumerate(boxes):
        for second, x2, y2, w2, h2 in boxes[index + 1 :]:
            if x1 < x2 + w2 and x2 < x1 + w1 and y1 < y2 + h2 and y2 < y1 + h1:
                pairs.append((first, second))
    return pairs


def strip_meta(api: dict) -> dict:
    return {
        node_id: {"class_type": node["class_type"], "inputs": node["inputs"]} for node_id, node in api.items()
    }


# ----------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium_path() -> str:
    pytest.importorskip("playwright", reason="no Playwright: pip install -r requirements-dev.txt")
    path = find_chromium()
    if path is None:
        pytest.skip("no Chromium: install Debian's chromium (apt-get install chromium) or set CHROMIUM_PATH")
    return path


@pytest.fixture(scope="module")
def editor_server(chromium_path, comfyui_path, tmp_path_factory):
    """A server of its own, with placeholder model files named like the workflows' and subject pictures."""
    base_dir = tmp_path_factory.mktemp("editor_server")
    for name in UI_NAMES:
        workflow = read_json(WORKFLOWS_DIR / f"{name}.json")
        for node in workflow["nodes"]:
            if node["type"] in MODEL_FOLDERS:
                folder = base_dir / "models" / MODEL_FOLDERS[node["type"]]
                folder.mkdir(parents=True, exist_ok=True)
                (folder / node["widgets_values"][0]).write_bytes(b"")  # listed by the loaders, never loaded
            elif node["type"] == "CustomVideoXLoadFaceModel":  # a pack is a folder of .onnx files
                pack = base_dir / "models" / "insightface" / "models" / node["widgets_values"][0]
                pack.mkdir(parents=True, exist_ok=True)
                (pack / "det_10g.onnx").write_bytes(b"")  # listed, never loaded
            elif node["type"] == "LoadImage":
                (base_dir / "input").mkdir(parents=True, exist_ok=True)
                draw_subject(base_dir / "input" / node["widgets_values"][0], tint=10 * (node["id"] % 5))
    settings = base_dir / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps(EDITOR_SETTINGS), encoding="utf-8")
    server = ComfyServer(comfyui_path, base_dir)
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def editor(chromium_path, editor_server):
    """The editor page, ready: our nodes registered and the missing-node probe installed."""
    with Chromium(chromium_path, width=EDITOR_SIZE[0], height=EDITOR_SIZE[1]) as browser:
        page = browser.page()
        page.navigate(editor_server.url + "/", timeout=60)
        page.wait_for(APP_READY, timeout=60)
        page.evaluate(INSTALL_PROBE)
        yield page


def load(editor, source, name: str) -> dict:
    expression = f"{LOAD_AND_REPORT}({json.dumps(source)}, {json.dumps(name)}, {int(SETTLE_SECONDS * 1000)})"
    return json.loads(editor.evaluate(expression, timeout=60))


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", UI_NAMES)
def test_workflow_opens_in_the_editor_with_our_nodes_and_widgets(
    name, editor, editor_server, tmp_path_factory
):
    workflow = read_json(WORKFLOWS_DIR / f"{name}.json")
    api = read_json(WORKFLOWS_DIR / "api" / f"{name}_api.json")
    console_start = len(editor.console)
    report = load(editor, f"/api/workflow_templates/{PACK_FOLDER_NAME}/{name}.json", name)

    assert report["unregistered"] == []
    assert report["missing"] == [], "the frontend reported missing node types"
    assert report["placeholders"] == []
    assert report["overlays"] == [] and report["dialogs"] == [], (report["overlays"], report["dialogs"])
    assert "missing node" not in report["pageText"].lower()

    object_info = editor_server.object_info()
    ours = [node for node in report["nodes"] if node["type"] in OUR_NODE_TYPES]
    assert len(ours) >= 3
    for node in ours:
        widgets = [widget for widget in node["widgets"] if widget not in FRONTEND_WIDGET_EXTRAS]
        assert widgets == schema_widgets(object_info, node["type"]), node
        assert node["drawn"], f"{node['type']} was not drawn in the editor's view"
        assert node["size"][0] > 100 and node["size"][1] > 40, node

    # What the pack owns is compared everywhere; a core node exactly where its live schema still writes
    # the committed entry (on a newer ComfyUI a changed core widget, e.g. Save Video's format, only has
    # to open, which the checks above ensure).
    ui_ids, api_ids = unchanged_node_ids(name, object_info)
    pack_types = pack_node_types(object_info)
    saved = {node["id"]: node for node in report["serialized"]["nodes"]}
    for node in workflow["nodes"]:
        if node["id"] in ui_ids or node["type"] in pack_types:
            assert saved[node["id"]].get("widgets_values", []) == node.get("widgets_values", []), node["type"]
    assert report["serialized"]["links"] == workflow["links"]
    prompt, expected = strip_meta(report["prompt"]), strip_meta(api)
    assert owned_parts(json.dumps(prompt), pack_types) == owned_parts(json.dumps(expected), pack_types)
    assert {key: prompt.get(key) for key in api_ids} == {key: expected[key] for key in api_ids}
    assert overlapping_nodes(report["nodes"], report["titleHeight"]) == []

    errors = [entry for entry in editor.console[console_start:] if entry.level in ("error", "exception")]
    assert errors == [], errors

    screenshot = editor.screenshot(tmp_path_factory.getbasetemp() / "screenshots" / f"{name}.png")
    assert screenshot.stat().st_size > 20_000  # a rendered editor, not a blank page
    if name == "customvideox_cogvideox5b" and os.environ.get(UPDATE_SCREENSHOTS_ENV) == "1":
        save_readme_screenshot(screenshot)


def test_control_graph_with_an_unknown_node_trips_every_missing_node_check(editor):
    """The checks above can fail: the same graph with one node type renamed is caught by each of them."""
    workflow = read_json(WORKFLOWS_DIR / "customvideox_cogvideox5b.json")
    renamed = next(node for node in workflow["nodes"] if node["type"] == "CustomVideoXTimeAwareBias")
    renamed["type"] = "CustomVideoXNotInstalled"
    report = load(editor, workflow, "customvideox_control_missing_node")
    assert report["unregistered"] == ["CustomVideoXNotInstalled"]
    assert report["missing"] == ["CustomVideoXNotInstalled"]
    assert report["placeholders"] == ["CustomVideoXNotInstalled"]
    overlay = editor.wait_for(
        "Array.from(document.querySelectorAll('[data-testid=\"error-overlay\"]'))"
        ".map((element) => element.innerText).join('\\n')",
        timeout=15,
    )
    assert "CustomVideoXNotInstalled" in overlay
    assert "missing node" in overlay.lower()
