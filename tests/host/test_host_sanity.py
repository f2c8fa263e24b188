"""The host harness works: a real ComfyUI, our pack, tiny models, in-process runs and a server.

ComfyUI is imported inside fixtures and tests only (this module is collected by the unit tier too).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from harness import (
    MIN_COMFYUI_VERSION,
    REPO_ROOT,
    GraphExecutionError,
    GraphValidationError,
    read_comfyui_version,
)
from nodes_support import ksampler_node, random_conditioning_node
from safetensors.torch import load_file
from tiny_models import COGVIDEOX_VARIANTS, TINY_TEXT_DIM, TINY_WAN, tiny_cogvideox_config

CORE_NODES = (
    "UNETLoader",
    "VAELoader",
    "KSampler",
    "VAEEncode",
    "VAEDecode",
    "CLIPTextEncode",
    "LoadImage",
    "SaveAnimatedWEBP",
    "EmptyHunyuanLatentVideo",
)
FIXTURE_NODES = ("CVXTestRandomConditioning", "CVXTestTokenizerCLIP", "CVXTestLatentSummary")

# A 5-frame 64×96 video: latent [1, 16, (5 - 1) // 4 + 1, 64 / 8, 96 / 8].
VIDEO_WIDTH, VIDEO_HEIGHT, VIDEO_FRAMES = 96, 64, 5
EXPECTED_LATENT_SHAPE = [1, 16, 2, 8, 12]


def one_step_prompt(unet_name: str, vae_name: str, *, seed: int = 7, cfg: float = 2.0) -> dict:
    """UNETLoader → KSampler (1 euler step, random text) → summary, VAEDecode → SaveAnimatedWEBP."""
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet_name, "weight_dtype": "default"}},
        "2": random_conditioning_node(1, 6),
        "3": random_conditioning_node(2, 6),
        "4": {
            "class_type": "EmptyHunyuanLatentVideo",
            "inputs": {"width": VIDEO_WIDTH, "height": VIDEO_HEIGHT, "length": VIDEO_FRAMES, "batch_size": 1},
        },
        "5": ksampler_node(["1", 0], ["2", 0], ["3", 0], ["4", 0], seed=seed, steps=1, cfg=cfg),
        "6": {"class_type": "CVXTestLatentSummary", "inputs": {"samples": ["5", 0]}},
        "7": {"class_type": "VAELoader", "inputs": {"vae_name": vae_name}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["7", 0]}},
        "9": {
            "class_type": "SaveAnimatedWEBP",
            "inputs": {
                "images": ["8", 0],
                "filename_prefix": "cvx_sanity",
                "fps": 8.0,
                "lossless": False,
                "quality": 50,
                "method": "fastest",
            },
        },
    }


# ---------------------------------------------------------------------------------------------
# ComfyUI itself
# ---------------------------------------------------------------------------------------------


def test_comfyui_is_recent_enough(comfyui_path: Path) -> None:
    import comfyui_version

    version = read_comfyui_version(comfyui_path)
    assert version >= MIN_COMFYUI_VERSION, (
        f"ComfyUI {version} predates native CogVideoX ({MIN_COMFYUI_VERSION})"
    )
    assert comfyui_version.__version__ == ".".join(map(str, version))


def test_comfyui_shadows_the_packs_nodes_folder(comfy_host) -> None:
    """``import nodes`` is ComfyUI's nodes.py, never the pack's nodes/ folder; paths stay in temp."""
    import folder_paths

    assert Path(sys.modules["nodes"].__file__).resolve() == comfy_host.comfyui_path / "nodes.py"
    for directory in (
        folder_paths.models_dir,
        folder_paths.get_output_directory(),
        folder_paths.get_user_directory(),
    ):
        resolved = Path(directory).resolve()
        assert resolved.is_relative_to(comfy_host.base_dir.resolve())
        assert not resolved.is_relative_to(comfy_host.comfyui_path)
        assert not resolved.is_relative_to(REPO_ROOT)


def test_core_and_fixture_nodes_are_registered(comfy_host) -> None:
    assert comfy_host.fixture_pack.loaded, comfy_host.fixture_pack.log
    registered = comfy_host.node_ids()
    missing = [node_id for node_id in CORE_NODES + FIXTURE_NODES if node_id not in registered]
    assert not missing, f"not registered: {missing}"
    assert comfy_host.node_class("CVXTestLatentSummary").__module__.endswith("fixture_pack")
    with pytest.raises(KeyError, match="not registered"):
        comfy_host.node_class("CVXTestNoSuchNode")


def test_pack_loads_through_load_custom_node(comfy_host, pack_module) -> None:
    assert comfy_host.pack.loaded
    assert "IMPORT FAILED" not in comfy_host.pack.log
    assert "Traceback" not in comfy_host.pack.log, comfy_host.pack.log
    assert callable(pack_module.comfy_entrypoint)
    assert pack_module.__name__ == str(REPO_ROOT).replace(".", "_x_")
    pack_nodes = [
        node_id
        for node_id in comfy_host.node_ids()
        if getattr(comfy_host.node_class(node_id), "RELATIVE_PYTHON_MODULE", "")
        == f"custom_nodes.{REPO_ROOT.name}"
    ]
    assert all(
        node_id.startswith("CustomVideoX") or node_id == "LoadCustomVideoX" for node_id in pack_nodes
    ), pack_nodes


# ---------------------------------------------------------------------------------------------
# Tiny models through ComfyUI's own loaders
# ---------------------------------------------------------------------------------------------


def _load_unet(comfy_host, name: str):
    (model,) = comfy_host.node_class("UNETLoader")().load_unet(name, "default")
    return model


@pytest.mark.parametrize("variant", COGVIDEOX_VARIANTS)
def test_tiny_cogvideox_is_detected_as_built(comfy_host, tiny_models, variant: str) -> None:
    import comfy.ldm.cogvideo.model
    import comfy.model_base
    import comfy.supported_models

    expected = tiny_cogvideox_config(variant)
    patcher = _load_unet(comfy_host, tiny_models.cogvideox[variant])
    assert isinstance(patcher.model, comfy.model_base.CogVideoX)
    assert type(patcher.model.model_config) is comfy.supported_models.CogVideoX_T2V
    assert patcher.model.model_type == comfy.model_base.ModelType.V_PREDICTION_DDPM
    transformer = patcher.model.diffusion_model
    assert isinstance(transformer, comfy.ldm.cogvideo.model.CogVideoXTransformer3DModel)
    assert transformer.num_attention_heads == expected.num_heads
    assert transformer.attention_head_dim == expected.head_dim == 64
    assert transformer.dim == expected.hidden_dim
    assert len(transformer.blocks) == expected.num_layers
    assert transformer.patch_embed.text_proj.in_features == expected.text_embed_dim
    assert transformer.in_channels == expected.in_channels
    assert transformer.patch_size == expected.patch_size
    assert transformer.patch_size_t == expected.patch_size_t
    assert transformer.use_rotary_positional_embeddings is expected.rotary
    saved = load_file(str(tiny_models.diffusion_models_dir / tiny_models.cogvideox[variant]))
    torch.testing.assert_close(
        transformer.blocks[1].attn_out.weight.detach().float(), saved["blocks.1.attn_out.weight"]
    )
    assert 0.25 < float(saved["blocks.0.q.weight"].std()) < 0.35  # attention weights at std ~0.3


def test_tiny_wan_is_detected_as_built(comfy_host, tiny_models) -> None:
    import comfy.ldm.wan.model
    import comfy.model_base
    import comfy.supported_models

    patcher = _load_unet(comfy_host, tiny_models.wan)
    assert isinstance(patcher.model, comfy.model_base.WAN21)
    assert type(patcher.model.model_config) is comfy.supported_models.WAN21_T2V
    assert patcher.model.model_type == comfy.model_base.ModelType.FLOW
    transformer = patcher.model.diffusion_model
    assert isinstance(transformer, comfy.ldm.wan.model.WanModel)
    assert (transformer.dim, transformer.num_heads, transformer.ffn_dim) == (
        TINY_WAN.dim,
        TINY_WAN.num_heads,
        TINY_WAN.ffn_dim,
    )
    assert transformer.blocks[0].self_attn.head_dim == TINY_WAN.dim // TINY_WAN.num_heads
    assert transformer.text_embedding[0].in_features == TINY_WAN.text_dim
    assert len(transformer.blocks) == TINY_WAN.num_layers
    assert (transformer.in_dim, transformer.out_dim) == (TINY_WAN.in_channels, TINY_WAN.out_channels)


def test_tiny_sd15_is_detected_as_sd15(comfy_host, tiny_models) -> None:
    import comfy.model_base
    import comfy.supported_models

    patcher = _load_unet(comfy_host, tiny_models.sd15)
    assert type(patcher.model.model_config) is comfy.supported_models.SD15
    assert type(patcher.model) is comfy.model_base.BaseModel
    assert patcher.model.model_type == comfy.model_base.ModelType.EPS
    assert patcher.model.latent_format.latent_channels == 4


def test_tiny_vae_encodes_and_decodes_images_and_video(comfy_host, tiny_models) -> None:
    import comfy.taesd.taehv

    (vae,) = comfy_host.node_class("VAELoader")().load_vae(tiny_models.vae)
    assert isinstance(vae.first_stage_model, comfy.taesd.taehv.TAEHV)
    assert vae.latent_channels == 16
    generator = torch.Generator().manual_seed(0)
    for frames, latent_frames in ((1, 1), (9, 3)):  # 4× temporal compression keeping the first frame
        pixels = torch.rand((frames, 64, 96, 3), generator=generator)
        latent = vae.encode(pixels)
        assert list(latent.shape) == [1, 16, latent_frames, 8, 12]
        decoded = vae.decode(latent)
        assert list(decoded.shape) == [1, frames, 64, 96, 3]
        assert torch.isfinite(latent).all() and torch.isfinite(decoded).all()
        assert float(decoded.detach().std()) > 0.0


# ---------------------------------------------------------------------------------------------
# Fixture pack
# ---------------------------------------------------------------------------------------------


def test_random_conditioning_is_seeded_standard_normal(comfy_host) -> None:
    node = comfy_host.node_class("CVXTestRandomConditioning")
    (conditioning,) = node.execute(seed=3, length=5, dim=TINY_TEXT_DIM).result
    (again,) = node.execute(seed=3, length=5, dim=TINY_TEXT_DIM).result
    embeddings, options = conditioning[0]
    assert options == {}
    assert list(embeddings.shape) == [1, 5, TINY_TEXT_DIM]
    torch.testing.assert_close(
        embeddings, torch.randn((1, 5, TINY_TEXT_DIM), generator=torch.Generator().manual_seed(3))
    )
    torch.testing.assert_close(again[0][0], embeddings)


@pytest.mark.parametrize(
    ("family", "key", "min_length"), [("cogvideox", "t5xxl", 226), ("wan", "umt5xxl", 512)]
)
def test_tokenizer_clip_tokenizes_words(comfy_host, family: str, key: str, min_length: int) -> None:
    """Text tokens (word id ≥ 1), then one end token, then padding to the encoder's minimum length."""
    (clip,) = comfy_host.node_class("CVXTestTokenizerCLIP").execute(family=family).result

    def text_tokens(text: str) -> tuple[list[int], list[tuple]]:
        (sequence,) = clip.tokenize(text, return_word_ids=True)[key]
        return [token for token, _weight, word in sequence if word != 0], sequence

    prompt_tokens, sequence = text_tokens("a red fox")
    entity_tokens, _ = text_tokens("fox")
    assert len(sequence) == min_length
    assert all(weight == 1.0 for _token, weight, _word in sequence)
    assert 0 < len(entity_tokens) < len(prompt_tokens)
    tail = prompt_tokens[len(prompt_tokens) - len(entity_tokens) :]
    assert tail == entity_tokens  # the entity word's tokens can be found in the prompt's
    end_and_padding = [token for token, _weight, word in sequence[len(prompt_tokens) :]]
    assert end_and_padding[0] != 0 and set(end_and_padding[1:]) == {0}


