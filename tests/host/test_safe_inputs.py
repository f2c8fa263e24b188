"""Issue 21's security cases sent as a careless or hostile client would: through ComfyUI's own prompt
validation and executor (and once over HTTP to a real server), checking the refusal, that it names no
file on disk, and that nothing was written outside ComfyUI's folders.

1. ``dataset_path`` outside the allowed roots (``..``, absolute, ``~``, a link out) is refused and lists
   nothing; 2. the latent cache goes under ComfyUI's temp folder, never into the dataset folder;
3. ``adapter_name`` ``C:evil`` or holding a newline is refused, and nothing is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from harness import REPO_ROOT, GraphExecutionError
from tiny_models import TINY_TEXT_DIM

SECRETS = ("cvx_secret_alpha.png", "cvx_secret_beta.mp4", "cvx_secret_folder")
"""What the outside folder holds: shaped like dataset items, so a scan would list them."""


def _listing(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


@pytest.fixture
def outside(tmp_path) -> Path:
    """A writable folder outside every ComfyUI folder, holding files a folder listing would echo."""
    folder = tmp_path / "outside_comfyui"
    folder.mkdir()
    (folder / SECRETS[0]).write_bytes(b"not really a png")
    (folder / SECRETS[1]).write_bytes(b"not really a video")
    (folder / SECRETS[2]).mkdir()
    return folder


def _train_prompt(tiny_models, **inputs) -> tuple[dict, str]:
    """The shipped training graph on the tiny model, random conditioning, and the given Train inputs."""
    prompt = json.loads((REPO_ROOT / "workflows" / "api" / "customvideox_train_api.json").read_text())
    (train_id,) = [key for key, node in prompt.items() if node["class_type"] == "CustomVideoXTrainAdapter"]
    prompt["1"]["inputs"]["unet_name"] = tiny_models.cogvideox["5b"]
    prompt["2"]["inputs"]["vae_name"] = tiny_models.vae
    conditioning_id = prompt[train_id]["inputs"]["positive"][0]
    del prompt[prompt[conditioning_id]["inputs"]["clip"][0]]
    prompt[conditioning_id] = {
        "class_type": "CVXTestRandomConditioning",
        "inputs": {"seed": 1, "length": 6, "dim": TINY_TEXT_DIM},
    }
    prompt[train_id]["inputs"].update(width=96, height=64, length=5, steps=1, **inputs)
    return prompt, train_id


def _refusal(comfy_host, prompt) -> str:
    with pytest.raises(GraphExecutionError) as caught:
        comfy_host.run_graph(prompt)
    assert "Traceback" not in caught.value.exception_message
    return caught.value.exception_message


def _comfy_folders(comfy_host) -> dict[str, set[str]]:
    import folder_paths

    roots = {
        "input": Path(folder_paths.get_input_directory()),
        "models": comfy_host.models_dir / "customvideox",
    }
    return {name: _listing(root) for name, root in roots.items() if root.is_dir()}


@pytest.mark.parametrize("kind", ["parent", "absolute", "home", "link", "drive"])
def test_dataset_path_outside_the_allowed_folders_is_refused_without_listing(
    comfy_host, tiny_models, outside, kind
) -> None:
    import folder_paths

    input_dir = Path(folder_paths.get_input_directory())
    depth = len(input_dir.resolve().parts) - 1
    texts = {
        "parent": "/".join([".."] * depth) + str(outside),  # ../../../<outside>
        "absolute": str(outside),
        "home": "~",
        "link": "cvx_link_out",
        "drive": "C:evil",
    }
    before_outside, before_comfy = _listing(outside), _comfy_folders(comfy_host)
    if kind == "link":
        if os.name == "nt":
            pytest.skip("symlinks need privileges on Windows")
        (input_dir / "cvx_link_out").symlink_to(outside, target_is_directory=True)
    try:
        prompt, _ = _train_prompt(tiny_models, dataset_path=texts[kind], adapter_name="cvx_refused_dataset")
        message = _refusal(comfy_host, prompt)
    finally:
        if kind == "link":
            (input_dir / "cvx_link_out").unlink()
    if kind == "link":
        assert "through a link" in message
    assert "dataset_path" in message and "input folder" in message
    for secret in SECRETS:
        assert secret not in message, "the error lists what the folder holds"
    assert str(input_dir) not in message, "the error names the server's folders"
    assert _listing(outside) == before_outside, "nothing is written outside ComfyUI's folders"
    assert _comfy_folders(comfy_host) == before_comfy, "no adapter, no cache in input"


def test_dataset_path_over_http_is_refused_without_listing(comfy_server, tiny_models, outside) -> None:
    """The reported attack: any HTTP client queues ``../../../<folder>`` and reads the error."""
    depth = len((comfy_server.base_dir / "input").resolve().parts) - 1
    prompt, train_id = _train_prompt(
        tiny_models, dataset_path="/".join([".."] * depth) + str(outside), adapter_name="cvx_http_refused"
    )
    before = _listing(outside)
    with pytest.raises(GraphExecutionError) as caught:
        comfy_server.run_graph(prompt, timeout=300)
    message = caught.value.exception_message
    assert caught.value.node_id == train_id and "'..' parts are not allowed" in message
    history = json.dumps(comfy_server.get_json("/history"))
    for secret in SECRETS:
        assert secret not in history, "the history (every client can read it) lists the folder"
    assert _listing(outside) == before


@pytest.mark.parametrize("name", ["C:evil", "two\nlines", "sub/name", ".hidden", "CON"])
def test_adapter_name_must_be_a_plain_file_name(comfy_host, tiny_models, name) -> None:
    dataset = Path(comfy_host.input_dir) / "cvx_names_dataset"
    dataset.mkdir(exist_ok=True)
    before = _comfy_folders(comfy_host)
    prompt, _ = _train_prompt(tiny_models, dataset_path=dataset.name, adapter_name=name)
    message = _refusal(comfy_host, prompt)
    assert "adapter_name" in message and "not a plain file name" in message
    assert "\n" not in message.strip(), "the name is shown escaped, not echoed raw"
    assert _comfy_folders(comfy_host) == before


def _write_png(path: Path, image: torch.Tensor) -> None:
    from PIL import Image

    Image.fromarray((image * 255).round().to(torch.uint8).numpy()).save(path)


def test_latent_cache_goes_to_comfyui_temp_not_the_dataset(pack_module, comfy_host, vae) -> None:
    """One tiny item encoded by ``prepare_dataset``: its cache file lies under ComfyUI's temp folder and
    the dataset folder is exactly as it was (the issue: ``.customvideox_cache`` written next to the items)."""
    import folder_paths
    from nodes_support import pack_modules

    train_data = pack_modules(pack_module, {"train_data": "nodes.train_data"}).train_data
    dataset = Path(comfy_host.input_dir) / "cvx_cache_dataset"
    (dataset / "item").mkdir(parents=True)
    image = torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(0))
    for index in range(5):
        _write_png(dataset / "item" / f"{index}.png", image)
    _write_png(dataset / "item.png", image)
    before = _listing(dataset)
    with torch.inference_mode():
        prepared = train_data.prepare_dataset(vae, dataset, train_data.TrainDataSettings(32, 32, 5))
    assert prepared.encoded == 1
    assert _listing(dataset) == before, "nothing is written into the dataset folder"
    cached = list(train_data.cache_folder(dataset).glob("*.safetensors"))
    assert len(cached) == 1
    assert cached[0].resolve().is_relative_to(Path(folder_paths.get_temp_directory()).resolve())


def test_datasets_resolve_in_input_and_in_registered_dataset_folders(
    pack_module, comfy_host, tmp_path
) -> None:
    """``models/customvideox_datasets`` is registered like the model folders, and a folder a server owner
    adds (as ``extra_model_paths.yaml`` does) is a dataset root too; the input folder is tried first."""
    import folder_paths
    from nodes_support import pack_modules

    train_node = pack_modules(pack_module, {"train_node": "nodes.train_node"}).train_node
    registered = folder_paths.get_folder_paths("customvideox_datasets")
    assert str(comfy_host.models_dir / "customvideox_datasets") in registered
    extra = tmp_path / "owner_datasets"
    (extra / "cvx_owner_set").mkdir(parents=True)
    (Path(folder_paths.get_input_directory()) / "cvx_both").mkdir(exist_ok=True)
    (extra / "cvx_both").mkdir()
    folder_paths.add_model_folder_path("customvideox_datasets", str(extra))
    try:
        assert train_node.resolve_dataset_path("cvx_owner_set") == (extra / "cvx_owner_set").resolve()
        assert (
            train_node.resolve_dataset_path(str(extra / "cvx_owner_set"))
            == (extra / "cvx_owner_set").resolve()
        )
        both = train_node.resolve_dataset_path("cvx_both")
        assert both == (Path(folder_paths.get_input_directory()) / "cvx_both").resolve(), "input comes first"
    finally:
        folder_paths.folder_names_and_paths["customvideox_datasets"][0].remove(str(extra))
    with pytest.raises(ValueError, match="absolute paths are refused"):
        train_node.resolve_dataset_path(str(extra / "cvx_owner_set"))
