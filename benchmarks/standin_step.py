"""Sampling steps of a random-weight Wan with Stand-In inside a real ComfyUI: no reference, Stand-In with
the reference K/V cached (computed once per sampling), and Stand-In recomputing them at every model call
— and the pack's own adapters in their two reference layouts (joint, cached) with one reference frame
at the video's size — time per step and peak memory side by side, as ratios.

Runs with ComfyUI's Python and ``COMFYUI_PATH`` pointing at a ComfyUI checkout, e.g.::

    COMFYUI_PATH=~/.cache/customvideox/ComfyUI ~/.cache/customvideox/venv/bin/python \
        benchmarks/standin_step.py --preset cpu-medium --markdown

One step is one model call with cfg > 1: the DiT on a batch of two rows (conditional and unconditional),
called through the patched MODEL's wrappers exactly as KSampler's ``calc_cond_batch`` calls it (sampler
overhead left out, so the ratios are the DiT's). "cached" calls it with the reference K/V already in the
cache (every step after the first of a sampling); "recomputed" empties the cache before every call (the
reference branch runs at every step); "reference branch alone" is the one-off cost the cache saves. The
model is built with ComfyUI's own ``WanModel`` and random weights (``load_diffusion_model_state_dict``);
nothing is downloaded. ``cpu-medium`` is the size of ``sampling_step.py``'s ``cpu-medium`` (4 layers,
352×240×13 frames) as a Wan (4 heads of 128), ``cpu-small`` the same video with 2 layers of width 256;
their reference is 128×128 pixels (64 tokens, 4.8 % of the 1,320 video tokens — about the proportion of
Stand-In's 512×512 face, 1,024 tokens, to an 832×480×81 video, 32,760 tokens: 3.1 %).
``--reference-size 512`` measures the published face size against the small video too. ``wan-14b`` (CUDA)
is Wan 2.1 14B's shape at 832×480×81 with the 512×512 face, bf16. ``--preset cpu-tiny --repeats 1``
checks the script end to end in seconds (CI's smoke run).

Every row, the reference branch alone included, runs in the same interleaved rounds (one call each per
round, ``benchmarks/_timing.py``); "× no ref" (time) is the median of the per-round ratios
(``Measurement.ratio_to``) for every row. (The reference branch used to be timed on its own after the
others, its ratio a ratio of medians.) The model is built by ``benchmarks/_host_models.py``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parent))
from _host_models import (
    WAN_TEXT_DIM,
    WanVideo,
    pack_module,
    preset_parser,
    reference_latents,
    run_environment,
    start_comfy,
)
from _table import format_table, memory, ratio
from _timing import compare


@dataclass(frozen=True)
class Preset(WanVideo):
    reference_size: int
    rank: int
    dtype: torch.dtype
    repeats: int


PRESETS = {
    "cpu-tiny": Preset(2, 256, 768, 96, 64, 9, 32, 32, 16, torch.float32, 3),
    "cpu-small": Preset(2, 256, 768, 352, 240, 13, 64, 128, 32, torch.float32, 5),
    "cpu-medium": Preset(4, 512, 1536, 352, 240, 13, 226, 128, 32, torch.float32, 3),
    "wan-14b": Preset(40, 5120, 13824, 832, 480, 81, 512, 512, 128, torch.bfloat16, 2),
}
REFERENCE_BRANCH = "reference branch alone (once per sampling)"
HEADER = ("variant", "s / step", "× no ref", "peak MiB", "× no ref")


def standin_lora_state(preset: Preset) -> dict:
    """Random Stand-In-form LoRA tensors for every block (what a cached-layout adapter file holds)."""
    generator = torch.Generator().manual_seed(2)
    state = {}
    for block in range(preset.layers):
        for projection in "qkv":
            prefix = f"blocks.{block}.self_attn.{projection}_loras"
            state[f"{prefix}.down.weight"] = torch.randn(preset.rank, preset.dim, generator=generator) * 0.01
            state[f"{prefix}.up.weight"] = torch.randn(preset.dim, preset.rank, generator=generator) * 0.01
    return state


def standin_lora(pack, preset: Preset):
    lora_file = pack_module(pack, "customvideox_core.standin.lora_file")
    return lora_file.parse_standin_state_dict(standin_lora_state(preset), source="benchmark")


def reference(pack, height: int, width: int):
    """A random one-image reference of ``height × width`` pixels (seed 3)."""
    return reference_latents(pack, height, width, generator=torch.Generator().manual_seed(3))


def variants(pack, model, preset: Preset) -> tuple[dict, object]:
    """Stand-In (cached / recomputed), and the pack's own adapters in their two reference layouts with
    the same reference, one frame at the video's size (what the joint layout needs): the joint layout's
    reference tokens pass through every layer at every step, the cached layout's only add keys."""
    nodes_module = pack_module(pack, "nodes.standin_nodes")
    settings = pack_module(pack, "nodes.patch_model")
    cached_layout = pack_module(pack, "nodes.cached_layout")
    load_node = pack_module(pack, "nodes.load_node")
    host_model = pack_module(pack, "nodes.host_model")
    tab = pack_module(pack, "customvideox_core.tab").TABSchedule(shape="constant", peak=0.0)
    size = preset.reference_size
    face = reference(pack, size, size)
    lora = standin_lora(pack, preset)

    def patched():
        return nodes_module.apply_standin(
            model, lora, face, strength=1.0, tab=None, erae=None, uncond_sees_reference=True
        )

    cached = patched()
    uncached = patched()
    frame = reference(pack, preset.height, preset.width)
    joint = load_node.LoadCustomVideoX.execute(model, load_node.NO_ADAPTER, 1.0).args[0]
    own_cached, _ = cached_layout.attach_cached_adapter(
        model, host_model.host_signature(model), standin_lora_state(preset), 1.0, "benchmark"
    )
    return {
        "no reference": model,
        "Stand-In, cached K/V": cached,
        "Stand-In, recomputed": uncached,
        "own adapter, joint layout (video-size reference)": settings.patch_model(
            joint, frame, tab, None, True
        ),
        "own adapter, cached layout (same reference)": settings.patch_model(
            own_cached, frame, tab, None, True
        ),
    }, cached