# ---------------------------------------------------------------------------------------------
# Running graphs in-process
# ---------------------------------------------------------------------------------------------


def _summary(ui_outputs: dict, node_id: str = "6") -> dict:
    (summary,) = ui_outputs[node_id]["cvx_latent_summary"]
    return summary


def test_one_ksampler_step_on_tiny_cogvideox_in_process(comfy_host, tiny_models) -> None:
    prompt = one_step_prompt(tiny_models.cogvideox["5b"], tiny_models.vae)
    result = comfy_host.run_graph(prompt, capture=["5"])
    (latent,) = result.node_outputs["5"]
    samples = latent["samples"]
    assert list(samples.shape) == EXPECTED_LATENT_SHAPE
    assert torch.isfinite(samples).all() and float(samples.abs().max()) > 0.0
    summary = _summary(result.ui_outputs)
    assert summary["shape"] == EXPECTED_LATENT_SHAPE
    assert math.isclose(summary["mean"], float(samples.double().mean()), rel_tol=1e-9, abs_tol=1e-12)
    (saved,) = result.ui_outputs["9"]["images"]
    assert (comfy_host.output_dir / saved["subfolder"] / saved["filename"]).is_file()
    sampler_progress = [event for event in result.progress if event.node_id == "5"]
    assert sampler_progress and sampler_progress[-1].value == sampler_progress[-1].total == 1
    assert ("executed", "6") in [
        (event, data.get("node")) for event, data in result.events if isinstance(data, dict)
    ]

    same = comfy_host.run_graph(prompt, capture=["5"])
    torch.testing.assert_close(same.node_outputs["5"][0]["samples"], samples, rtol=0, atol=0)
    other_seed = comfy_host.run_graph(
        one_step_prompt(tiny_models.cogvideox["5b"], tiny_models.vae, seed=8), capture=["5"]
    )
    assert not torch.equal(other_seed.node_outputs["5"][0]["samples"], samples)


