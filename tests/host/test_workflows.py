"""The example workflows in ``workflows/`` against a real ComfyUI.

- Every UI graph uses only node types that exist (the live ``/object_info``, plus the frontend's own
  note nodes), its ``widgets_values`` match each node's widget inputs in count and order and every
  value fits its type, choices, min/max and step; its links are consistent; its note names the model
  files its loaders use and their folders.
- Every API twin holds the same nodes, values and wires as its UI graph, and validates through
  ``POST /prompt`` on a real server. "Model file names aside": the real model files are not here, so
  the server must refuse the prompt with exactly one error per model loader, ``value_not_in_list`` on
  the file-name widget for the shipped name, and nothing else (ComfyUI keeps validating every other
  node after a failing loader). The same twin with those names swapped for files the host has
  passes ComfyUI's own ``validate_prompt`` in-process with no error at all (nothing is run).
- The committed files are exactly what ``scripts/make_workflows.py`` writes from the live schemas.
- The batch client can fill the API twins (``locate_targets`` finds the same nodes the graph wires).
- ComfyUI's template browser lists the UI graphs and serves them unchanged.
"""

from __future__ import annotations

import asyncio
import json
import math
import types
import uuid
from pathlib import Path
from typing import Any

import pytest
from face_models import write_tiny_face_pack
from graphs_support import load_generator, owned_parts, pack_node_types
from harness import PACK_FOLDER_NAME, REPO_ROOT, GraphValidationError

WORKFLOWS_DIR = REPO_ROOT / "workflows"
UI_NAMES = (
    "customvideox_cogvideox5b",
    "customvideox_wan21",
    "customvideox_multi_reference",
    "customvideox_erae_mask",
    "customvideox_phantom_wan",
    "customvideox_score",
    "standin_wan21_14b",
    "customvideox_phantom_wan_fast",
    "standin_wan21_14b_face",
    "customvideox_wan_vace",
)
FAST_RECIPE = "customvideox_phantom_wan_fast"
"""Phantom-Wan + distill LoRA + Reference Guider on SamplerCustomAdvanced (no Sample node for the batch client)."""
VACE_NAME = "customvideox_wan_vace"
"""VACE's subject reference through core's WanVaceToVideo, biased by Apply (no ReferenceEncode: the batch
client, which uploads each job's reference to ReferenceEncode's image, does not fill it)."""
STANDIN_NAMES = ("standin_wan21_14b", "standin_wan21_14b_face")
"""Stand-In graphs: Apply Stand-In + core KSampler, the Stand-In file in ``loras/``, no CustomVideoX adapter."""
FRONTEND_NOTE_TYPES = {"MarkdownNote", "Note"}
MODEL_FILE_WIDGETS = {
    "UNETLoader": ("unet_name", "diffusion_models"),
    "CLIPLoader": ("clip_name", "text_encoders"),
    "VAELoader": ("vae_name", "vae"),
    "CLIPVisionLoader": ("clip_name", "clip_vision"),
    "CustomVideoXLoadStandIn": ("standin_name", "loras"),
    "LoraLoaderModelOnly": ("lora_name", "loras"),
    "CustomVideoXLoadFaceModel": ("pack", "insightface/models"),
}
FACE_PACKS = ("buffalo_l", "antelopev2")
"""The insightface packs a face loader may name (folders, not files): the ones PuLID / InstantID use."""
SCORED_NAMES = {"customvideox_score": "23", "standin_wan21_14b_face": "23"}
"""Examples with a CustomVideoX Score node (an output node besides SaveVideo 15) → its id."""
TINY_FACE_PACK = "cvx_tiny_buffalo_l"
"""The tiny ONNX pack (``face_models.py``) the face loader is pointed at in the host tier."""
MODEL_FILE_EXTENSIONS = {"CustomVideoXLoadStandIn": (".safetensors", ".ckpt")}
"""Loaders whose shipped file is not a safetensors (Stand-In is published as a plain-tensor .ckpt)."""
"""Loader → (file-name widget, models folder): the widgets whose values name files users download."""
CONTROL_AFTER_GENERATE_VALUES = {"fixed", "increment", "decrement", "randomize"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "COMFY_DYNAMICCOMBO_V3"}
PLACEHOLDER_TEXT_ENCODER = "cvx_placeholder_text_encoder.safetensors"
PLACEHOLDER_STANDIN = "cvx_placeholder_standin.ckpt"
PLACEHOLDER_LORA = "cvx_placeholder_lora.safetensors"


