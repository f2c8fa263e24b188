"""Write the example workflows in ``workflows/``: each graph once as a spec, out come both files.

Every example is described once below (nodes, widget values by input name, wires, layout). From that
spec and ComfyUI's ``/object_info`` (which says, per node, which inputs are widgets and in what order)
this script writes

- ``workflows/<name>.json``: the editor's UI format (what ComfyUI's frontend saves and opens: version
  0.4, ``nodes`` with ``inputs``/``outputs``/``widgets_values``, ``links`` as
  ``[id, from_node, from_slot, to_node, to_slot, type]``, ``groups``);
- ``workflows/api/<name>_api.json``: the API-format twin (``{id: {"class_type", "inputs", "_meta"}}``),
  what ``POST /prompt`` and the batch client (``python -m customvideox_core.batch``) take.

so the two never drift. The host tests rebuild both from the live server's ``/object_info`` and
compare them with the committed files, and the browser test checks that the real frontend reads the
UI file back into the same widget values and converts it into the same API graph.

Usage (standard library only; any Python)::

    python scripts/make_workflows.py --server http://127.0.0.1:8188   # a ComfyUI with this pack
    python scripts/make_workflows.py --object-info object_info.json   # a saved /object_info answer
    python scripts/make_workflows.py --server ... --check             # exit 1 if a file would change
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

logger = logging.getLogger(__name__)

WORKFLOWS_DIR = Path(__file__).resolve().parents[1] / "workflows"

FRONTEND_ONLY_NODES: dict[str, tuple[str, ...]] = {"MarkdownNote": ("text",), "Note": ("text",)}
"""Node types the frontend registers itself (absent from ``/object_info``) → their widget names."""

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
DYNAMIC_COMBO_TYPE = "COMFY_DYNAMICCOMBO_V3"
AUTOGROW_TYPE = "COMFY_AUTOGROW_V3"
CONTROL_AFTER_GENERATE = "control_after_generate"
UPLOAD_WIDGET_VALUE = "image"
"""What the frontend stores for LoadImage's upload button (the widget after ``image``)."""

OPTIONAL_SHAPE = 7
"""LiteGraph's hollow-dot shape the frontend saves on optional inputs."""


# ----------------------------------------------------------------------------------------------
# Node schemas from /object_info
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSchema:
    """One input of a node as ``/object_info`` declares it."""

    name: str
    type: str
    """``COMBO`` for lists of choices; otherwise the declared type (``INT``, ``MODEL``, ...)."""
    optional: bool
    options: Mapping[str, Any]
    choices: tuple[Any, ...] | None = None

    @property
    def is_widget(self) -> bool:
        if self.options.get("forceInput"):
            return False
        return self.type in WIDGET_TYPES or self.type == DYNAMIC_COMBO_TYPE

    @property
    def extra_widget_value(self) -> str | None:
        """The value of the widget the frontend adds right after this one, if any."""
        if self.options.get(CONTROL_AFTER_GENERATE):
            return "randomize"
        if self.options.get("image_upload"):
            return UPLOAD_WIDGET_VALUE
        return None


@dataclass(frozen=True)
class NodeSchema:
    class_type: str
    display_name: str
    inputs: tuple[InputSchema, ...]
    outputs: tuple[tuple[str, str], ...]
    """``(name, type)`` per output slot."""
    frontend_only: bool = False

    def input(self, name: str) -> InputSchema:
        for item in self.inputs:
            if item.name == name:
                return item
        raise KeyError(
            f"{self.class_type} has no input {name!r}; its inputs are {[item.name for item in self.inputs]}"
        )

    @property
    def widgets(self) -> tuple[InputSchema, ...]:
        return tuple(item for item in self.inputs if item.is_widget)


def parse_input(name: str, spec: Sequence[Any], optional: bool) -> InputSchema:
    declared = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if isinstance(declared, list):
        return InputSchema(name, "COMBO", optional, options, tuple(declared))
    if declared == "COMBO":
        return InputSchema(name, "COMBO", optional, options, tuple(options.get("options", ())))
    return InputSchema(name, str(declared), optional, options)


def node_schema(class_type: str, object_info: Mapping[str, Any]) -> NodeSchema:
    """The schema of ``class_type``; frontend-only note nodes get a one-widget schema."""
    if class_type in FRONTEND_ONLY_NODES:
        widgets = tuple(
            InputSchema(name, "STRING", False, {"multiline": True})
            for name in FRONTEND_ONLY_NODES[class_type]
        )
        return NodeSchema(class_type, class_type, widgets, (), frontend_only=True)
    if class_type not in object_info:
        raise KeyError(
            f"node type {class_type!r} is not in /object_info; is the pack (or core node) installed on "
            "the server the schemas came from?"
        )
    info = object_info[class_type]
    order = info.get("input_order") or {
        section: list(info["input"].get(section, {})) for section in info["input"]
    }
    inputs = []
    for section in ("required", "optional"):
        declared = info["input"].get(section, {})
        for name in order.get(section, []):
            inputs.append(parse_input(name, declared[name], optional=section == "optional"))
    outputs = tuple(zip(info.get("output_name") or info["output"], info["output"], strict=True))
    return NodeSchema(class_type, info.get("display_name") or class_type, tuple(inputs), outputs)


# ----------------------------------------------------------------------------------------------
# Specs
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """One node of an example: widget values and wires by input name, and where it sits."""

    id: int
    class_type: str
    pos: tuple[int, int]
    size: tuple[int, int]
    values: Mapping[str, Any] = field(default_factory=dict)
    links: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """Input name → ``(source node id, source output slot)``."""
    title: str | None = None
    color: str | None = None
    bgcolor: str | None = None


@dataclass(frozen=True)
class Group:
    title: str
    bounding: tuple[int, int, int, int]
    """``x, y, width, height``."""
    color: str = "#3f789e"


@dataclass(frozen=True)
class WorkflowSpec:
    name: str
    nodes: tuple[Node, ...]
    groups: tuple[Group, ...] = ()

    def node(self, node_id: int) -> Node:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(f"workflow {self.name} has no node {node_id}")


# ----------------------------------------------------------------------------------------------
# Building both formats
# ----------------------------------------------------------------------------------------------


def _socket_inputs(node: Node, schema: NodeSchema) -> list[dict[str, Any]]:
    """The link-only inputs the frontend shows for ``node``: plain sockets, then autogrow slots."""
    sockets: list[dict[str, Any]] = []
    for item in schema.inputs:
        if item.is_widget:
            continue
        if item.type == AUTOGROW_TYPE:
            sockets.extend(_autogrow_slots(node, item))
            continue
        socket = {"name": item.name, "type": item.type, "link": None}
        if item.optional:
            socket["shape"] = OPTIONAL_SHAPE
        sockets.append(socket)
    return sockets


