"""One cfg sampling step of a random-weight CogVideoX inside a real ComfyUI, every variant side by side:
no reference; reference with TAB 0; reference + TAB 2; + ERAE; + ERAE with the unconditional pass also
seeing the reference. Time and peak memory, as ratios against no reference and against reference/TAB 0:
the variants run interleaved, one step each per round; a time ratio is the median of the per-round
ratios, "min" the ratio of the fastest rounds (``benchmarks/_timing.py``).

Issue #11's CPU targets at ``--preset cpu-issue`` (8 heads of 64, 4 layers, 256×256×17): reference with
TAB 0 ≤ 1.18× no reference (the unconditional rows run at their base cost); TAB + ERAE ≤ 1.05× TAB 0.

Runs with ComfyUI's Python and ``COMFYUI_PATH`` pointing at a ComfyUI checkout, e.g.::

    COMFYUI_PATH=~/.cache/customvideox/ComfyUI ~/.cache/customvideox/venv/bin/python \
        benchmarks/sampling_step.py --preset cpu-issue --markdown

One step is what KSampler does per step with cfg > 1: one batched model call over the conditional and
unconditional rows (``comfy.sample.sample`` with ``steps=1``). The model is built with ComfyUI's own
``CogVideoXTransformer3DModel`` and random weights; nothing is downloaded. ``--preset cogvideox-5b``
(CUDA only) is CogVideoX-5B's real shape: 42 layers, 48 heads of 64, 480×720×49 frames (13 latent
frames, 17,550 video tokens), 226 text tokens, one reference frame (1,350 tokens), bf16.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(Path(__file__).resolve().parent))
from _timing import compare  # noqa: E402


@dataclass(frozen=True)
class Preset:
    layers: int
    heads: int
    width: int
    height: int
    frames: int
    text_tokens: int
    text_dim: int
    dtype: torch.dtype
    repeats: int


PRESETS = {
    "cpu-tiny": Preset(2, 2, 96, 64, 9, 32, 64, torch.float32, 5),
    # Issue #11's size: 256x256x17 = 5 latent frames x 16 x 16 = 1,280 video tokens + 256 reference tokens.
    "cpu-issue": Preset(4, 8, 256, 256, 17, 226, 256, torch.float32, 3),
    "cpu-medium": Preset(4, 8, 352, 240, 13, 226, 256, torch.float32, 3),
    "cogvideox-5b": Preset(42, 48, 720, 480, 49, 226, 4096, torch.bfloat16, 3),
}


ALL_VARIANTS = (
    "no reference",
    "reference, TAB 0",
    "reference + TAB 2",
    "reference + TAB 2 + ERAE",
    "reference + TAB 2 + ERAE, uncond sees",
)
QUICK_VARIANTS = ("no reference", "reference, TAB 0", "reference + TAB 2 + ERAE")


def import_comfy(comfyui_path: Path, device: str, pytorch_attention: bool = True):
    """Import ComfyUI (CPU mode on the CPU) and load the pack. ``pytorch_attention``: run ComfyUI's SDPA
    backend as on a GPU (``--use-pytorch-cross-attention``); on the CPU ComfyUI otherwise picks sub-quad."""
    sys.path.insert(0, str(comfyui_path))
    from comfy.cli_args import args

    args.cpu = device == "cpu"
    args.use_pytorch_cross_attention = pytorch_attention
    import nodes

    if not asyncio.run(nodes.load_custom_node(str(REPO_ROOT))):
        raise RuntimeError(f"ComfyUI could not load the pack at {REPO_ROOT}")
    return sys.modules[str(REPO_ROOT).replace(".", "_x_")]


def build_model(preset: Preset):
    """A random-weight CogVideoX (RoPE, like 5B) as a ComfyUI ModelPatcher."""
    import comfy.ops
    import comfy.sd
    from comfy.ldm.cogvideo.model import CogVideoXTransformer3DModel

    with torch.device("meta"):
        shapes = CogVideoXTransformer3DModel(
            num_attention_heads=preset.heads,
            attention_head_dim=64,
            num_layers=preset.layers,
            text_embed_dim=preset.text_dim,
            use_rotary_positional_embeddings=True,
            operations=comfy.ops.disable_weight_init,
        ).state_dict()
    generator = torch.Generator().manual_seed(0)
    state_dict = {
        name: (torch.randn(tensor.shape, generator=generator) * (0.02 if tensor.ndim >= 2 else 0.01)).to(
            preset.dtype
        )
        for name, tensor in shapes.items()
    }
    return comfy.sd.load_diffusion_model_state_dict(state_dict, model_options={"dtype": preset.dtype})


def variants(pack, model, preset: Preset, selected: tuple[str, ...] = ALL_VARIANTS) -> dict:
    patch = importlib.import_module(f"{pack.__name__}.nodes.patch")
    types = importlib.import_module(f"{pack.__name__}.nodes.types")
    tab = importlib.import_module(f"{pack.__name__}.customvideox_core.tab")
    erae = importlib.import_module(f"{pack.__name__}.customvideox_core.erae")
    latent_h, latent_w = preset.height // 8, preset.width // 8
    reference = types.ReferenceLatents(
        latents=torch.randn(1, 16, 1, latent_h, latent_w),
        masks=torch.ones(1, preset.height, preset.width),
        source_size=(preset.height, preset.width),
        fit="pad",
    )

    def patched(peak: float, erae_config, uncond_sees_reference: bool = False):
        return patch.apply_reference_patch(
            model,
            reference,
            tab=tab.TABSchedule(shape="parabolic", peak=peak, floor=peak / 4),
            erae=erae_config,
            uncond_sees_reference=uncond_sees_reference,
        )

    entity = erae.ERAEConfig(entity_positions=(3, 7), gamma=1.0)
    found = {
        "no reference": model,
        "reference, TAB 0": patched(0.0, None),
        "reference + TAB 2": patched(2.0, None),
        "reference + TAB 2 + ERAE": patched(2.0, entity),
        "reference + TAB 2 + ERAE, uncond sees": patched(2.0, entity, uncond_sees_reference=True),
    }
    return {name: found[name] for name in found if name in selected}


def step_function(model, preset: Preset, device: torch.device):
    import comfy.sample

    frames = (preset.frames - 1) // 4 + 1
    latent = torch.zeros(1, 16, frames, preset.height // 8, preset.width // 8)
    noise = comfy.sample.prepare_noise(latent, 0)
    generator = torch.Generator().manual_seed(1)
    positive = [
        [torch.randn(1, preset.text_tokens, preset.text_dim, generator=generator).to(preset.dtype), {}]
    ]
    negative = [
        [torch.randn(1, preset.text_tokens, preset.text_dim, generator=generator).to(preset.dtype), {}]
    ]

    def step():
        with torch.inference_mode():
            return comfy.sample.sample(
                model, noise, 1, 6.0, "euler", "simple", positive, negative, latent, disable_pbar=True, seed=0
            )

    return step


def attention_backend() -> str:
    import comfy.ldm.modules.attention as attention

    return attention.optimized_attention.__name__


def format_table(results: dict, markdown: bool) -> str:
    base = results["no reference"]
    unbiased = results["reference, TAB 0"]
    header = ["variant", "step s", "× no ref", "× ref TAB 0", "× ref TAB 0, min", "peak MiB", "× no ref"]
    rows = []
    for name, m in results.items():
        peak = m.peak_bytes / 2**20 if m.peak_bytes is not None else None
        base_peak = base.peak_bytes / 2**20 if base.peak_bytes is not None else None
        rows.append(
            [
                name,
                f"{m.median_seconds:.3f}",
                f"{m.ratio_to(base):.2f}",
                f"{m.ratio_to(unbiased):.2f}",
                f"{m.min_ratio_to(unbiased):.2f}",
                f"{peak:.0f}" if peak is not None else "n/a",
                f"{peak / base_peak:.2f}" if peak is not None and base_peak else "n/a",
            ]
        )
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in [header, *rows]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu-issue")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--quick", action="store_true", help="only: no reference, TAB 0, TAB 2 + ERAE")
    parser.add_argument(
        "--comfy-attention",
        choices=("pytorch", "default"),
        default="pytorch",
        help="ComfyUI's attention backend: pytorch (SDPA, as on a GPU) or ComfyUI's default for the device",
    )
    options = parser.parse_args(argv)
    comfyui_path = Path(os.environ.get("COMFYUI_PATH", "")).expanduser()
    if not (comfyui_path / "comfyui_version.py").is_file():
        parser.error("set COMFYUI_PATH to a ComfyUI checkout and run with the Python that runs it")
    preset = PRESETS[options.preset]
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    if options.preset == "cogvideox-5b" and options.device != "cuda":
        parser.error("the cogvideox-5b preset needs a CUDA device")
    logging.basicConfig(level=logging.WARNING)
    pack = import_comfy(comfyui_path, options.device, pytorch_attention=options.comfy_attention == "pytorch")
    device = torch.device(options.device)
    model = build_model(preset)
    steps = {
        name: step_function(m, preset, device)
        for name, m in variants(
            pack, model, preset, QUICK_VARIANTS if options.quick else ALL_VARIANTS
        ).items()
    }
    results = compare(steps, device, warmup=1, repeats=options.repeats or preset.repeats)
    video_tokens = ((preset.frames - 1) // 4 + 1) * (preset.height // 16) * (preset.width // 16)
    print(
        f"CogVideoX random weights: {preset.layers} layers, {preset.heads} heads × 64, "
        f"{preset.width}×{preset.height}×{preset.frames} frames ({video_tokens} video tokens), "
        f"{preset.text_tokens} text tokens, 1 reference frame ({(preset.height // 16) * (preset.width // 16)} "
        f"tokens), cfg batch of 2, {preset.dtype}, device {device}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, ComfyUI attention {attention_backend()}"
    )
    print(format_table(results, options.markdown))


if __name__ == "__main__":
    main()