# ----------------------------------------------------------------------------------------------
# Helpers (an oracle of their own: they read /object_info directly, not through the generator)
# ----------------------------------------------------------------------------------------------


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def ui_workflow(name: str) -> dict:
    return read_json(WORKFLOWS_DIR / f"{name}.json")


def api_workflow(name: str) -> dict:
    return read_json(WORKFLOWS_DIR / "api" / f"{name}_api.json")


def subject_images(workflow: dict) -> list[str]:
    return [node["widgets_values"][0] for node in workflow["nodes"] if node["type"] == "LoadImage"]


def write_subject_images(folder: Path, names: list[str]) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names):
        Image.new("RGB", (96, 64), (200, 120 + 20 * index, 80)).save(folder / name)


def declared_inputs(info: dict) -> list[tuple[str, Any, dict, bool]]:
    """``(name, type, options, optional)`` in the order the node declares them."""
    order = info.get("input_order") or {section: list(info["input"][section]) for section in info["input"]}
    found = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = info["input"][section][name]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            found.append((name, spec[0], options, section == "optional"))
    return found


def is_widget(declared_type: Any, options: dict) -> bool:
    if options.get("forceInput"):
        return False
    return isinstance(declared_type, list) or declared_type in WIDGET_TYPES


def expected_widgets(info: dict) -> list[tuple[str, Any, dict]]:
    """What the editor stores in ``widgets_values``, in order: ``(name, type, options)``.

    A seed with ``control_after_generate`` is followed by its control mode, LoadImage's ``image``
    (``image_upload``) by the upload button's value.
    """
    widgets = []
    for name, declared_type, options, _ in declared_inputs(info):
        if not is_widget(declared_type, options):
            continue
        widgets.append((name, declared_type, options))
        if options.get("control_after_generate"):
            widgets.append((f"{name}:control_after_generate", "CONTROL", {}))
        if options.get("image_upload"):
            widgets.append((f"{name}:upload", "UPLOAD", {}))
    return widgets


def value_problem(class_type: str, name: str, declared_type: Any, options: dict, value: Any) -> str | None:
    """Why ``value`` does not fit the widget, or ``None``. Model-file combos are checked elsewhere."""
    if class_type == "CustomVideoXLoadFaceModel" and name == MODEL_FILE_WIDGETS[class_type][0]:
        return None if value in FACE_PACKS else f"{value!r} is not one of the insightface packs {FACE_PACKS}"
    if class_type in MODEL_FILE_WIDGETS and name == MODEL_FILE_WIDGETS[class_type][0]:
        extensions = MODEL_FILE_EXTENSIONS.get(class_type, (".safetensors",))
        return None if isinstance(value, str) and value.endswith(extensions) else f"not a {extensions} name"
    if declared_type == "CONTROL":
        return None if value in CONTROL_AFTER_GENERATE_VALUES else f"{value!r} is no control mode"
    if declared_type == "UPLOAD":
        return None if value == "image" else f"upload widget value {value!r}, expected 'image'"
    if isinstance(declared_type, list) or declared_type == "COMBO":
        choices = declared_type if isinstance(declared_type, list) else options.get("options", [])
        return None if value in choices else f"{value!r} not in {choices[:12]}"
    if declared_type == "COMFY_DYNAMICCOMBO_V3":
        keys = [option["key"] for option in options.get("options", [])]
        return None if value in keys else f"{value!r} not in {keys}"
    if declared_type == "BOOLEAN":
        return None if isinstance(value, bool) else f"{value!r} is not a boolean"
    if declared_type == "STRING":
        return None if isinstance(value, str) else f"{value!r} is not a string"
    if declared_type in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return f"{value!r} is not a number"
        if declared_type == "INT" and not isinstance(value, int):
            return f"{value!r} is not an integer"
        low, high = options.get("min", -math.inf), options.get("max", math.inf)
        if not low <= value <= high:
            return f"{value!r} outside [{low}, {high}]"
        step = options.get("step")
        if declared_type == "INT" and step and (value - options.get("min", 0)) % step:
            return f"{value!r} is not min + k·{step}"
        return None
    return f"unexpected widget type {declared_type!r}"