def _autogrow_slots(node: Node, item: InputSchema) -> list[dict[str, Any]]:
    """``name.prefix0 …``: the wired slots plus one empty slot, as the frontend grows them."""
    template = item.options["template"]
    prefix, minimum, maximum = template["prefix"], int(template["min"]), int(template["max"])
    slot_type = next(iter(next(iter(template["input"].values())).values()))[0]
    wired = [name for name in node.links if name.startswith(f"{item.name}.{prefix}")]
    count = min(max(len(wired) + 1, minimum), maximum)
    slots = []
    for index in range(count):
        slot = {
            "label": f"{prefix}{index}",
            "name": f"{item.name}.{prefix}{index}",
            "type": slot_type,
            "link": None,
        }
        if index >= minimum:
            slot["shape"] = OPTIONAL_SHAPE
        slots.append(slot)
    return slots


def _widget_inputs(schema: NodeSchema) -> list[dict[str, Any]]:
    """The input slots the frontend gives every widget (a widget can be turned into a socket)."""
    slots: list[dict[str, Any]] = []
    for item in schema.widgets:
        slot = {"name": item.name, "type": item.type, "widget": {"name": item.name}, "link": None}
        if item.optional:
            slot["shape"] = OPTIONAL_SHAPE
        slots.append(slot)
        if item.options.get("image_upload"):
            slots.append(
                {"name": "upload", "type": "IMAGEUPLOAD", "widget": {"name": "upload"}, "link": None}
            )
    return slots


def _widget_values(node: Node, schema: NodeSchema) -> list[Any]:
    values: list[Any] = []
    for item in schema.widgets:
        if item.name not in node.values:
            raise KeyError(f"node {node.id} ({node.class_type}) needs a value for widget {item.name!r}")
        values.append(node.values[item.name])
        extra = item.extra_widget_value
        if extra is not None:
            values.append(node.values.get(f"{item.name}.{CONTROL_AFTER_GENERATE}", extra))
    return values


def _check_spec_names(node: Node, schema: NodeSchema) -> None:
    known = {item.name for item in schema.inputs}
    for name in node.values:
        base = name.split(f".{CONTROL_AFTER_GENERATE}")[0]
        if base not in known:
            raise KeyError(f"node {node.id} ({node.class_type}) sets unknown widget {name!r}")
    for name in node.links:
        if name not in known and name.split(".")[0] not in known:
            raise KeyError(f"node {node.id} ({node.class_type}) wires unknown input {name!r}")


def _execution_order(spec: WorkflowSpec) -> dict[int, int]:
    """Topological order (frontend's ``order`` field): sources first, ties by node id."""
    remaining = {node.id: {source for source, _ in node.links.values()} for node in spec.nodes}
    order: dict[int, int] = {}
    while remaining:
        ready = sorted(node_id for node_id, sources in remaining.items() if not sources - order.keys())
        if not ready:
            raise ValueError(f"workflow {spec.name} has a cycle among nodes {sorted(remaining)}")
        for node_id in ready:
            order[node_id] = len(order)
            del remaining[node_id]
    return order


def build_ui(spec: WorkflowSpec, object_info: Mapping[str, Any]) -> dict[str, Any]:
    """The UI-format (LiteGraph 0.4) workflow of ``spec``."""
    schemas = {node.id: node_schema(node.class_type, object_info) for node in spec.nodes}
    ui_nodes: dict[int, dict[str, Any]] = {}
    for node in spec.nodes:
        schema = schemas[node.id]
        _check_spec_names(node, schema)
        inputs = _socket_inputs(node, schema) + ([] if schema.frontend_only else _widget_inputs(schema))
        ui_nodes[node.id] = {
            "id": node.id,
            "type": node.class_type,
            "pos": list(node.pos),
            "size": list(node.size),
            "flags": {},
            "order": 0,
            "mode": 0,
            "inputs": inputs,
            "outputs": [{"name": name, "type": kind, "links": []} for name, kind in schema.outputs],
            **({"title": node.title} if node.title else {}),
            "properties": {} if schema.frontend_only else {"Node name for S&R": node.class_type},
            "widgets_values": _widget_values(node, schema),
            **({"color": node.color} if node.color else {}),
            **({"bgcolor": node.bgcolor} if node.bgcolor else {}),
        }
    links: list[list[Any]] = []
    for node in spec.nodes:
        for input_name, (source_id, source_slot) in node.links.items():
            target_inputs = ui_nodes[node.id]["inputs"]
            target_slot = next(
                (index for index, item in enumerate(target_inputs) if item["name"] == input_name), None
            )
            if target_slot is None:
                raise KeyError(f"node {node.id} ({node.class_type}) has no input slot {input_name!r}")
            if source_id not in ui_nodes:
                raise KeyError(f"node {node.id} input {input_name!r} is wired to missing node {source_id}")
            source_output = ui_nodes[source_id]["outputs"][source_slot]
            link_id = len(links) + 1
            links.append([link_id, source_id, source_slot, node.id, target_slot, source_output["type"]])
            target_inputs[target_slot]["link"] = link_id
            source_output["links"].append(link_id)
    for node_id, position in _execution_order(spec).items():
        ui_nodes[node_id]["order"] = position
    left = min(node.pos[0] for node in spec.nodes)
    top = min(node.pos[1] for node in spec.nodes)
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"customvideox/workflows/{spec.name}")),
        "revision": 0,
        "last_node_id": max(ui_nodes),
        "last_link_id": len(links),
        "nodes": [ui_nodes[node.id] for node in spec.nodes],
        "links": links,
        "groups": [
            {
                "id": index + 1,
                "title": group.title,
                "bounding": list(group.bounding),
                "color": group.color,
                "font_size": 24,
                "flags": {},
            }
            for index, group in enumerate(spec.groups)
        ],
        "config": {},
        "extra": {"ds": {"scale": 0.6, "offset": [40 - left, 40 - top]}},
        "version": 0.4,
    }


def build_api(spec: WorkflowSpec, object_info: Mapping[str, Any]) -> dict[str, Any]:
    """The API-format twin: every non-note node, widget values by name, wires as ``[id, slot]``."""
    api: dict[str, Any] = {}
    for node in sorted(spec.nodes, key=lambda item: item.id):
        schema = node_schema(node.class_type, object_info)
        if schema.frontend_only:
            continue
        _check_spec_names(node, schema)
        inputs: dict[str, Any] = {}
        for item in schema.widgets:
            if item.name not in node.links:
                inputs[item.name] = node.values[item.name]
        for input_name, (source_id, source_slot) in node.links.items():
            inputs[input_name] = [str(source_id), source_slot]
        api[str(node.id)] = {
            "inputs": inputs,
            "class_type": node.class_type,
            "_meta": {"title": node.title or schema.display_name},
        }
    return api


