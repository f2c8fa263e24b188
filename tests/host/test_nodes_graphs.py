"""Graphs of the pack's nodes through ComfyUI's own executor, in-process and over HTTP.

- An API-format graph using all six nodes, and CustomVideoXApply + core KSampler, run through
  ``POST /prompt`` and ``/history`` on a real server.
- Adapters: LoadCustomVideoX applies a LoRA through ComfyUI's patch system (oracle: strength 0 equals
  no adapter; diffusers-style names load the same weights as ComfyUI-style names).
- Bad inputs come back as clear node errors, and the server then runs the next prompt normally.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from harness import GraphExecutionError, GraphValidationError
from nodes_support import (
    VIDEO_FRAMES,
    VIDEO_HEIGHT,
    VIDEO_WIDTH,
    Pack,
    left_untouched,
    load_model,
    random_conditioning_node,
    sample,
)
from tiny_models import tiny_cogvideox_config

IMAGE_NAME = "cvx_reference.png"
PROMPT = "a plush dog running on the grass"
PATCH_INPUTS = {
    "model": ["2", 0],
    "reference": ["5", 0],
    "tab": ["6", 0],
    "erae": ["8", 0],
    "uncond_sees_reference": False,
}
"""Sample's and Apply's patch inputs in :func:`six_node_graph`: LoadCustomVideoX's model, the reference,
TAB and ERAE."""
PROMPT_INPUTS = {"positive": ["9", 0], "negative": ["10", 0]}
SAMPLER_INPUTS = {
    "seed": 3,
    "steps": 2,
    "cfg": 2.0,
    "sampler_name": "euler",
    "scheduler": "simple",
    "denoise": 1.0,
}
"""Sample's and KSampler's sampler widgets: with the same patch they give the same video."""


def write_reference_png(folder: Path) -> str:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(11)
    pixels = (torch.rand(VIDEO_HEIGHT, VIDEO_WIDTH, 3, generator=generator) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(folder / IMAGE_NAME)
    return IMAGE_NAME


def six_node_graph(
    tiny_models,
    *,
    unet: str | None = None,
    adapter: str = "none",
    entity: str = "dog",
    custom_values: str = "",
    shape: str = "parabolic",
    image_node: dict | None = None,
    mask_node: dict | None = None,
) -> dict:
    """UNETLoader → LoadCustomVideoX → CustomVideoXSample (+ ReferenceEncode, TimeAwareBias, ERAEMask)."""
    graph = {
        "1": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": unet or tiny_models.cogvideox["5b"], "weight_dtype": "default"},
        },
        "2": {
            "class_type": "LoadCustomVideoX",
            "inputs": {"model": ["1", 0], "adapter": adapter, "strength": 1.0},
        },
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": tiny_models.vae}},
        "4": image_node or {"class_type": "LoadImage", "inputs": {"image": IMAGE_NAME}},
        "5": {
            "class_type": "CustomVideoXReferenceEncode",
            "inputs": {
                "vae": ["3", 0],
                "image": ["4", 0],
                "width": VIDEO_WIDTH,
                "height": VIDEO_HEIGHT,
                "fit": "pad",
                "invert_mask": False,
            },
        },
        "6": {
            "class_type": "CustomVideoXTimeAwareBias",
            "inputs": {
                "shape": shape,
                "peak": 2.0,
                "floor": 0.0,
                "start": 0.0,
                "end": 1.0,
                "custom_values": custom_values,
            },
        },
        "7": {"class_type": "CVXTestTokenizerCLIP", "inputs": {"family": "cogvideox"}},
        "8": {
            "class_type": "CustomVideoXERAEMask",
            "inputs": {
                "clip": ["7", 0],
                "prompt": PROMPT,
                "entity_words": entity,
                "strength": 1.0,
                "threshold": 0.0,
                "block_outside_mask": False,
            },
        },
        "9": random_conditioning_node(1, 12),
        "10": random_conditioning_node(2, 12),
        "11": {
            "class_type": "CustomVideoXSample",
            "inputs": {
                **PATCH_INPUTS,
                **PROMPT_INPUTS,
                "width": VIDEO_WIDTH,
                "height": VIDEO_HEIGHT,
                "length": VIDEO_FRAMES,
                **SAMPLER_INPUTS,
            },
        },
        "12": {"class_type": "CVXTestLatentSummary", "inputs": {"samples": ["11", 0]}},
    }
    if mask_node is not None:
        graph["13"] = mask_node
        graph["5"]["inputs"]["mask"] = ["13", 0]
    return graph


def apply_ksampler_graph(tiny_models) -> dict:
    graph = six_node_graph(tiny_models)
    del graph["11"]
    graph["14"] = {"class_type": "CustomVideoXApply", "inputs": {**PATCH_INPUTS}}
    graph["15"] = {
        "class_type": "EmptyHunyuanLatentVideo",
        "inputs": {"width": VIDEO_WIDTH, "height": VIDEO_HEIGHT, "length": VIDEO_FRAMES, "batch_size": 1},
    }
    graph["11"] = {
        "class_type": "KSampler",
        "inputs": {"model": ["14", 0], **PROMPT_INPUTS, "latent_image": ["15", 0], **SAMPLER_INPUTS},
    }
    return graph


def summary_of(history_outputs: dict) -> dict:
    return history_outputs["12"]["cvx_latent_summary"][0]


@pytest.fixture(scope="module")
def reference_png(comfy_host) -> str:
    return write_reference_png(comfy_host.input_dir)


def tiny_host_signature(pack: Pack, hidden_size: int = 128, layers: int = 2):
    config = tiny_cogvideox_config("5b")
    return pack.hosts.HostSignature(
        family="cogvideox",
        hidden_size=hidden_size,
        num_layers=layers,
        num_heads=hidden_size // 64,
        head_dim=config.head_dim,
        patch_size=2,
        positions="rope",
    )


def lora_tensors(*, diffusers_names: bool = False, rank: int = 4, hidden: int = 128, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for block in range(2):
        for comfy_name, diffusers_name in (
            ("q", "to_q"),
            ("k", "to_k"),
            ("v", "to_v"),
            ("attn_out", "to_out.0"),
        ):
            prefix = (
                f"transformer.transformer_blocks.{block}.attn1.{diffusers_name}"
                if diffusers_names
                else f"diffusion_model.blocks.{block}.{comfy_name}"
            )
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, hidden, generator=generator) * 0.3
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(hidden, rank, generator=generator) * 0.3
    return tensors


def write_adapter(pack: Pack, comfy_host, name: str, tensors: dict, host) -> str:
    import customvideox_core  # the same package the pack uses, loaded from the repo root

    folder = comfy_host.models_dir / "customvideox"
    folder.mkdir(parents=True, exist_ok=True)
    metadata = pack.adapter_file.AdapterMetadata(
        host=host,
        rank=4,
        alpha=4.0,
        targets=("q", "k", "v", "attn_out"),
        layout_version=customvideox_core.LAYOUT_VERSION,
    )
    pack.adapter_file.save_adapter(folder / name, tensors, metadata, overwrite=True)
    return name


# ---------------------------------------------------------------------------------------------
# Graphs that run
# ---------------------------------------------------------------------------------------------


def test_six_node_graph_runs_in_process(comfy_host, tiny_models, reference_png):
    result = comfy_host.run_graph(six_node_graph(tiny_models), capture=["11"])
    latent = result.node_outputs["11"][0]["samples"]
    assert tuple(latent.shape) == (1, 16, 2, 8, 12)
    assert any(event.total == 2 for event in result.progress), "no sampling progress was reported"
    assert "images" in result.ui_outputs.get("6", {}), "TimeAwareBias shows no curve"


def test_six_node_graph_and_apply_ksampler_run_over_http(comfy_server, comfy_host, tiny_models):
    write_reference_png(comfy_server.base_dir / "input")
    six = comfy_server.wait(comfy_server.queue(six_node_graph(tiny_models)), timeout=180)
    applied = comfy_server.wait(comfy_server.queue(apply_ksampler_graph(tiny_models)), timeout=180)
    six_summary, applied_summary = summary_of(six["outputs"]), summary_of(applied["outputs"])
    assert six_summary["shape"] == [1, 16, 2, 8, 12] == applied_summary["shape"]
    assert six_summary["finite"] and applied_summary["finite"]
    # Sample and Apply+KSampler run the same patch with the same seed: the same video.
    assert six_summary["mean"] == pytest.approx(applied_summary["mean"], abs=1e-6)
    assert six_summary["std"] == pytest.approx(applied_summary["std"], abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Adapters
# ---------------------------------------------------------------------------------------------


def test_adapter_is_applied_through_comfy_patches(comfy_host, pack, tiny_models):
    model = load_model(tiny_models.diffusion_models_dir, tiny_models.cogvideox["5b"])
    with left_untouched(model):
        original_video = sample(model)
        loader = comfy_host.node_class("LoadCustomVideoX")
        comfy_name = write_adapter(
            pack, comfy_host, "cvx_test_comfy.safetensors", lora_tensors(), tiny_host_signature(pack)
        )
        diffusers_name = write_adapter(
            pack,
            comfy_host,
            "cvx_test_diffusers.safetensors",
            lora_tensors(diffusers_names=True),
            tiny_host_signature(pack),
        )
        plain = sample(loader.execute(model, "none", 1.0).args[0])
        with_comfy = loader.execute(model, comfy_name, 1.0)
        with_diffusers = loader.execute(model, diffusers_name, 1.0)
        zero_strength = loader.execute(model, comfy_name, 0.0)
        assert len(with_comfy.args[0].patches) == 8
        assert torch.equal(sample(zero_strength.args[0]), plain)
        adapted = sample(with_comfy.args[0])
        assert (adapted - plain).abs().max() > 1e-3
        assert torch.allclose(sample(with_diffusers.args[0]), adapted, atol=1e-6)
        # ComfyUI merges a clone's LoRA into the shared module while that clone is loaded and restores the
        # weights when another patcher loads; the input MODEL itself must still give its own video.
        assert torch.equal(sample(model), original_video)


def test_unmatched_adapter_keys_are_reported(comfy_host, pack, tiny_models):
    model = load_model(tiny_models.diffusion_models_dir, tiny_models.cogvideox["5b"])
    tensors = lora_tensors()
    tensors["diffusion_model.not_a_module.lora_A.weight"] = torch.zeros(4, 128)
    tensors["diffusion_model.not_a_module.lora_B.weight"] = torch.zeros(128, 4)
    name = write_adapter(
        pack, comfy_host, "cvx_test_extra_keys.safetensors", tensors, tiny_host_signature(pack)
    )
    output = comfy_host.node_class("LoadCustomVideoX").execute(model, name, 1.0)
    text = output.ui.as_dict()["text"][0]
    assert "8 layers patched" in text
    assert "match nothing" in text and "not_a_module" in text


# ---------------------------------------------------------------------------------------------
# Bad inputs: a clear node error, and the server keeps serving
# ---------------------------------------------------------------------------------------------


def bad_graphs(tiny_models, pack, comfy_host) -> dict[str, tuple[dict, str]]:
    other_host = tiny_host_signature(pack, hidden_size=3072, layers=42)
    other = write_adapter(
        pack, comfy_host, "cvx_test_for_5b.safetensors", lora_tensors(hidden=3072, rank=2), other_host
    )
    return {
        "sd15 model": (six_node_graph(tiny_models, unet=tiny_models.sd15), "Supported: CogVideoX"),
        "empty image batch": (
            six_node_graph(
                tiny_models,
                image_node={
                    "class_type": "CVXTestEmptyImage",
                    "inputs": {"width": VIDEO_WIDTH, "height": VIDEO_HEIGHT},
                },
            ),
            "empty",
        ),
        "mask of another size": (
            six_node_graph(
                tiny_models,
                mask_node={"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 32, "height": 32}},
            ),
            "32",
        ),
        "entity word absent": (six_node_graph(tiny_models, entity="cat"), "plush"),
        "NaN schedule value": (six_node_graph(tiny_models, shape="custom", custom_values="0, nan, 1"), "NaN"),
        "adapter for another base model": (six_node_graph(tiny_models, adapter=other), "CogVideoX-5B"),
    }


def test_bad_inputs_are_clear_node_errors_in_process(comfy_host, pack, tiny_models, reference_png):
    for case, (graph, expected) in bad_graphs(tiny_models, pack, comfy_host).items():
        with pytest.raises((GraphExecutionError, GraphValidationError)) as caught:
            comfy_host.run_graph(graph)
        assert expected.lower() in str(caught.value).lower(), f"{case}: {caught.value}"


def test_server_keeps_serving_after_bad_inputs(comfy_server, comfy_host, pack, tiny_models):
    write_reference_png(comfy_server.base_dir / "input")
    for case, (graph, expected) in bad_graphs(tiny_models, pack, comfy_host).items():
        with pytest.raises((GraphExecutionError, GraphValidationError)) as caught:
            comfy_server.wait(comfy_server.queue(graph), timeout=180)
        assert expected.lower() in str(caught.value).lower(), f"{case}: {caught.value}"
    good = comfy_server.wait(comfy_server.queue(six_node_graph(tiny_models)), timeout=180)
    assert summary_of(good["outputs"])["finite"]