def widget_problems(workflow: dict, object_info: dict) -> list[str]:
    problems = []
    for node in workflow["nodes"]:
        label = f"node {node['id']} ({node['type']})"
        if node["type"] in FRONTEND_NOTE_TYPES:
            values = node.get("widgets_values", [])
            if len(values) != 1 or not isinstance(values[0], str):
                problems.append(f"{label}: a note holds one text, got {values!r}")
            continue
        if node["type"] not in object_info:
            problems.append(f"{label}: node type does not exist on the server")
            continue
        widgets = expected_widgets(object_info[node["type"]])
        values = node.get("widgets_values", [])
        if len(values) != len(widgets):
            problems.append(
                f"{label}: {len(values)} widget values {values!r} for widgets {[name for name, *_ in widgets]}"
            )
            continue
        for (name, declared_type, options), value in zip(widgets, values, strict=True):
            problem = value_problem(node["type"], name, declared_type, options, value)
            if problem:
                problems.append(f"{label}.{name}: {problem}")
    return problems


def link_problems(workflow: dict) -> list[str]:
    nodes = {node["id"]: node for node in workflow["nodes"]}
    problems = []
    if len(nodes) != len(workflow["nodes"]):
        problems.append("duplicate node ids")
    if workflow["last_node_id"] != max(nodes) or workflow["last_link_id"] != len(workflow["links"]):
        problems.append("last_node_id / last_link_id do not match the graph")
    for link_id, source, source_slot, target, target_slot, link_type in workflow["links"]:
        output = nodes[source]["outputs"][source_slot]
        target_input = nodes[target]["inputs"][target_slot]
        if link_id not in (output.get("links") or []):
            problems.append(f"link {link_id} missing from node {source} output {output['name']}")
        if target_input.get("link") != link_id:
            problems.append(f"link {link_id} missing from node {target} input {target_input['name']}")
        if not output["type"] == target_input["type"] == link_type:
            problems.append(f"link {link_id}: {output['type']} → {target_input['type']} typed {link_type}")
    listed = {link[0] for link in workflow["links"]}
    for node in workflow["nodes"]:
        for slot in node.get("inputs", []):
            if slot.get("link") is not None and slot["link"] not in listed:
                problems.append(f"node {node['id']} input {slot['name']} names unknown link {slot['link']}")
    return problems


def ui_as_api(workflow: dict, object_info: dict) -> dict:
    """The API graph the UI graph stands for (independent of the generator): values by widget name."""
    links = {link[0]: link for link in workflow["links"]}
    api = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_NOTE_TYPES:
            continue
        inputs: dict[str, Any] = {}
        names = [name for name, *_ in expected_widgets(object_info[node["type"]])]
        for name, value in zip(names, node.get("widgets_values", []), strict=True):
            if ":" not in name:
                inputs[name] = value
        for slot in node["inputs"]:
            if slot.get("link") is not None:
                _, source, source_slot, *_ = links[slot["link"]]
                inputs[slot["name"]] = [str(source), source_slot]
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


def model_files(workflow: dict) -> list[tuple[str, str, str]]:
    """``(loader type, file name, models folder)`` for every loader of a downloadable file."""
    found = []
    for node in workflow["nodes"]:
        if node["type"] in MODEL_FILE_WIDGETS:
            widget, folder = MODEL_FILE_WIDGETS[node["type"]]
            found.append((node["type"], node["widgets_values"][0], folder))
    return found


# ----------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server_object_info(comfy_server, pack_module) -> dict:
    """The session server's /object_info, after the subject images were put into its input folder."""
    names = sorted(
        {name for workflow_name in UI_NAMES for name in subject_images(ui_workflow(workflow_name))}
    )
    write_subject_images(comfy_server.base_dir / "input", names)
    return comfy_server.object_info()


@pytest.fixture(scope="module")
def generator() -> types.ModuleType:
    return load_generator()


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------