# ----------------------------------------------------------------------------------------------
# The examples
# ----------------------------------------------------------------------------------------------

SUBJECT_IMAGE = "customvideox_subject.png"
PROMPT = (
    "A fluffy brown teddy bear walks along a sunlit forest path while autumn leaves drift down around it. "
    "The camera tracks slowly beside the teddy bear. Warm afternoon light, shallow depth of field, "
    "detailed fur, smooth natural motion."
)
ENTITY_WORDS = "teddy bear"
NEGATIVE_PROMPT = (
    "blurry, low quality, distorted, deformed, extra limbs, flickering, static frame, still image, "
    "text, subtitles, watermark, oversaturated, overexposed"
)
OUTPUT_PREFIX = "video/CustomVideoX"
SEED = 42

NOTE_COLOR, NOTE_BGCOLOR = "#432", "#653"
POSITIVE_COLOR, POSITIVE_BGCOLOR = "#232", "#353"
NEGATIVE_COLOR, NEGATIVE_BGCOLOR = "#322", "#533"
PACK_COLOR, PACK_BGCOLOR = "#223", "#335"
PACK_STYLE: Mapping[str, str] = MappingProxyType({"color": PACK_COLOR, "bgcolor": PACK_BGCOLOR})
"""``Node`` keywords that colour a node of this pack."""


@dataclass(frozen=True)
class HostFiles:
    """Model files and sampling settings of one host model."""

    label: str
    unet: str
    text_encoder: str
    clip_type: str
    vae: str
    width: int
    height: int
    length: int
    steps: int
    cfg: float
    sampler: str
    scheduler: str
    fps: float
    shift: float | None = None
    """``ModelSamplingSD3`` shift (flow models such as Wan); ``None``: no ModelSamplingSD3 node."""
    guidance: str = "cfg"
    """Sample's ``guidance``: ``cfg``, or ``phantom`` (three passes; ``cfg`` is then the text scale)."""
    image_cfg: float = 5.0
    """Sample's image guidance scale (``phantom`` guidance only)."""


COGVIDEOX_5B = HostFiles(
    label="CogVideoX-5B",
    unet="cogvideox_5b_bf16.safetensors",
    text_encoder="t5xxl_fp16.safetensors",
    clip_type="cogvideox",
    vae="cogvideox_vae.safetensors",
    width=720,
    height=480,
    length=49,
    steps=50,
    cfg=6.0,
    sampler="euler",
    scheduler="simple",
    fps=8.0,
)
WAN21_1_3B = HostFiles(
    label="Wan 2.1 T2V 1.3B",
    unet="wan2.1_t2v_1.3B_fp16.safetensors",
    text_encoder="umt5_xxl_fp8_e4m3fn_scaled.safetensors",
    clip_type="wan",
    vae="wan_2.1_vae.safetensors",
    width=832,
    height=480,
    length=81,
    steps=30,
    cfg=5.0,
    sampler="uni_pc",
    scheduler="simple",
    fps=16.0,
    shift=8.0,
)

PHANTOM_WAN_1_3B = dataclasses.replace(
    WAN21_1_3B,
    label="Phantom-Wan 1.3B",
    unet="phantom_wan_1.3B_fp16.safetensors",
    steps=50,
    cfg=7.5,
    shift=5.0,
    guidance="phantom",
    image_cfg=5.0,
)

COGVIDEOX_FILES_NOTE = """\
**Model files** (into `ComfyUI/models/…`):

| file | folder |
|---|---|
| `cogvideox_5b_bf16.safetensors`: the `transformer/` of THUDM/CogVideoX-5b as one file | `diffusion_models/` |
| `t5xxl_fp16.safetensors`: T5-XXL text encoder | `text_encoders/` |
| `cogvideox_vae.safetensors`: the `vae/` of THUDM/CogVideoX-5b as one file | `vae/` |
| a CustomVideoX adapter (optional; `none` = training-free) | `customvideox/` |

Other names work: pick your files in the loaders. CogVideoX-2B and 1.5-5B load the same way.
"""

WAN_FILES_NOTE = """\
**Model files** (into `ComfyUI/models/…`, from Comfy-Org/Wan_2.1_ComfyUI_repackaged):

| file | folder |
|---|---|
| `wan2.1_t2v_1.3B_fp16.safetensors` (or `wan2.1_t2v_14B_fp8_scaled.safetensors`) | `diffusion_models/` |
| `umt5_xxl_fp8_e4m3fn_scaled.safetensors` | `text_encoders/` |
| `wan_2.1_vae.safetensors` | `vae/` |
| a CustomVideoX adapter (optional; `none` = training-free) | `customvideox/` |

**Wan 2.2**: pick the TI2V 5B model (`wan2.2_ti2v_5B_fp16.safetensors`) with `wan2.2_vae.safetensors`
and set 1280×704, 121 frames, 24 fps. The 14B models run as two experts (high/low noise) over a split
schedule, which this one-sampler graph does not cover.
"""

PHANTOM_FILES_NOTE = """\
**Phantom-Wan** (ByteDance, Apache-2.0) is a Wan 2.1 T2V model trained to read reference frames appended
after the video: the reference-trained model to use with this pack. No adapter is needed.

| file | folder |
|---|---|
| `Phantom-Wan-1.3B.pth` as published (ComfyUI reads it as plain tensors) or a safetensors conversion, e.g. `phantom_wan_1.3B_fp16.safetensors` | `diffusion_models/` |
| `umt5_xxl_fp8_e4m3fn_scaled.safetensors` | `text_encoders/` |
| `wan_2.1_vae.safetensors` | `vae/` |
| a CustomVideoX adapter: none needed (`none`); one trained with this pack on Phantom-Wan would go here | `customvideox/` |

**14B**: pick the Phantom-Wan 14B file (its shards merged into one file) in *Load Diffusion Model*.
*Sample* runs Phantom's three-pass guidance (`guidance = phantom`): text scale `cfg` 7.5, image scale
`image_cfg` 5.0, the negative pass without the reference, as Phantom does. Up to four subject images:
wire them through Batch Images. TAB and ERAE act on top; set TAB's peak to 0 for Phantom's own result.
"""

