"""Concat-ID's SAT CogVideoX-5B checkpoint in a real ComfyUI: converted, detected, and run by the pack.

The SAT checkpoint is built from the tiny ComfyUI-layout CogVideoX-5B (``write_tiny_cogvideox``) by the
inverse of diffusers' conversion (``tests/unit/cogvideox_diffusers_oracle.py``), saved the way SAT saves
it (``latest`` + ``<iteration>/mp_rank_00_model_states.pt`` holding ``{"module": …}``), and converted by
the shipped script. Oracles: the tiny model's own weights (key for key, value for value); the tiny
model's own sampling; and Concat-ID's forward — the plain DiT on ``[video | reference]`` frames, the
reference's prediction cut off — which the pack's reference path must equal at TAB 0.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from nodes_support import LATENT_SHAPE, VIDEO_HEIGHT, VIDEO_WIDTH, load_model, load_vae, sample
from nodes_support import conditioning as random_conditioning
from safetensors.torch import load_file

REPO_ROOT = Path(__file__).resolve().parents[2]
SAT_FOLDER = Path("cvx_concat_id") / "single-identity"
SAT_ITERATION = "1000"
SAT_FILE = SAT_FOLDER / SAT_ITERATION / "mp_rank_00_model_states.pt"
CONVERTED = "cvx_concat_id_converted.safetensors"


def _oracle():
    spec = importlib.util.spec_from_file_location(
        "cogvideox_diffusers_oracle", REPO_ROOT / "tests" / "unit" / "cogvideox_diffusers_oracle.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_state(tiny_models) -> dict[str, torch.Tensor]:
    return load_file(str(tiny_models.diffusion_models_dir / tiny_models.cogvideox["5b"]))


@pytest.fixture(scope="module")
def sat_checkpoint(tiny_models, tiny_state) -> Path:
    """The tiny CogVideoX-5B as Concat-ID publishes its model: a SAT folder with the engine state."""
    oracle = _oracle()
    sat = oracle.comfy_to_sat(tiny_state)
    round_trip = oracle.diffusers_to_comfy(oracle.sat_to_diffusers(sat))
    assert sorted(round_trip) == sorted(tiny_state)
    assert all(torch.equal(round_trip[key], tiny_state[key]) for key in tiny_state)
    sat["first_stage_model.decoder.conv_out.weight"] = torch.zeros(3, 3)  # VAE part of the engine state
    root = tiny_models.diffusion_models_dir / SAT_FOLDER
    (root / SAT_ITERATION).mkdir(parents=True, exist_ok=True)
    (root / "latest").write_text(SAT_ITERATION)
    torch.save({"module": sat, "iteration": int(SAT_ITERATION)}, root / SAT_ITERATION / SAT_FILE.name)
    return root


@pytest.fixture(scope="module")
def converted_path(tiny_models, sat_checkpoint) -> Path:
    """The shipped script, run as a user runs it."""
    output = tiny_models.diffusion_models_dir / CONVERTED
    command = [sys.executable, str(REPO_ROOT / "scripts" / "convert_concat_id.py")]
    command += ["--input", str(sat_checkpoint), "--output", str(output), "--overwrite"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert finished.returncode == 0, finished.stderr
    return output


@pytest.fixture(scope="module")
def models(tiny_models, converted_path) -> dict:
    directory = tiny_models.diffusion_models_dir
    return {
        "tiny": load_model(directory, tiny_models.cogvideox["5b"]),
        "converted": load_model(directory, CONVERTED),
    }


def test_converted_file_is_the_tiny_model_key_for_key(tiny_state, converted_path):
    converted = load_file(str(converted_path))
    assert sorted(converted) == sorted(tiny_state)
    for key, tensor in tiny_state.items():
        assert converted[key].dtype == tensor.dtype, key
        assert torch.equal(converted[key], tensor), key


def test_converted_model_is_detected_as_rotary_cogvideox_and_samples_like_the_original(models):
    model = models["converted"]
    assert type(model.model.model_config).__name__ == "CogVideoX_T2V"
    dit = model.model.diffusion_model
    assert dit.use_rotary_positional_embeddings
    assert (len(dit.blocks), dit.num_attention_heads, dit.patch_size_t) == (2, 2, None)
    out = sample(model)
    assert tuple(out.shape) == LATENT_SHAPE and torch.isfinite(out).all()
    assert torch.equal(out, sample(models["tiny"]))


def test_loader_node_reads_the_sat_folder_as_the_same_model(comfy_host, sat_checkpoint, models):
    node = comfy_host.node_class("CustomVideoXLoadConcatID")
    output = node.execute(SAT_FILE.as_posix(), "default")
    model = output.args[0]
    assert type(model.model.model_config).__name__ == "CogVideoX_T2V"
    assert model.cached_patcher_init is not None
    rebuilt = model.cached_patcher_init[0](*model.cached_patcher_init[1], disable_dynamic=True)
    assert type(rebuilt.model.model_config).__name__ == "CogVideoX_T2V"
    assert torch.equal(sample(model), sample(models["tiny"]))


def test_loader_node_refuses_a_pickle_with_objects(comfy_host, tiny_models):
    path = tiny_models.diffusion_models_dir / "cvx_concat_id_objects.pt"
    torch.save({"module": {"a": torch.zeros(1)}, "hook": subprocess.CompletedProcess(["x"], 0)}, path)
    node = comfy_host.node_class("CustomVideoXLoadConcatID")
    with pytest.raises(ValueError, match="not a plain-tensor checkpoint"):
        node.execute(path.name, "default")


def _reference(comfy_host, tiny_models):
    vae = load_vae(tiny_models.vae_dir, tiny_models.vae)
    node = comfy_host.node_class("CustomVideoXReferenceEncode")
    images = torch.rand(1, VIDEO_HEIGHT, VIDEO_WIDTH, 3, generator=torch.Generator().manual_seed(7))
    return node.execute(vae, images, VIDEO_WIDTH, VIDEO_HEIGHT, "pad", False, None).args[0]


def test_reference_path_at_tab_zero_is_concat_ids_forward(comfy_host, pack, tiny_models, models):
    """Concat-ID: reference frames appended after the video, same timestep, RoPE time continuing, both
    CFG passes see the reference, its prediction discarded. The pack with TAB 0 must be exactly that."""
    model = models["converted"]
    reference = _reference(comfy_host, tiny_models)
    dit = model.model.diffusion_model
    generator = torch.Generator().manual_seed(11)
    x = torch.randn(LATENT_SHAPE, generator=generator)
    timestep = torch.tensor([600.0])
    context = random_conditioning(5)[0][0]
    reference_latents = model.model.process_latent_in(reference.latents.clone())
    with torch.no_grad():
        concat_id = dit(torch.cat([x, reference_latents], dim=2), timestep, context)[:, :, : x.shape[2]]
        outputs = {}
        for peak in (0.0, 4.0):
            schedule = pack.tab.TABSchedule(shape="constant", peak=peak)
            patched = pack.patch.apply_reference_patch(
                model, reference, tab=schedule, erae=None, uncond_sees_reference=True
            )
            options = dict(patched.model_options["transformer_options"])
            options["wrappers"] = patched.wrappers
            outputs[peak] = dit(x, timestep, context, transformer_options=options)
    scale = float(concat_id.abs().max())
    assert outputs[0.0].shape == x.shape
    assert torch.allclose(outputs[0.0], concat_id, atol=1e-5 * scale, rtol=0), (
        f"max diff {(outputs[0.0] - concat_id).abs().max():.3g} at scale {scale:.3g}"
    )
    assert (outputs[4.0] - concat_id).abs().max() > 1e-3 * scale  # the bias is really applied