def test_workflows_folder_holds_exactly_the_examples_and_their_twins():
    shipped = {path.name for path in WORKFLOWS_DIR.glob("*.json")}
    shipped |= {f"api/{path.name}" for path in (WORKFLOWS_DIR / "api").glob("*.json")}
    expected = {f"{name}.json" for name in UI_NAMES} | {f"api/{name}_api.json" for name in UI_NAMES}
    assert expected <= shipped
    # The training graph has its own tests; API twins live in api/, one level down, which ComfyUI's
    # template browser does not list (it lists only the *.json found flat in workflows/).
    others = shipped - expected - {"api/customvideox_train_api.json"}
    assert not others, f"unexpected files in workflows/: {sorted(others)}"
    folders = sorted(path.name for path in WORKFLOWS_DIR.iterdir() if path.is_dir())
    assert folders == ["api", "jobs"], (
        f"workflows/ holds UI graphs, the api/ folder and the example job files in jobs/, found {folders}"
    )


@pytest.mark.parametrize("name", UI_NAMES)
def test_ui_graph_uses_existing_nodes_and_its_widget_values_fit_the_live_schemas(name, server_object_info):
    workflow = ui_workflow(name)
    assert workflow["version"] == 0.4
    assert str(uuid.UUID(workflow["id"])) == workflow["id"]
    assert widget_problems(workflow, server_object_info) == []
    assert link_problems(workflow) == []


def test_the_widget_check_catches_bad_values(server_object_info):
    """The check above can fail: a value out of range, a wrong choice, a missing seed mode, a fake node."""
    workflow = ui_workflow("customvideox_cogvideox5b")
    by_type = {node["type"]: node for node in workflow["nodes"]}
    by_type["CustomVideoXSample"]["widgets_values"][0] = 721  # width step 16
    by_type["CustomVideoXReferenceEncode"]["widgets_values"][2] = "stretch"
    by_type["CustomVideoXTimeAwareBias"]["widgets_values"][1] = 99.0  # peak max 20
    del by_type["CreateVideo"]["widgets_values"][-1]
    by_type["VAEDecode"]["type"] = "CustomVideoXNoSuchNode"
    problems = "\n".join(widget_problems(workflow, server_object_info))
    for expected in (
        "width: 721",
        "fit: 'stretch'",
        "peak: 99.0",
        "CreateVideo): 1 widget values",
        "not exist",
    ):
        assert expected in problems, problems


@pytest.mark.parametrize("name", UI_NAMES)
def test_note_says_which_model_files_to_get_and_where(name):
    workflow = ui_workflow(name)
    notes = [node for node in workflow["nodes"] if node["type"] in FRONTEND_NOTE_TYPES]
    assert len(notes) == 1
    text = notes[0]["widgets_values"][0]
    for _, file_name, folder in model_files(workflow):
        assert f"`{file_name}`" in text
        assert f"`{folder}/`" in text
    if name not in STANDIN_NAMES:
        assert "`customvideox/`" in text  # where an adapter goes


@pytest.mark.parametrize("name", UI_NAMES)
def test_api_twin_is_the_ui_graph_in_api_format(name, server_object_info):
    api = api_workflow(name)
    stripped = {
        node_id: {"class_type": node["class_type"], "inputs": node["inputs"]} for node_id, node in api.items()
    }
    assert stripped == ui_as_api(ui_workflow(name), server_object_info)


@pytest.mark.pinned_core_schemas
@pytest.mark.parametrize("name", UI_NAMES)
def test_committed_files_are_what_the_generator_writes_from_the_live_schemas(
    name, generator, server_object_info
):
    files = generator.build_all(server_object_info)
    for file_name in (f"{name}.json", f"api/{name}_api.json"):
        committed = (WORKFLOWS_DIR / file_name).read_text(encoding="utf-8")
        assert files[file_name] == committed, (
            f"{file_name} is stale: run scripts/make_workflows.py --server <url>"
        )


@pytest.mark.parametrize("name", UI_NAMES)
def test_what_the_pack_owns_in_the_committed_files_is_what_the_generator_writes(
    name, generator, server_object_info
):
    """Runs on every ComfyUI: the pack's nodes (ids, inputs, defaults, our widget values) and every
    link of the committed graphs are exactly what the generator writes from the live schemas."""
    pack_types = pack_node_types(server_object_info)
    assert {"CustomVideoXSample", "CustomVideoXReferenceEncode"} <= pack_types
    files = generator.build_all(server_object_info)
    for file_name in (f"{name}.json", f"api/{name}_api.json"):
        committed = (WORKFLOWS_DIR / file_name).read_text(encoding="utf-8")
        assert owned_parts(files[file_name], pack_types) == owned_parts(committed, pack_types), (
            f"{file_name}: the pack's nodes or the graph's wires changed: run scripts/make_workflows.py "
            "--server <url> on ComfyUI 0.33.0"
        )