SCORE_FILES_NOTE = """\
**Scoring** (*CustomVideoX Score*, right column): the paper's fidelity measures of the decoded video,
with encoders loaded by core's *Load CLIP Vision* (into `ComfyUI/models/…`):

| file | folder |
|---|---|
| `clip_vision_h.safetensors`: OpenCLIP ViT-H/14 (the Wan I2V CLIP vision file) → CLIP-I, T.Cons | `clip_vision/` |
| `dinov2_large.safetensors`: the `model.safetensors` of facebook/dinov2-large, renamed → DINO-I | `clip_vision/` |

No DINOv2 file? Delete its loader: DINO-I then reads NaN. CLIP-T needs the text tower of the *same*
CLIP (wire a CLIP of the same model into *clip* and type the prompt); a T5/umT5 encoder cannot give it.
The scores (cosines; the paper prints them × 100) are drawn per frame on the node, returned as FLOATs
and saved in the API's history under `cvx_scores`, next to a motion score (how far the picture moves).
A person? Add *Load Face Model (insightface)* on `models/insightface/models/buffalo_l` (the PuLID /
InstantID files; needs `pip install onnxruntime`) and wire it into *face_model* for FaceSim. See
`docs/METRICS.md` for what they mean.
"""

HOW_TO_RUN = """\
**Run it**
1. *Load Image*: upload a photo of your subject (a plain background works best).
2. *Prompt*: describe the subject in motion; it feeds the text encoder and ERAE.
3. *ERAEMask → entity_words*: the words of the prompt that name the subject.
4. Queue. The video lands in `ComfyUI/output/video/`.
"""


def _note(node_id: int, pos: tuple[int, int], size: tuple[int, int], title: str, text: str) -> Node:
    return Node(
        node_id,
        "MarkdownNote",
        pos,
        size,
        values={"text": text},
        title=title,
        color=NOTE_COLOR,
        bgcolor=NOTE_BGCOLOR,
    )


def _prompt_nodes(prompt: str, column: int) -> list[Node]:
    """5 the prompt, 6 and 7 the positive and negative CLIPTextEncode (the prompt feeds the positive)."""
    return [
        Node(
            5,
            "PrimitiveStringMultiline",
            (column, 0),
            (400, 150),
            {"value": prompt},
            title="Prompt",
            color=POSITIVE_COLOR,
            bgcolor=POSITIVE_BGCOLOR,
        ),
        Node(
            6,
            "CLIPTextEncode",
            (column, 190),
            (400, 50),
            {"text": prompt},
            {"clip": (3, 0), "text": (5, 0)},
            title="Positive",
            color=POSITIVE_COLOR,
            bgcolor=POSITIVE_BGCOLOR,
        ),
        Node(
            7,
            "CLIPTextEncode",
            (column, 320),
            (400, 130),
            {"text": NEGATIVE_PROMPT},
            {"clip": (3, 0)},
            title="Negative",
            color=NEGATIVE_COLOR,
            bgcolor=NEGATIVE_BGCOLOR,
        ),
    ]


def _tab_node(
    pos: tuple[int, int],
    size: tuple[int, int] = (330, 200),
    *,
    shape: str = "parabolic",
    peak: float = 1.0,
    floor: float = 0.0,
    start: float = 0.0,
) -> Node:
    """10 TimeAwareBias over the whole run (``end`` 1, no custom values)."""
    values = {"shape": shape, "peak": peak, "floor": floor, "start": start, "end": 1.0, "custom_values": ""}
    return Node(10, "CustomVideoXTimeAwareBias", pos, size, values, **PACK_STYLE)


def _erae_node(pos: tuple[int, int]) -> Node:
    """11 ERAEMask on the example's entity words, reading the prompt (5) with the text encoder (3)."""
    return Node(
        11,
        "CustomVideoXERAEMask",
        pos,
        (330, 320),
        {
            "prompt": PROMPT,
            "entity_words": ENTITY_WORDS,
            "strength": 1.0,
            "threshold": 0.0,
            "block_outside_mask": False,
            "subject_words": "",
        },
        {"clip": (3, 0), "prompt": (5, 0)},
        **PACK_STYLE,
    )


def _ksampler_node(host: HostFiles, pos: tuple[int, int], links: Mapping[str, tuple[int, int]]) -> Node:
    """12 core KSampler at the host's settings (seed randomized after each run)."""
    return Node(
        12,
        "KSampler",
        pos,
        (310, 262),
        {
            "seed": SEED,
            "seed.control_after_generate": "randomize",
            "steps": host.steps,
            "cfg": host.cfg,
            "sampler_name": host.sampler,
            "scheduler": host.scheduler,
            "denoise": 1.0,
        },
        links,
    )


def _output_nodes(
    host: HostFiles, prefix: str, column: int, samples: tuple[int, int] = (12, 0)
) -> list[Node]:
    """13 VAEDecode of the sampled latent (``samples``: node 12's by default), 14 CreateVideo at the host's
    fps, 15 SaveVideo."""
    return [
        Node(13, "VAEDecode", (column, 0), (300, 46), {}, {"samples": samples, "vae": (4, 0)}),
        Node(
            14,
            "CreateVideo",
            (column, 90),
            (300, 102),
            {"fps": host.fps, "bit_depth": 8},
            {"images": (13, 0)},
        ),
        Node(
            15,
            "SaveVideo",
            (column, 240),
            (300, 180),
            {"filename_prefix": prefix, "format": "auto", "codec": "auto"},
            {"video": (14, 0)},
        ),
    ]


COLUMN_X = (0, 380, 820, 1190, 1540)
"""Left edges of the five columns: loaders | prompt and reference | TAB and ERAE | Sample | output."""
MULTI_REFERENCE_ROW_Y = 940
"""Top of the row of subject views (under the note) in the several-references example."""


def _unet_node(host: HostFiles) -> Node:
    """1 UNETLoader of the host's model, top of the loaders column."""
    return Node(
        1, "UNETLoader", (COLUMN_X[0], 0), (340, 82), {"unet_name": host.unet, "weight_dtype": "default"}
    )


def _shift_node(host: HostFiles, y: int, model: tuple[int, int] = (1, 0)) -> Node:
    """17 ModelSamplingSD3 at the host's shift, of ``model`` (the UNETLoader's by default)."""
    return Node(17, "ModelSamplingSD3", (COLUMN_X[0], y), (340, 58), {"shift": host.shift}, {"model": model})


def _clip_loader_node(host: HostFiles, y: int) -> Node:
    """3 CLIPLoader of the host's text encoder."""
    return Node(
        3,
        "CLIPLoader",
        (COLUMN_X[0], y),
        (340, 106),
        {"clip_name": host.text_encoder, "type": host.clip_type, "device": "default"},
    )


def _vae_node(host: HostFiles, y: int) -> Node:
    """4 VAELoader of the host's VAE."""
    return Node(4, "VAELoader", (COLUMN_X[0], y), (340, 58), {"vae_name": host.vae})


def _subject_node(y: int) -> Node:
    """8 LoadImage of the subject image."""
    return Node(8, "LoadImage", (COLUMN_X[0], y), (340, 380), {"image": SUBJECT_IMAGE}, title="Subject")