@pytest.mark.parametrize("model", ["cogvideox-2b", "cogvideox-1.5", "wan"])
def test_one_ksampler_step_runs_on_every_tiny_video_model(comfy_host, tiny_models, model: str) -> None:
    unet_name = tiny_models.wan if model == "wan" else tiny_models.cogvideox[model.removeprefix("cogvideox-")]
    result = comfy_host.run_graph(one_step_prompt(unet_name, tiny_models.vae), capture=["5", "8"])
    samples = result.node_outputs["5"][0]["samples"]
    assert list(samples.shape) == EXPECTED_LATENT_SHAPE
    assert torch.isfinite(samples).all() and float(samples.abs().max()) > 0.0
    (frames,) = result.node_outputs["8"]
    assert list(frames.shape) == [VIDEO_FRAMES, VIDEO_HEIGHT, VIDEO_WIDTH, 3]


def test_invalid_prompt_raises_validation_error_with_node_errors(comfy_host, tiny_models) -> None:
    prompt = one_step_prompt(tiny_models.cogvideox["5b"], tiny_models.vae)
    prompt["1"]["inputs"]["unet_name"] = "no_such_model.safetensors"
    with pytest.raises(GraphValidationError) as raised:
        comfy_host.run_graph(prompt)
    assert "1" in raised.value.node_errors
    assert "no_such_model.safetensors" in str(raised.value)