def test_the_owned_parts_check_catches_a_changed_pack_widget(server_object_info):
    pack_types = pack_node_types(server_object_info)
    committed = (WORKFLOWS_DIR / f"{UI_NAMES[0]}.json").read_text(encoding="utf-8")
    graph = json.loads(committed)
    sample = next(node for node in graph["nodes"] if node["type"] == "CustomVideoXSample")
    sample["widgets_values"][-1] = not sample["widgets_values"][-1]
    assert owned_parts(json.dumps(graph), pack_types) != owned_parts(committed, pack_types)
    graph = json.loads(committed)
    graph["links"][0][4] += 1
    assert owned_parts(json.dumps(graph), pack_types) != owned_parts(committed, pack_types)


@pytest.mark.parametrize("name", UI_NAMES)
def test_api_twin_validates_through_post_prompt_but_for_the_model_file_names(
    name, comfy_server, server_object_info
):
    api = api_workflow(name)
    with pytest.raises(GraphValidationError) as refused:
        comfy_server.queue(api)
    expected = {
        str(node["id"]): (node["type"], node["widgets_values"][0])
        for node in ui_workflow(name)["nodes"]
        if node["type"] in MODEL_FILE_WIDGETS
    }
    node_errors = refused.value.node_errors
    assert set(node_errors) == set(expected), refused.value
    for node_id, (class_type, file_name) in expected.items():
        errors = node_errors[node_id]["errors"]
        assert [
            (error["type"], error["extra_info"]["input_name"], error["extra_info"]["received_value"])
            for error in errors
        ] == [("value_not_in_list", MODEL_FILE_WIDGETS[class_type][0], file_name)], refused.value


@pytest.mark.parametrize("name", UI_NAMES)
def test_api_twin_with_local_model_files_passes_comfyui_validation(
    name, comfy_host, pack_module, tiny_models, tiny_encoders
):
    """Every loader pointed at a file the host has: ComfyUI's validate_prompt finds nothing (no run)."""
    import execution

    text_encoders = comfy_host.models_dir / "text_encoders"
    text_encoders.mkdir(parents=True, exist_ok=True)
    (text_encoders / PLACEHOLDER_TEXT_ENCODER).write_bytes(b"")  # only listed, never loaded
    loras = comfy_host.models_dir / "loras"
    loras.mkdir(parents=True, exist_ok=True)
    (loras / PLACEHOLDER_STANDIN).write_bytes(b"")  # only listed, never loaded
    (loras / PLACEHOLDER_LORA).write_bytes(b"")  # only listed, never loaded
    write_tiny_face_pack(comfy_host.models_dir / "insightface" / "models" / TINY_FACE_PACK)
    write_subject_images(comfy_host.input_dir, subject_images(ui_workflow(name)))
    local_files = {
        "UNETLoader": tiny_models.cogvideox["5b"],
        "CLIPLoader": PLACEHOLDER_TEXT_ENCODER,
        "VAELoader": tiny_models.vae,
        "CLIPVisionLoader": tiny_encoders.clip_vision,
        "CustomVideoXLoadStandIn": PLACEHOLDER_STANDIN,
        "LoraLoaderModelOnly": PLACEHOLDER_LORA,
        "CustomVideoXLoadFaceModel": TINY_FACE_PACK,
    }
    api = api_workflow(name)
    for node in api.values():
        if node["class_type"] in MODEL_FILE_WIDGETS:
            node["inputs"][MODEL_FILE_WIDGETS[node["class_type"]][0]] = local_files[node["class_type"]]
    valid, error, outputs, node_errors = asyncio.run(execution.validate_prompt(str(uuid.uuid4()), api, None))
    assert (valid, node_errors) == (True, {}), error
    # SaveVideo is the output; the scoring examples also run CustomVideoX Score (an output node).
    assert sorted(outputs) == sorted(["15", *([SCORED_NAMES[name]] if name in SCORED_NAMES else [])])