def customvideox_graph(
    name: str,
    host: HostFiles,
    *,
    note_title: str,
    note_text: str,
    reference_images: int = 1,
    wire_mask: bool = False,
    score: bool = False,
) -> WorkflowSpec:
    """The layout all examples share, about 1,850 × 950 canvas units (readable at the editor's fit zoom).

    Node ids are the same in every example: 1 UNETLoader, 2 LoadCustomVideoX, 3 CLIPLoader,
    4 VAELoader, 5 Prompt, 6 positive and 7 negative CLIPTextEncode, 8 LoadImage, 9 ReferenceEncode,
    10 TimeAwareBias, 11 ERAEMask, 12 Sample, 13 VAEDecode, 14 CreateVideo, 15 SaveVideo, 16 the note,
    17 ModelSamplingSD3 (Wan only), 18-19 more LoadImage and 20 BatchImagesNode (several references),
    21-23 the two Load CLIP Vision nodes and CustomVideoX Score (``score``, a sixth column).
    """
    loaders, prompts, bias, sampler, output = COLUMN_X
    shift_rows = 100 if host.shift is not None else 0
    model_source = (17, 0) if host.shift is not None else (1, 0)
    nodes: list[Node] = [
        _unet_node(host),
        Node(
            2,
            "LoadCustomVideoX",
            (loaders, 120 + shift_rows),
            (340, 82),
            {"adapter": "none", "strength": 1.0},
            {"model": model_source},
            **PACK_STYLE,
        ),
        _clip_loader_node(host, 240 + shift_rows),
        _vae_node(host, 390 + shift_rows),
    ]
    if host.shift is not None:
        nodes.append(_shift_node(host, 120))
    nodes += [
        *_prompt_nodes(PROMPT, prompts),
    ]
    image_top = 490 + shift_rows
    image_ids = (8, 18, 19)[:reference_images]
    if reference_images == 1:
        nodes.append(_subject_node(image_top))
        image_source = (8, 0)
    else:
        for index, node_id in enumerate(image_ids):
            nodes.append(
                Node(
                    node_id,
                    "LoadImage",
                    (loaders + 360 * index, MULTI_REFERENCE_ROW_Y),
                    (340, 380),
                    {"image": SUBJECT_IMAGE.replace(".png", f"_{index + 1}.png")},
                    title=f"Subject view {index + 1}",
                )
            )
        nodes.append(
            Node(
                20,
                "BatchImagesNode",
                (loaders + 360 * reference_images, MULTI_REFERENCE_ROW_Y),
                (200, 100),
                {},
                {f"images.image{index}": (node_id, 0) for index, node_id in enumerate(image_ids)},
            )
        )
        image_source = (20, 0)
    reference_links = {"vae": (4, 0), "image": image_source}
    if wire_mask:
        reference_links["mask"] = (8, 1)
    nodes += [
        Node(
            9,
            "CustomVideoXReferenceEncode",
            (prompts, 500),
            (400, 170),
            {"width": host.width, "height": host.height, "fit": "pad", "invert_mask": False},
            reference_links,
            **PACK_STYLE,
        ),
        _tab_node((bias, 0)),
        _erae_node((bias, 250)),
        Node(
            12,
            "CustomVideoXSample",
            (sampler, 0),
            (310, 420),
            {
                "width": host.width,
                "height": host.height,
                "length": host.length,
                "seed": SEED,
                "seed.control_after_generate": "randomize",
                "steps": host.steps,
                "cfg": host.cfg,
                "sampler_name": host.sampler,
                "scheduler": host.scheduler,
                "denoise": 1.0,
                "uncond_sees_reference": False,
                "guidance": host.guidance,
                "image_cfg": host.image_cfg,
            },
            {
                "model": (2, 0),
                "positive": (6, 0),
                "negative": (7, 0),
                "reference": (9, 0),
                "tab": (10, 0),
                "erae": (11, 0),
            },
            **PACK_STYLE,
        ),
        *_output_nodes(host, OUTPUT_PREFIX, output),
        _note(16, (bias, 600), (output + 300 - bias, 300), note_title, note_text),
    ]
    if score:
        nodes += _score_nodes(SCORE_COLUMN_X)
    return WorkflowSpec(name, tuple(nodes))


SCORE_COLUMN_X = 1880
"""Left edge of the scoring column (right of the output column)."""


def _score_nodes(column: int) -> list[Node]:
    """Load CLIP Vision (CLIP, DINOv2) → CustomVideoX Score of the decoded frames against the subject."""
    return [
        Node(21, "CLIPVisionLoader", (column, 0), (340, 58), {"clip_name": "clip_vision_h.safetensors"}),
        Node(22, "CLIPVisionLoader", (column, 100), (340, 58), {"clip_name": "dinov2_large.safetensors"}),
        Node(
            23,
            "CustomVideoXScore",
            (column, 200),
            (340, 420),
            {"region": "full", "frame_stride": 1, "center_crop": True, "prompt": ""},
            {"frames": (13, 0), "reference": (8, 0), "clip_vision": (21, 0), "dino_vision": (22, 0)},
            **PACK_STYLE,
        ),
    ]


STANDIN_FILE = "Stand-In_wan2.1_T2V_14B_ver1.0.ckpt"
STANDIN_FACE_IMAGE = "standin_face.png"
STANDIN_PROMPT = (
    "A man sits comfortably at a desk facing the camera, talking warmly as if to a friend on a video call. "
    "Natural smile, focused gentle eyes, a cosy room with photos and a world map on the wall behind him."
)
WAN21_14B_STANDIN = dataclasses.replace(
    WAN21_1_3B,
    label="Wan 2.1 T2V 14B",
    unet="wan2.1_t2v_14B_fp8_scaled.safetensors",
    steps=20,
    sampler="euler",
    fps=25.0,
    shift=5.0,
)
STANDIN_NOTE = f"""\
**Model files** (into `ComfyUI/models/…`; Wan files from Comfy-Org/Wan_2.1_ComfyUI_repackaged, the
Stand-In file from the Stand-In release of WeChatCV):

| file | folder |
|---|---|
| `{WAN21_14B_STANDIN.unet}` | `diffusion_models/` |
| `{WAN21_14B_STANDIN.text_encoder}` | `text_encoders/` |
| `{WAN21_14B_STANDIN.vae}` | `vae/` |
| `{STANDIN_FILE}` (or a safetensors conversion of it) | `loras/` |

**The face**: Stand-In was trained on a face crop on a white background, 512×512: crop the head with some
margin (about 1.5× the face box), make the background white (a cut-out PNG: wire its mask and turn on
*invert_mask*), keep ReferenceEncode at 512×512.

**Run it**: pick the face in *Load Image*, write the prompt, queue. Settings are the published ones
(832×480, 81 frames, 20 steps, cfg 5, shift 5). *Apply Stand-In* computes the face's keys and values once
per sampling and reuses them. Optional: a *TimeAwareBias* / *ERAEMask* on Apply Stand-In strengthens the
face in the middle of sampling (unconnected = the published method). **Wan 2.2 A14B**: one Apply Stand-In
per expert with `Stand-In_wan2.2_T2V_A14B_high.ckpt` / `_low.ckpt`, each before its KSamplerAdvanced.
"""