def latent_of(preset: Preset) -> torch.Tensor:
    return torch.zeros(preset.latent_shape)


def step_function(model_patcher, preset: Preset, device: torch.device, *, recompute: bool = False):
    """One DiT call on a cfg batch of 2, through the patcher's wrappers and transformer options."""
    import comfy.model_management
    import comfy.patcher_extension

    comfy.model_management.load_models_gpu([model_patcher])
    dit = model_patcher.model.diffusion_model
    generator = torch.Generator().manual_seed(1)
    latent = latent_of(preset)
    x = torch.randn((2, *latent.shape[1:]), generator=generator).to(device, preset.dtype)
    timestep = torch.full((2,), 500.0, device=device, dtype=preset.dtype)
    context = torch.randn(2, preset.text_tokens, WAN_TEXT_DIM, generator=generator).to(device, preset.dtype)
    options = dict(model_patcher.model_options.get("transformer_options", {}))
    options["wrappers"] = comfy.patcher_extension.copy_nested_dicts(model_patcher.wrappers)
    options["cond_or_uncond"] = [0, 1]
    patch = options.get("cvx_standin")

    def step():
        if recompute:
            patch.cache.clear()
        with torch.inference_mode():
            return dit(x, timestep, context, transformer_options=dict(options))

    return step


def reference_branch(pack, cached_model, preset: Preset, device: torch.device):
    """The reference branch alone (what the cache saves per model call), as one callable."""
    branch = pack_module(pack, "customvideox_core.standin.branch")
    patch = cached_model.model_options["transformer_options"]["cvx_standin"]
    dit = cached_model.model.diffusion_model
    latent = latent_of(preset)
    grid = (latent.shape[2], latent.shape[3] // 2, latent.shape[4] // 2)

    def fill():
        with torch.inference_mode():
            return branch.compute_reference_kv(
                dit,
                patch.reference_latent,
                patch.lora,
                strength=1.0,
                video_grid=grid,
                dtype=preset.dtype,
                device=device,
            )

    return fill


def table_rows(results: dict) -> list[list[str]]:
    base = results["no reference"]
    rows = []
    for name, m in results.items():
        peak = (
            ["", ""]
            if name == REFERENCE_BRANCH
            else [memory(m.peak_bytes, 2**20, 0), ratio(m.peak_bytes, base.peak_bytes)]
        )
        rows.append([name, f"{m.median_seconds:.3f}", f"{m.ratio_to(base):.3f}", *peak])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = preset_parser(__doc__, PRESETS, "cpu-medium")
    parser.add_argument("--reference-size", type=int, default=None, help="reference pixels (square)")
    options = parser.parse_args(argv)
    preset = PRESETS[options.preset]
    if options.reference_size:
        preset = Preset(**{**preset.__dict__, "reference_size": options.reference_size})
    if options.preset == "wan-14b" and options.device != "cuda":
        parser.error("the wan-14b preset needs a CUDA device")
    pack = start_comfy(parser, options, options.device)
    device = torch.device(options.device)
    model = preset.build(preset.dtype)
    models, cached = variants(pack, model, preset)
    runs = {
        name: step_function(m, preset, device, recompute=name == "Stand-In, recomputed")
        for name, m in models.items()
    }
    runs[REFERENCE_BRANCH] = reference_branch(pack, cached, preset, device)
    results = compare(runs, device, warmup=1, repeats=options.repeats or preset.repeats)
    latent = latent_of(preset)
    video_tokens = latent.shape[2] * (latent.shape[3] // 2) * (latent.shape[4] // 2)
    reference_tokens = (preset.reference_size // 16) ** 2
    print(
        f"Wan random weights: {preset.layers} layers, dim {preset.dim} ({preset.dim // 128} heads × 128), "
        f"{preset.width}×{preset.height}×{preset.frames} frames ({video_tokens} video tokens), "
        f"{preset.text_tokens} text tokens, reference {preset.reference_size}² ({reference_tokens} tokens, "
        f"{100 * reference_tokens / video_tokens:.1f} % of the video), LoRA rank {preset.rank}, "
        f"one step = one DiT call on a cfg batch of 2, {run_environment(preset.dtype, device)}"
    )
    print(format_table(HEADER, table_rows(results), markdown=options.markdown))


if __name__ == "__main__":
    main()
