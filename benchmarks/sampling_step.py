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
``CogVideoXTransformer3DModel`` and random weights (``benchmarks/_host_models.py``); nothing is
downloaded. ``--preset cpu-tiny --repeats 1`` checks the script end to end in seconds (CI's smoke run). ``--preset cogvideox-5b``
(CUDA only) is CogVideoX-5B's real shape: 42 layers, 48 heads of 64, 480×720×49 frames (13 latent
frames, 17,550 video tokens), 226 text tokens, one reference frame (1,350 tokens), bf16.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parent))
from _host_models import (
    attention_backend,
    build_model,
    cogvideox_arguments,
    latent_shape,
    preset_parser,
    reference_variants,
    run_environment,
    sampling_step,
    start_comfy,
)
from _table import format_table, memory, ratio
from _timing import compare


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
HEADER = ("variant", "step s", "× no ref", "× ref TAB 0", "× ref TAB 0, min", "peak MiB", "× no ref")


def build_cogvideox(preset: Preset):
    """A random-weight CogVideoX (RoPE, like 5B) of ``preset``'s size as a ComfyUI ModelPatcher."""
    arguments = cogvideox_arguments(
        heads=preset.heads, head_dim=64, layers=preset.layers, text_dim=preset.text_dim
    )
    return build_model("cogvideox", arguments, preset.dtype)


def table_rows(results: dict) -> list[list[str]]:
    base = results["no reference"]
    unbiased = results["reference, TAB 0"]
    return [
        [
            name,
            f"{m.median_seconds:.3f}",
            f"{m.ratio_to(base):.2f}",
            f"{m.ratio_to(unbiased):.2f}",
            f"{m.min_ratio_to(unbiased):.2f}",
            memory(m.peak_bytes, 2**20, 0),
            ratio(m.peak_bytes, base.peak_bytes),
        ]
        for name, m in results.items()
    ]


def main(argv: list[str] | None = None) -> None:
    parser = preset_parser(__doc__, PRESETS, "cpu-issue")
    parser.add_argument("--quick", action="store_true", help="only: no reference, TAB 0, TAB 2 + ERAE")
    parser.add_argument(
        "--comfy-attention",
        choices=("pytorch", "default"),
        default="pytorch",
        help="ComfyUI's attention backend: pytorch (SDPA, as on a GPU) or ComfyUI's default for the device",
    )
    options = parser.parse_args(argv)
    preset = PRESETS[options.preset]
    if options.preset == "cogvideox-5b" and options.device != "cuda":
        parser.error("the cogvideox-5b preset needs a CUDA device")
    pack = start_comfy(
        parser, options, options.device, pytorch_attention=options.comfy_attention == "pytorch"
    )
    device = torch.device(options.device)
    model = build_cogvideox(preset)
    selected = QUICK_VARIANTS if options.quick else ALL_VARIANTS
    shape = latent_shape(preset.height, preset.width, preset.frames)
    steps = {
        name: sampling_step(patched, shape, preset.text_tokens, preset.text_dim, preset.dtype)
        for name, patched in reference_variants(pack, model, preset.height, preset.width, selected).items()
    }
    results = compare(steps, device, warmup=1, repeats=options.repeats or preset.repeats)
    video_tokens = ((preset.frames - 1) // 4 + 1) * (preset.height // 16) * (preset.width // 16)
    print(
        f"CogVideoX random weights: {preset.layers} layers, {preset.heads} heads × 64, "
        f"{preset.width}×{preset.height}×{preset.frames} frames ({video_tokens} video tokens), "
        f"{preset.text_tokens} text tokens, 1 reference frame ({(preset.height // 16) * (preset.width // 16)} "
        f"tokens), cfg batch of 2, {run_environment(preset.dtype, device)}, ComfyUI attention {attention_backend()}"
    )
    print(format_table(HEADER, table_rows(results), markdown=options.markdown))


if __name__ == "__main__":
    main()