def standin_graph(name: str, host: HostFiles) -> WorkflowSpec:
    """Stand-In on Wan 2.1 14B with core KSampler: ids follow customvideox_graph where they mean the same.

    1 UNETLoader, 17 ModelSamplingSD3, 21 Load Stand-In, 2 Apply Stand-In, 3 CLIPLoader, 4 VAELoader,
    5 Prompt, 6/7 CLIPTextEncode, 8 LoadImage (the face), 9 ReferenceEncode, 22 EmptyHunyuanLatentVideo,
    12 KSampler, 13 VAEDecode, 14 CreateVideo, 15 SaveVideo, 16 the note.
    """
    loaders, prompts, bias, sampler, output = COLUMN_X
    return WorkflowSpec(
        name,
        (
            _unet_node(host),
            _shift_node(host, 120),
            Node(
                21,
                "CustomVideoXLoadStandIn",
                (loaders, 220),
                (340, 58),
                {"standin_name": STANDIN_FILE},
                **PACK_STYLE,
            ),
            _clip_loader_node(host, 320),
            _vae_node(host, 470),
            Node(
                8,
                "LoadImage",
                (loaders, 570),
                (340, 380),
                {"image": STANDIN_FACE_IMAGE},
                title="Face (crop on white)",
            ),
            *_prompt_nodes(STANDIN_PROMPT, prompts),
            Node(
                9,
                "CustomVideoXReferenceEncode",
                (prompts, 500),
                (400, 170),
                {"width": 512, "height": 512, "fit": "pad", "invert_mask": False},
                {"vae": (4, 0), "image": (8, 0)},
                **PACK_STYLE,
            ),
            Node(
                2,
                "CustomVideoXApplyStandIn",
                (bias, 0),
                (330, 170),
                {"strength": 1.0, "uncond_sees_reference": True},
                {"model": (17, 0), "standin": (21, 0), "reference": (9, 0)},
                **PACK_STYLE,
            ),
            Node(
                22,
                "EmptyHunyuanLatentVideo",
                (bias, 220),
                (330, 130),
                {"width": host.width, "height": host.height, "length": host.length, "batch_size": 1},
            ),
            _ksampler_node(
                host,
                (sampler, 0),
                {"model": (2, 0), "positive": (6, 0), "negative": (7, 0), "latent_image": (22, 0)},
            ),
            *_output_nodes(host, "video/Stand-In", output),
            _note(
                16,
                (bias, 500),
                (output + 300 - bias, 330),
                "Stand-In · Wan 2.1 T2V 14B · one face",
                STANDIN_NOTE,
            ),
        ),
    )


DISTILL_LORA = "Wan21_CausVid_bidirect2_T2V_1_3B_lora_rank32.safetensors"
FAST_STEPS = 6
FAST_SCALES = "3, 3, 1, 1, 1, 1"
"""The fast recipe's per-step cfg and image_cfg: Phantom's passes at the first two of six steps, then the
positive pass alone (cfg 1, as distill LoRAs run)."""
FAST_NOTE = f"""\
**The fast stack**: Phantom-Wan with a distill LoRA, {FAST_STEPS} steps, guidance only where it pays.

| file | folder |
|---|---|
| `{PHANTOM_WAN_1_3B.unet}`: Phantom-Wan 1.3B as one file (or `Phantom-Wan-1.3B.pth` as published) | `diffusion_models/` |
| `{DISTILL_LORA}`: a distill LoRA for Wan 2.1 1.3B (CausVid; lightx2v for 14B; any step-distill LoRA) | `loras/` |
| `{PHANTOM_WAN_1_3B.text_encoder}` | `text_encoders/` |
| `{PHANTOM_WAN_1_3B.vae}` | `vae/` |
| a CustomVideoX adapter: none needed with Phantom-Wan | `customvideox/` |

**Guidance** (*CustomVideoX Reference Guider*): `cfg_steps` and `image_cfg_steps` give each of the
{FAST_STEPS} steps its scales ({FAST_SCALES}): Phantom's three passes (text and image guidance) while layout
and identity form, then cfg 1, where only the positive pass runs (what people set by hand with distill
LoRAs: 10 passes instead of 18). The lists split the model's time evenly, so they follow the steps of the
*simple* scheduler; with another step count, give as many values as steps.

**Identity where the passes stop**: the *TimeAwareBias* (linear, from 1 at a third of the time down to 0.25
at the end) strengthens the subject frames in attention exactly where the image pass is gone. Set its peak
to 0 for the plain recipe. Subject: one image in *Load Image* (up to four through Batch Images).
"""


