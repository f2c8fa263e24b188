"""Reference-aware guidance inside a real ComfyUI: model calls, passes and time per sampling of Phantom's
full three-pass guidance, the same with the image pass only in the first 40 % of the model's time, a
distill-style per-step recipe and plain cfg, side by side in one run.

Runs with ComfyUI's Python and ``COMFYUI_PATH`` pointing at a ComfyUI checkout, e.g.::

    COMFYUI_PATH=~/.cache/customvideox/ComfyUI-0.33.0 ~/.cache/customvideox/venv/bin/python \\
        benchmarks/guidance.py --preset cpu-small --markdown

A random-weight Wan 2.1 T2V (ComfyUI's own ``WanModel``, ``benchmarks/_host_models.py``) with Phantom's
conditionings as core's ``WanPhantomSubjectToVideo`` makes them (one subject latent as ``time_dim_concat``
on the positive and the negative with the reference, zeros on the negative without it), sampled with euler
and the ``simple`` scheduler through ``SamplerCustomAdvanced``'s path (``guider.sample``). "model calls"
are the DiT's calls per sampling (ComfyUI batches the passes of a step into one call when they fit),
"passes" the batch rows they run, both counted by a ``DIFFUSION_MODEL`` wrapper in a separate counting
run. Times are medians of interleaved rounds (``benchmarks/_timing.py``); "× three-pass" is the median of
the per-round ratios. ``--preset cpu-tiny --repeats 1`` checks the script end to end (CI's smoke run).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parent))
from _host_models import (
    WAN_TEXT_DIM,
    CallCounter,
    WanVideo,
    counted_clone,
    pack_module,
    preset_parser,
    start_comfy,
)
from _table import format_table
from _timing import compare


@dataclass(frozen=True)
class Preset(WanVideo):
    steps: int
    repeats: int


PRESETS = {
    "cpu-tiny": Preset(1, 128, 256, 64, 64, 5, 16, 10, 1),
    "cpu-small": Preset(2, 256, 768, 352, 240, 13, 64, 10, 3),
}
FULL = "three-pass (Phantom)"
VARIANTS = {
    FULL: {},
    "three-pass, image pass in the first 40 %": {"image_end": 0.4},
    "distill recipe: cfg 3 then 1, image pass in the first 40 %": {
        "cfg_steps": "3, 3, 3, 3, 1, 1, 1, 1, 1, 1",
        "image_end": 0.4,
    },
    "plain cfg (no image pass)": {"image_cfg": 1.0},
}
"""Guider settings over Phantom's (cfg 7.5, image_cfg 5.0, image window 0–1)."""
HEADER = ("guidance", "model calls", "passes", "s / sampling", "× three-pass")


def phantom_conditionings(preset: Preset) -> tuple[list, list, list]:
    """(positive, negative with the reference, negative without it), as ``WanPhantomSubjectToVideo``
    makes them: the subject latent as ``time_dim_concat`` (zeros for the pass without the reference)."""
    generator = torch.Generator().manual_seed(1)
    shape = preset.latent_shape
    subject = torch.randn(1, shape[1], 1, *shape[3:], generator=generator)
    positive, negative = (
        torch.randn(1, preset.text_tokens, WAN_TEXT_DIM, generator=generator) for _ in range(2)
    )
    return (
        [[positive, {"time_dim_concat": subject}]],
        [[negative, {"time_dim_concat": subject}]],
        [[negative, {"time_dim_concat": torch.zeros_like(subject)}]],
    )


def guiders(pack, model, conditionings, names: Iterable[str] = tuple(VARIANTS)) -> dict:
    """The Reference Guider with the settings of each variant in ``names`` (every one by default) over
    ``conditionings``."""
    node = pack_module(pack, "nodes.reference_guider").CustomVideoXReferenceGuider
    positive, negative, blind = conditionings
    found = {}
    for name in names:
        arguments = {"cfg": 7.5, "image_cfg": 5.0, "image_start": 0.0, "image_end": 1.0, **VARIANTS[name]}
        found[name] = node.execute(
            model, positive, negative, negative_without_reference=blind, **arguments
        ).args[0]
    return found


def sampling(guider, model, preset: Preset):
    """One whole sampling of ``preset.steps`` euler steps (what SamplerCustomAdvanced runs)."""
    import comfy.sample
    import comfy.samplers

    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", preset.steps)
    latent = torch.zeros(preset.latent_shape)
    noise = comfy.sample.prepare_noise(latent, 0)
    sampler = comfy.samplers.sampler_object("euler")

    def run():
        with torch.inference_mode():
            return guider.sample(noise, latent, sampler, sigmas, disable_pbar=True, seed=0)

    return run


def counts(pack, model, conditionings, preset: Preset) -> dict[str, CallCounter]:
    """Calls and passes of one sampling of each variant, on a clone that carries the counter."""
    found = {}
    for name in VARIANTS:
        counting, found[name] = counted_clone(model)
        sampling(guiders(pack, counting, conditionings, (name,))[name], counting, preset)()
    return found


def main(argv: list[str] | None = None) -> None:
    parser = preset_parser(__doc__, PRESETS, "cpu-small", device=False)
    options = parser.parse_args(argv)
    preset = PRESETS[options.preset]
    pack = start_comfy(parser, options, "cpu")
    model = preset.build(torch.float32)
    conditionings = phantom_conditionings(preset)
    counted = counts(pack, model, conditionings, preset)
    runs = {
        name: sampling(guider, model, preset) for name, guider in guiders(pack, model, conditionings).items()
    }
    results = compare(runs, torch.device("cpu"), warmup=1, repeats=options.repeats or preset.repeats)
    print(
        f"Wan random weights: {preset.layers} layers, dim {preset.dim}, {preset.width}×{preset.height}×"
        f"{preset.frames} frames + 1 subject frame, {preset.text_tokens} text tokens, {preset.steps} euler steps "
        f"(simple), cfg 7.5, image_cfg 5.0, CPU, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    base = results[FULL]
    rows = [
        [
            name,
            str(counted[name].calls),
            str(counted[name].passes),
            f"{measurement.median_seconds:.3f}",
            f"{measurement.ratio_to(base):.2f}",
        ]
        for name, measurement in results.items()
    ]
    print(format_table(HEADER, rows, markdown=options.markdown))


if __name__ == "__main__":
    main()