def fill_one_job(api: dict, targets, name: str, prompt: str, seed: int, **settings) -> dict:
    """``api`` as the batch client fills it for one job ``name`` whose reference uploads as ``<name>.png``."""
    from customvideox_core.batch.jobs import Job
    from customvideox_core.batch.workflow import UploadedImages, fill_workflow

    reference = f"{name}.png"
    job = Job(line=1, name=name, reference=Path(reference), prompt=prompt, seed=seed, **settings)
    return fill_workflow(api, targets, job, UploadedImages(reference=reference))


@pytest.mark.parametrize(
    "name",
    [
        name
        for name in UI_NAMES
        if name not in ("customvideox_multi_reference", FAST_RECIPE, VACE_NAME) and name not in STANDIN_NAMES
    ],
)
def test_batch_client_fills_the_api_twin(name):
    from customvideox_core.batch.workflow import locate_targets

    api = api_workflow(name)
    targets = locate_targets(api)
    assert targets.reference_loader == "8"
    assert targets.prompt_encoders == ("6",)
    assert targets.erae_nodes == ("11",)
    assert targets.tab_nodes == ("10",)
    assert targets.seed_inputs == (("12", "seed"),)
    assert targets.save_nodes == ("15",)
    assert targets.cfg_nodes == ("12",)
    # The drawn mask lives in the reference's own LoadImage, so there is no separate mask loader.
    assert targets.mask_loaders == ()
    filled = fill_one_job(api, targets, "dog", "a dog runs on a beach", 7, entity_words="dog")
    assert filled["8"]["inputs"]["image"] == "dog.png"
    assert filled["6"]["inputs"]["text"] == filled["11"]["inputs"]["prompt"] == "a dog runs on a beach"
    assert filled["11"]["inputs"]["entity_words"] == "dog"
    assert filled["12"]["inputs"]["seed"] == 7


@pytest.mark.parametrize("name", STANDIN_NAMES)
def test_batch_client_fills_the_standin_twin(name):
    """KSampler graph without ERAE: the face, the prompt, the seed, Stand-In's strength, the output (and the
    face graph's TAB at peak 0) are found."""
    from customvideox_core.batch.jobs import TabOverrides
    from customvideox_core.batch.workflow import locate_targets

    api = api_workflow(name)
    targets = locate_targets(api)
    assert (targets.reference_loader, targets.prompt_encoders) == ("8", ("6",))
    assert (targets.erae_nodes, targets.mask_loaders) == ((), ())
    assert targets.tab_nodes == (("10",) if name in SCORED_NAMES else ())
    assert (targets.seed_inputs, targets.save_nodes) == ((("12", "seed"),), ("15",))
    assert targets.standin_nodes == ("2",)
    tab = {"tab": TabOverrides(peak=2.0)} if name in SCORED_NAMES else {}
    filled = fill_one_job(api, targets, "me", "a man waves at the camera", 9, standin_strength=0.8, **tab)
    assert filled["8"]["inputs"]["image"] == "me.png"
    assert filled["2"]["inputs"]["strength"] == 0.8
    if name in SCORED_NAMES:
        assert filled["10"]["inputs"]["peak"] == 2.0
        assert filled["23"]["inputs"]["reference"] == ["8", 0]  # scored against the job's face
    assert filled["6"]["inputs"]["text"] == "a man waves at the camera"
    assert filled["12"]["inputs"]["seed"] == 9