def fast_phantom_graph(name: str, host: HostFiles) -> WorkflowSpec:
    """Phantom-Wan + distill LoRA + Reference Guider + TAB with core SamplerCustomAdvanced.

    1 UNETLoader, 24 LoraLoaderModelOnly, 17 ModelSamplingSD3, 2 CustomVideoX Apply (no reference: it biases
    the frames of 25), 3 CLIPLoader, 4 VAELoader, 5 Prompt, 6/7 CLIPTextEncode, 8 LoadImage, 25
    WanPhantomSubjectToVideo, 10 TimeAwareBias, 26 Reference Guider, 27 RandomNoise, 28 KSamplerSelect,
    29 BasicScheduler, 12 SamplerCustomAdvanced, 13 VAEDecode, 14 CreateVideo, 15 SaveVideo, 16 the note.
    """
    loaders, prompts, bias, sampler, output = COLUMN_X
    return WorkflowSpec(
        name,
        (
            _unet_node(host),
            Node(
                24,
                "LoraLoaderModelOnly",
                (loaders, 120),
                (340, 82),
                {"lora_name": DISTILL_LORA, "strength_model": 1.0},
                {"model": (1, 0)},
                title="Distill LoRA",
            ),
            _shift_node(host, 240, model=(24, 0)),
            _clip_loader_node(host, 340),
            _vae_node(host, 490),
            _subject_node(590),
            *_prompt_nodes(PROMPT, prompts),
            Node(
                25,
                "WanPhantomSubjectToVideo",
                (prompts, 500),
                (400, 200),
                {"width": host.width, "height": host.height, "length": host.length, "batch_size": 1},
                {"positive": (6, 0), "negative": (7, 0), "vae": (4, 0), "images": (8, 0)},
            ),
            _tab_node((bias, 0), shape="linear", floor=0.25, start=0.33),
            Node(
                2,
                "CustomVideoXApply",
                (bias, 250),
                (330, 130),
                {"uncond_sees_reference": False, "reference_prefix_frames": 0},
                {"model": (17, 0), "tab": (10, 0)},
                **PACK_STYLE,
            ),
            Node(
                26,
                "CustomVideoXReferenceGuider",
                (bias, 430),
                (330, 280),
                {
                    "cfg": 3.0,
                    "image_cfg": 3.0,
                    "image_start": 0.0,
                    "image_end": 1.0,
                    "cfg_steps": FAST_SCALES,
                    "image_cfg_steps": FAST_SCALES,
                },
                {
                    "model": (2, 0),
                    "positive": (25, 0),
                    "negative": (25, 1),
                    "negative_without_reference": (25, 2),
                },
                **PACK_STYLE,
            ),
            Node(
                27,
                "RandomNoise",
                (sampler, 0),
                (310, 82),
                {"noise_seed": SEED, "noise_seed.control_after_generate": "randomize"},
            ),
            Node(28, "KSamplerSelect", (sampler, 120), (310, 58), {"sampler_name": "euler"}),
            Node(
                29,
                "BasicScheduler",
                (sampler, 220),
                (310, 106),
                {"scheduler": "simple", "steps": FAST_STEPS, "denoise": 1.0},
                {"model": (2, 0)},
            ),
            Node(
                12,
                "SamplerCustomAdvanced",
                (sampler, 370),
                (310, 330),
                {},
                {
                    "noise": (27, 0),
                    "guider": (26, 0),
                    "sampler": (28, 0),
                    "sigmas": (29, 0),
                    "latent_image": (25, 3),
                },
            ),
            *_output_nodes(host, "video/CustomVideoX_fast", output),
            _note(
                16,
                (prompts, 770),
                (output + 300 - prompts, 420),
                "CustomVideoX · Phantom-Wan fast recipe · distill LoRA, 6 steps",
                FAST_NOTE,
            ),
        ),
    )


STANDIN_FACE_PACK = "buffalo_l"
"""The insightface pack the face workflow's Load Face Model names (PuLID / InstantID users have it)."""
STANDIN_FACE_NOTE = (
    STANDIN_NOTE
    + f"""
**Scoring the face** (right column): *CustomVideoX Score* of the decoded video against the face image.

| file | folder |
|---|---|
| `clip_vision_h.safetensors`: OpenCLIP ViT-H/14 → CLIP-I, T.Cons | `clip_vision/` |
| `{STANDIN_FACE_PACK}` (`det_10g.onnx` + `w600k_r50.onnx`; or `antelopev2`) | `insightface/models/` |

*Load Face Model* needs `pip install onnxruntime`. FaceSim (ArcFace cosine of the reference's face and each
frame's face: mean, minimum, share of frames with a face) and the motion score land on the node and in the
API's history (`cvx_scores`), so the batch client tables and plots them. *TimeAwareBias* is wired at peak 0
(= the published Stand-In) so that `--sweep tab_peak=…` / `tab_window=…` have a node to set;
`--sweep standin_strength=…` sets Apply Stand-In. See `docs/METRICS.md`.
"""
)


def standin_face_graph(name: str, host: HostFiles) -> WorkflowSpec:
    """Stand-In (``standin_graph``) plus TAB at peak 0 and FaceSim / motion scoring of the decoded video.

    Adds 10 TimeAwareBias (→ Apply Stand-In's ``tab``), 24 CLIPVisionLoader, 25 Load Face Model and
    23 CustomVideoX Score (frames 13 against the face 8); the note (16) moves down to make room.
    """
    _, _, bias, sampler, output = COLUMN_X
    base = standin_graph(name, host)
    nodes = [node for node in base.nodes if node.id != 16]
    nodes = [
        dataclasses.replace(node, links={**node.links, "tab": (10, 0)}) if node.id == 2 else node
        for node in nodes
    ]
    column = SCORE_COLUMN_X
    nodes += [
        _tab_node((sampler, 300), (310, 200), peak=0.0),
        Node(24, "CLIPVisionLoader", (column, 0), (340, 58), {"clip_name": "clip_vision_h.safetensors"}),
        Node(
            25,
            "CustomVideoXLoadFaceModel",
            (column, 110),
            (340, 130),
            {"pack": STANDIN_FACE_PACK, "device": "cpu", "det_size": 640},
            **PACK_STYLE,
        ),
        Node(
            23,
            "CustomVideoXScore",
            (column, 300),
            (340, 420),
            {"region": "full", "frame_stride": 1, "center_crop": True, "prompt": ""},
            {"frames": (13, 0), "reference": (8, 0), "clip_vision": (24, 0), "face_model": (25, 0)},
            **PACK_STYLE,
        ),
        _note(
            16,
            (bias, 580),
            (output + 300 - bias, 420),
            "Stand-In · Wan 2.1 T2V 14B · one face, scored (FaceSim + motion)",
            STANDIN_FACE_NOTE,
        ),
    ]
    return WorkflowSpec(name, tuple(nodes))


WAN21_VACE_1_3B = dataclasses.replace(
    WAN21_1_3B,
    label="Wan 2.1 VACE 1.3B",
    unet="wan2.1_vace_1.3B_fp16.safetensors",
    steps=20,
    cfg=6.0,
)
VACE_NOTE = f"""\
**VACE with a subject reference**: core's *WanVaceToVideo* puts the subject in front of the video (its
`reference_image`); *CustomVideoX Apply*, with **no** reference of its own, strengthens the video's attention
to it over the model's time (TimeAwareBias). Set the bias's peak to 0 for core's VACE result, exactly.

| file | folder |
|---|---|
| `{WAN21_VACE_1_3B.unet}` (or `wan2.1_vace_14B_fp16.safetensors`), from Comfy-Org/Wan_2.1_ComfyUI_repackaged | `diffusion_models/` |
| `{WAN21_VACE_1_3B.text_encoder}` | `text_encoders/` |
| `{WAN21_VACE_1_3B.vae}` | `vae/` |
| a CustomVideoX adapter: none needed (Apply biases VACE's own reference) | `customvideox/` |

**The one wire to keep**: *WanVaceToVideo*'s `trim_latent` goes to Apply's `reference_prefix_frames` (how many
reference frames stand in front of the video) and, as in core's VACE graphs, to *TrimVideoLatent* before the
decode. A control video (pose, depth, …) goes into `control_video` as usual. *ERAEMask*: the words of the
prompt that name the subject strengthen it further. Subject: one image in *Load Image* (VACE takes one).
"""