def test_node_exception_raises_execution_error(comfy_host) -> None:
    prompt = {
        "1": {"class_type": "CVXTestTokenizerCLIP", "inputs": {"family": "cogvideox"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 0], "text": "a red fox"}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
    }
    with pytest.raises(GraphExecutionError) as raised:
        comfy_host.run_graph(prompt)
    assert raised.value.node_id == "2"
    assert raised.value.node_type == "CLIPTextEncode"


# ---------------------------------------------------------------------------------------------
# The server process
# ---------------------------------------------------------------------------------------------


def test_server_lists_nodes_and_runs_the_same_graph(comfy_server, comfy_host, tiny_models) -> None:
    object_info = comfy_server.object_info()
    missing = [node_id for node_id in CORE_NODES + FIXTURE_NODES if node_id not in object_info]
    assert not missing, f"server does not list {missing}\n{comfy_server.log_tail()}"
    assert tiny_models.cogvideox["5b"] in object_info["UNETLoader"]["input"]["required"]["unet_name"][0]

    prompt = one_step_prompt(tiny_models.cogvideox["5b"], tiny_models.vae)
    entry = comfy_server.run_graph(prompt, timeout=120)
    served = _summary(entry["outputs"])
    in_process = _summary(comfy_host.run_graph(prompt).ui_outputs)
    assert served["shape"] == EXPECTED_LATENT_SHAPE
    for statistic in ("mean", "std", "abs_max"):  # same file, seeds and CPU: same numbers
        assert math.isclose(served[statistic], in_process[statistic], rel_tol=1e-5, abs_tol=1e-7), statistic

    broken = dict(prompt, **{"5": {**prompt["5"], "inputs": {**prompt["5"]["inputs"], "steps": 0}}})
    with pytest.raises(GraphValidationError) as raised:
        comfy_server.queue(broken)
    assert "5" in raised.value.node_errors


def test_server_loads_the_pack_without_import_failure(comfy_server, comfy_host) -> None:
    failures = comfy_server.import_failures()
    pack_failures = [line for line in failures if "ComfyUI-CustomVideoX" in line]
    if pack_failures and not (REPO_ROOT / "nodes" / "extension.py").exists():
        pytest.skip("pack not ready: nodes/extension.py does not exist yet, so ComfyUI cannot load the pack")
    assert not pack_failures, comfy_server.log_tail(120)
    assert not [line for line in failures if "cvx_test_fixture_pack" in line], comfy_server.log_tail(120)
    if comfy_host.pack_module is not None:  # the server registers what the in-process host registered
        object_info = comfy_server.object_info()
        in_process_ids = {
            node_id
            for node_id in comfy_host.node_ids()
            if getattr(comfy_host.node_class(node_id), "RELATIVE_PYTHON_MODULE", "")
            == f"custom_nodes.{REPO_ROOT.name}"
        }
        assert in_process_ids <= set(object_info)