def test_vace_twin_runs_with_tiny_models_and_trims_the_reference_frame(comfy_host, tiny_models):
    """The VACE example's API twin runs end to end on the tiny VACE model: Apply (TAB and ERAE) reads
    WanVaceToVideo's trim_latent (1), the sampled latent holds the reference frame in front of the video,
    TrimVideoLatent takes it off again, and the decoded video has the frames asked for."""
    import torch
    from nodes_support import LATENT_SHAPE, VIDEO_FRAMES, VIDEO_HEIGHT, VIDEO_WIDTH, random_conditioning_node

    write_subject_images(comfy_host.input_dir, subject_images(ui_workflow(VACE_NAME)))
    api = api_workflow(VACE_NAME)
    api["1"]["inputs"]["unet_name"] = tiny_models.wan_vace
    api["4"]["inputs"]["vae_name"] = tiny_models.vae
    # random text as long as the prompt's tokens; the text encoder only tokenizes, for ERAE's words
    api["6"], api["7"] = random_conditioning_node(1, 64), random_conditioning_node(2, 64)
    api["3"] = {"class_type": "CVXTestTokenizerCLIP", "inputs": {"family": "wan"}}
    api["25"]["inputs"].update({"width": VIDEO_WIDTH, "height": VIDEO_HEIGHT, "length": VIDEO_FRAMES})
    api["12"]["inputs"]["steps"] = 2
    result = comfy_host.run_graph(api, capture=["12", "30", "13"])
    assert result.node_outputs["12"][0]["samples"].shape[2] == LATENT_SHAPE[2] + 1
    trimmed = result.node_outputs["30"][0]["samples"]
    assert tuple(trimmed.shape) == LATENT_SHAPE and bool(torch.isfinite(trimmed).all())
    assert result.node_outputs["13"][0].shape[0] == VIDEO_FRAMES
    assert "15" in result.ui_outputs  # the video was saved


def test_fast_recipe_twin_runs_with_tiny_models(comfy_host, tiny_models):
    """The fast recipe's API twin runs end to end: tiny Wan as Phantom-Wan, a tiny LoRA in the distill slot,
    the fixture pack's random conditioning for the text encoder, the video at the tiny models' size. The
    Reference Guider runs Phantom's passes at the first two of six steps and the positive pass after."""
    import torch
    from nodes_support import VIDEO_FRAMES, VIDEO_HEIGHT, VIDEO_WIDTH, random_conditioning_node
    from safetensors.torch import save_file
    from tiny_models import TINY_WAN

    loras = comfy_host.models_dir / "loras"
    loras.mkdir(parents=True, exist_ok=True)
    dim, rank = TINY_WAN.dim, 4
    generator = torch.Generator().manual_seed(5)
    save_file(
        {
            "diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.randn(rank, dim, generator=generator)
            * 0.1,
            "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.randn(dim, rank, generator=generator)
            * 0.1,
        },
        str(loras / "cvx_tiny_distill_lora.safetensors"),
    )
    write_subject_images(comfy_host.input_dir, subject_images(ui_workflow(FAST_RECIPE)))
    api = api_workflow(FAST_RECIPE)
    api["1"]["inputs"]["unet_name"] = tiny_models.wan
    api["24"]["inputs"]["lora_name"] = "cvx_tiny_distill_lora.safetensors"
    api["4"]["inputs"]["vae_name"] = tiny_models.vae
    api["6"], api["7"] = random_conditioning_node(1, 6), random_conditioning_node(2, 6)
    for node_id in ("3", "5"):  # the text encoder and the prompt text feed nothing now
        del api[node_id]
    api["25"]["inputs"].update({"width": VIDEO_WIDTH, "height": VIDEO_HEIGHT, "length": VIDEO_FRAMES})
    result = comfy_host.run_graph(api, capture=["12", "26"])
    latent = result.node_outputs["12"][0]["samples"]
    assert latent.shape[-2:] == (VIDEO_HEIGHT // 8, VIDEO_WIDTH // 8)
    assert bool(torch.isfinite(latent).all())
    guidance = result.node_outputs["26"][0].guidance
    assert [guidance.cfg.values, guidance.image_cfg.values] == [(3.0, 3.0, 1.0, 1.0, 1.0, 1.0)] * 2
    assert "15" in result.ui_outputs  # the video was saved


def test_batch_client_refuses_the_several_references_twin_with_a_clear_reason():
    """Three LoadImage nodes feed ReferenceEncode: the batch client (one reference per job) cannot pick one."""
    from customvideox_core.batch.workflow import WorkflowError, locate_targets

    with pytest.raises(WorkflowError, match="3 LoadImage nodes"):
        locate_targets(api_workflow("customvideox_multi_reference"))


def test_template_browser_lists_and_serves_the_ui_graphs(comfy_server):
    listed = comfy_server.get_json("/api/workflow_templates")
    assert set(UI_NAMES) <= set(listed[PACK_FOLDER_NAME])
    for name in UI_NAMES:
        served = comfy_server.get_json(f"/api/workflow_templates/{PACK_FOLDER_NAME}/{name}.json")
        assert served == ui_workflow(name)