def vace_graph(name: str, host: HostFiles) -> WorkflowSpec:
    """VACE with a subject reference: core's WanVaceToVideo, CustomVideoX Apply biasing its reference.

    1 UNETLoader, 17 ModelSamplingSD3, 3 CLIPLoader, 4 VAELoader, 8 LoadImage (the subject), 5 Prompt, 6/7
    CLIPTextEncode, 25 WanVaceToVideo, 10 TimeAwareBias, 11 ERAEMask, 2 CustomVideoX Apply (no reference;
    ``reference_prefix_frames`` from 25's ``trim_latent``), 12 KSampler, 30 TrimVideoLatent, 13 VAEDecode,
    14 CreateVideo, 15 SaveVideo, 16 the note.
    """
    _, prompts, bias, sampler, output = COLUMN_X
    return WorkflowSpec(
        name,
        (
            _unet_node(host),
            _shift_node(host, 120),
            _clip_loader_node(host, 220),
            _vae_node(host, 370),
            _subject_node(470),
            *_prompt_nodes(PROMPT, prompts),
            Node(
                25,
                "WanVaceToVideo",
                (prompts, 500),
                (400, 260),
                {
                    "width": host.width,
                    "height": host.height,
                    "length": host.length,
                    "batch_size": 1,
                    "strength": 1.0,
                },
                {"positive": (6, 0), "negative": (7, 0), "vae": (4, 0), "reference_image": (8, 0)},
            ),
            _tab_node((bias, 0)),
            _erae_node((bias, 250)),
            Node(
                2,
                "CustomVideoXApply",
                (bias, 620),
                (330, 130),
                {"uncond_sees_reference": False, "reference_prefix_frames": 1},
                {"model": (17, 0), "tab": (10, 0), "erae": (11, 0), "reference_prefix_frames": (25, 3)},
                **PACK_STYLE,
            ),
            _ksampler_node(
                host,
                (sampler, 0),
                {"model": (2, 0), "positive": (25, 0), "negative": (25, 1), "latent_image": (25, 2)},
            ),
            Node(
                30,
                "TrimVideoLatent",
                (sampler, 320),
                (310, 82),
                {"trim_amount": 1},
                {"samples": (12, 0), "trim_amount": (25, 3)},
            ),
            *_output_nodes(host, "video/CustomVideoX_vace", output, samples=(30, 0)),
            _note(
                16,
                (prompts, 800),
                (output + 300 - prompts, 360),
                "CustomVideoX · Wan 2.1 VACE · subject reference",
                VACE_NOTE,
            ),
        ),
    )


def example_specs() -> tuple[WorkflowSpec, ...]:
    """Every shipped example, UI name without ``_api``."""
    return (
        customvideox_graph(
            "customvideox_cogvideox5b",
            COGVIDEOX_5B,
            note_title="CustomVideoX · CogVideoX-5B · one subject reference",
            note_text=COGVIDEOX_FILES_NOTE + "\n" + HOW_TO_RUN,
        ),
        customvideox_graph(
            "customvideox_wan21",
            WAN21_1_3B,
            note_title="CustomVideoX · Wan 2.1 / 2.2 · one subject reference",
            note_text=WAN_FILES_NOTE + "\n" + HOW_TO_RUN,
        ),
        customvideox_graph(
            "customvideox_multi_reference",
            COGVIDEOX_5B,
            note_title="CustomVideoX · several references of one subject",
            note_text=COGVIDEOX_FILES_NOTE
            + "\n**Several references**: each *Load Image* is one view of the same subject; *Batch Images* "
            "stacks them (later images are resized and centre-cropped to the first one's size, so use "
            "views of the same aspect ratio), and each becomes one reference frame. Add views by wiring "
            "more images into Batch Images.\n\n" + HOW_TO_RUN,
            reference_images=3,
        ),
        customvideox_graph(
            "customvideox_erae_mask",
            COGVIDEOX_5B,
            note_title="CustomVideoX · ERAE with a drawn subject mask",
            note_text=COGVIDEOX_FILES_NOTE
            + "\n**Subject mask**: right-click *Load Image* → *Open in MaskEditor* and paint over the "
            "subject, then save. The painted area is the mask (1 = subject): the background of the "
            "reference turns white and ERAE raises the bias on the subject's reference tokens only. "
            "Without a painted mask Load Image gives an empty mask, so paint one (or use the "
            "single-reference workflow). A cut-out PNG works too: its transparent area is the mask's "
            "background, so turn on *invert_mask*.\n\n" + HOW_TO_RUN,
            wire_mask=True,
        ),
        customvideox_graph(
            "customvideox_phantom_wan",
            PHANTOM_WAN_1_3B,
            note_title="CustomVideoX · Phantom-Wan 1.3B / 14B · TAB + ERAE on a reference-trained model",
            note_text=PHANTOM_FILES_NOTE + "\n" + HOW_TO_RUN,
        ),
        customvideox_graph(
            "customvideox_score",
            COGVIDEOX_5B,
            note_title="CustomVideoX · CogVideoX-5B · generate, then score against the subject",
            note_text=COGVIDEOX_FILES_NOTE + "\n" + SCORE_FILES_NOTE + "\n" + HOW_TO_RUN,
            score=True,
        ),
        standin_graph("standin_wan21_14b", WAN21_14B_STANDIN),
        fast_phantom_graph("customvideox_phantom_wan_fast", PHANTOM_WAN_1_3B),
        standin_face_graph("standin_wan21_14b_face", WAN21_14B_STANDIN),
        vace_graph("customvideox_wan_vace", WAN21_VACE_1_3B),
    )


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def render(document: Mapping[str, Any]) -> str:
    """The committed text of a workflow file (stable key order, two-space indent, final newline)."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def build_all(object_info: Mapping[str, Any]) -> dict[str, str]:
    """File name → text, for every example and its API twin."""
    files: dict[str, str] = {}
    for spec in example_specs():
        files[f"{spec.name}.json"] = render(build_ui(spec, object_info))
        files[f"api/{spec.name}_api.json"] = render(build_api(spec, object_info))
    return files


def fetch_object_info(server: str, timeout: float = 60.0) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(server.rstrip("/") + "/object_info", timeout=timeout) as response:
        return json.loads(response.read())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--server", help="URL of a running ComfyUI that has this pack installed")
    source.add_argument("--object-info", type=Path, help="a saved /object_info JSON answer")
    parser.add_argument("--output-dir", type=Path, default=WORKFLOWS_DIR)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if any file would change")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if arguments.server:
        object_info = fetch_object_info(arguments.server)
    else:
        object_info = json.loads(arguments.object_info.read_text(encoding="utf-8"))
    stale = []
    for file_name, text in build_all(object_info).items():
        path = arguments.output_dir / file_name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(file_name)
        if not arguments.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            logger.info("wrote %s", path)
    if arguments.check and stale:
        logger.error("out of date (run scripts/make_workflows.py): %s", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
