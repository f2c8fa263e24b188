"""Real-size cost without a GPU: FLOPs and peak memory of one sampling step of the real architectures,
built by ComfyUI's own classes under fake tensors, with the pack applied through its nodes' patch path,
side by side with the floor counted by hand from the token counts (``benchmarks/_floor.py``).

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/real_size.py --markdown          # every model
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/real_size.py --models wan-14b    # one model
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/real_size.py --tiny              # check it runs

Models (bf16 weights, fake tensors: shapes without data, nothing allocated, nothing downloaded):

- ``cogvideox-5b``: CogVideoX-5B, 42 layers, 48 heads × 64, 720×480×49 (17,550 video tokens), 226 text
  tokens, one reference frame (1,350 tokens);
- ``wan-1.3b`` / ``wan-14b``: Wan 2.1 1.3B (30 layers, 12 × 128, FFN 8,960) and 14B (40 layers, 40 × 128,
  FFN 13,824), 832×480×81 (32,760 video tokens), 512 text tokens, one reference frame at the video's size
  (1,560 tokens); Stand-In's face 512×512 (1,024 tokens), its LoRA rank 128;
- ``wan-a14b``: Wan 2.2 A14B, one expert (each expert has Wan 2.1 14B's architecture; a step runs one).

Variants, one sampling step each (euler, cfg 6; ``comfy.sample.sample`` as KSampler runs it):

- no reference; the pack's reference (Apply's patch, ``nodes/patch.apply_reference_patch``) with TAB 0, and
  with TAB 2 + ERAE; the negative pass does not see the reference (the node's default);
- Phantom's three-pass guidance (Wan): core's ``DualCFGGuider`` over the conditionings core's
  ``WanPhantomSubjectToVideo`` makes (one subject frame as ``time_dim_concat`` on the positive and the
  image-only pass, none on the negative), biased through Apply without a reference;
- Stand-In (Wan; ``nodes/standin_nodes.apply_standin``, both passes see the face, the node's default):
  "cached" is a step after the first of a sampling (the reference K/V in the cache: the FLOPs of a 2-step
  sampling minus a 1-step one), "recomputed" a step that runs the reference branch too (a 1-step
  sampling: the branch runs once per sampling, for the cfg batch's one model call);
- the pack's own adapter in its two layouts with the same video-size reference frame, both passes seeing
  it (``standin_step.py``'s rows): joint (Load CustomVideoX, the frames join every layer) and cached (Wan;
  the reference branch at timestep 0, K/V cached, measured as Stand-In's "cached").

For each: FLOPs of the step (total and attention apart: PyTorch's fused attention ops), the conditional
pass alone (a cfg-1 step: ComfyUI then skips the negative) and the negative pass (step − conditional), each
against no reference, with the floor in brackets; and the step's peak of live tensor bytes, weights
included (``_fake_models.PeakMemory``). ComfyUI's attention backend is ``attention_pytorch`` (SDPA): its CPU
kernel (``_scaled_dot_product_flash_attention_for_cpu``) runs under fake tensors and is counted; the pack's
biased rows take their ``lse-merge`` path on the same kernel. ComfyUI's CPU default (sub-quadratic
attention) would count as plain matrix products. ``--tiny`` runs the same rows on tiny models in seconds
(CI's smoke run).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
import time
import unittest.mock
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parent))
from _fake_models import (
    PeakMemory,
    attention_flops,
    fake_mode,
    fake_model,
    flop_counter,
    model_tensors,
    weights_stay_put,
)
from _floor import CogVideoXDims, Flops, WanDims, cache_bytes
from _host_models import (
    comfyui_path,
    import_comfy,
    pack_module,
    reference_latents,
    reference_variants,
    sampling_step,
    text_conditionings,
)
from _table import format_table, memory, ratio
from gpu_step import REAL_SIZES, TINY_SIZES, ModelSize

logger = logging.getLogger("benchmarks.real_size")

CFG = 6.0
GIB = 2**30
TERA = 1e12
RATIO_DIGITS = 3
"""Decimals of the table's ratios."""


@dataclass(frozen=True)
class RealModel:
    """A host model at its video size, the Stand-In face and the adapters' LoRA rank."""

    key: str
    size: ModelSize
    face: int = 512  # Stand-In's reference, pixels (square)
    rank: int = 128

    @property
    def is_wan(self) -> bool:
        return self.size.family == "wan"

    def dims(self) -> CogVideoXDims | WanDims:
        size = self.size
        if self.is_wan:
            return WanDims(layers=size.layers, dim=size.heads * size.head_dim, ffn=size.ffn_dim)
        return CogVideoXDims(layers=size.layers, dim=size.heads * size.head_dim, text_dim=size.text_dim)

    def tokens(self) -> tuple[int, int, int]:
        """``(video, one reference frame at the video's size, the face)`` patch tokens."""
        _, _, frames, height, width = self.size.latent_shape
        per_frame = (height // 2) * (width // 2)
        return frames * per_frame, per_frame, (self.face // 16) ** 2


COGVIDEOX_5B, WAN_1_3B = REAL_SIZES
TINY_COGVIDEOX, TINY_WAN = TINY_SIZES
WAN_14B = dataclasses.replace(WAN_1_3B, name="Wan 2.1 14B", layers=40, heads=40, ffn_dim=13824)
MODELS = {
    model.key: model
    for model in (
        RealModel("cogvideox-5b", COGVIDEOX_5B),
        RealModel("wan-1.3b", WAN_1_3B),
        RealModel("wan-14b", WAN_14B),
        RealModel("wan-a14b", dataclasses.replace(WAN_14B, name="Wan 2.2 A14B (one expert)")),
    )
}
TINY_MODELS = {
    model.key: model
    for model in (
        RealModel("tiny-cogvideox", TINY_COGVIDEOX, face=32, rank=4),
        RealModel("tiny-wan", TINY_WAN, face=32, rank=4),
    )
}


@dataclass(frozen=True)
class Variant:
    """One row: how to patch the model, how a step runs, its floor per pass (and per step, once)."""

    label: str
    wan_only: bool
    cached: bool = False  # a step after the first of a sampling (2-step sampling minus 1-step)
    three_pass: bool = False  # Phantom's DualCFGGuider instead of cfg


VARIANTS = (
    Variant("no reference", False),
    Variant("reference, TAB 0", False),
    Variant("reference + TAB 2 + ERAE", False),
    Variant("Phantom three-pass (full)", True, three_pass=True),
    Variant("Stand-In, cached K/V", True, cached=True),
    Variant("Stand-In, recomputed", True),
    Variant("own adapter, joint layout", False),
    Variant("own adapter, cached layout", True, cached=True),
)


@dataclass(frozen=True)
class Measured:
    """FLOPs of a step (``Flops``: linear = everything but the fused attention), of its conditional pass
    (``None`` where the guidance has no cfg-1 form), the step's peak of live tensor bytes, and how many
    calls of the DiT ComfyUI made for the step's passes (one batch, or one call per pass when it judges
    the memory short: its choice on this machine, as on a GPU)."""

    step: Flops
    conditional: Flops | None
    peak: int
    calls: int


def floors(model: RealModel, label: str) -> tuple[Flops, Flops, Flops]:
    """``(conditional pass, negative pass, step)`` floors of a variant, from token counts alone. The
    conditional pass of "recomputed" includes the reference branch (a cfg-1 step runs it too)."""
    dims = model.dims()
    video, frame, face = model.tokens()
    text = model.size.text_tokens
    base, joint = dims.pass_flops(text, video), dims.pass_flops(text, video + frame)
    if label == "Phantom three-pass (full)":  # two passes with the subject frame, one without
        return joint, base, joint * 2 + base
    if label in ("no reference",):
        return base, base, base * 2
    if label in ("reference, TAB 0", "reference + TAB 2 + ERAE"):
        return joint, base, joint + base
    if label == "own adapter, joint layout":
        return joint, joint, joint * 2
    if label == "own adapter, cached layout":
        cached = dims.pass_flops(text, video, extra_keys=frame)
        return cached, cached, cached * 2
    standin = dims.pass_flops(text, video, extra_keys=face)
    if label == "Stand-In, cached K/V":
        return standin, standin, standin * 2
    branch = dims.branch_flops(face, model.rank)
    return standin + branch, standin, standin * 2 + branch


class Bench:
    """The pack, a fake model of one size, and the patched models and steps of every variant."""

    def __init__(self, pack, model: RealModel, mode) -> None:
        self.pack = pack
        self.model = model
        self.mode = mode
        self.dtype = torch.bfloat16 if model.key in MODELS else torch.float32
        self.base = fake_model(mode, model.size.family, model.size.arguments(), self.dtype)
        self.shape = model.size.latent_shape
        size = model.size
        self.positive, self.negative = text_conditionings(size.text_tokens, size.text_dim, self.dtype)

    def module(self, name: str):
        return pack_module(self.pack, name)

    def reference(self, height: int, width: int):
        """A random one-image reference (ReferenceEncode's output) of ``height × width`` pixels: real
        latents (a few hundred kB), since the nodes check them for non-finite values when they patch."""
        return reference_latents(self.pack, height, width, generator=torch.Generator().manual_seed(3))

    def fake_lora_state(self) -> dict:
        """A Stand-In-form LoRA (every block's q/k/v, rank ``model.rank``), fake float32 tensors."""
        dim = self.model.size.heads * self.model.size.head_dim
        state = {}
        with self.mode:
            for block in range(self.model.size.layers):
                for projection in "qkv":
                    prefix = f"blocks.{block}.self_attn.{projection}_loras"
                    state[f"{prefix}.down.weight"] = torch.empty(self.model.rank, dim)
                    state[f"{prefix}.up.weight"] = torch.empty(dim, self.model.rank)
        return state

    @contextlib.contextmanager
    def weight_values_unread(self) -> Iterator[None]:
        """Loading a Stand-In file or a cached-layout adapter reads its values once to refuse NaN weights;
        fake weights have no values, so that load-time check (not part of a step) is left out meanwhile."""
        lora_file = self.module("customvideox_core.standin.lora_file")
        with unittest.mock.patch.object(lora_file, "check_finite_weights", lambda tensors, source: None):
            yield

    def patched(self, label: str):
        """The model of a variant, patched through the nodes' entry points."""
        with self.weight_values_unread():
            return self._patched(label)

    def _patched(self, label: str):
        size = self.model.size
        if label in ("no reference", "reference, TAB 0", "reference + TAB 2 + ERAE"):
            return reference_variants(self.pack, self.base, size.height, size.width, (label,))[label]
        tab = self.module("customvideox_core.tab").TABSchedule(shape="constant", peak=0.0)
        settings = self.module("nodes.patch_model")
        if label == "Phantom three-pass (full)":
            return settings.patch_model(self.base, None, tab, None, False, allow_host_reference=True)
        frame = self.reference(size.height, size.width)
        if label.startswith("Stand-In"):
            lora = self.module("customvideox_core.standin.lora_file").parse_standin_state_dict(
                self.fake_lora_state(), source="benchmark"
            )
            face = self.reference(self.model.face, self.model.face)
            return self.module("nodes.standin_nodes").apply_standin(
                self.base, lora, face, strength=1.0, tab=None, erae=None, uncond_sees_reference=True
            )
        if label == "own adapter, joint layout":
            load_node = self.module("nodes.load_node")
            joint = load_node.LoadCustomVideoX.execute(self.base, load_node.NO_ADAPTER, 1.0).args[0]
            return settings.patch_model(joint, frame, tab, None, True)
        host_model = self.module("nodes.host_model")
        own_cached, _ = self.module("nodes.cached_layout").attach_cached_adapter(
            self.base, host_model.host_signature(self.base), self.fake_lora_state(), 1.0, "benchmark"
        )
        return settings.patch_model(own_cached, frame, tab, None, True)

    def phantom_conds(self) -> tuple:
        """Phantom's ``(positive, middle, negative)`` as core's ``WanPhantomSubjectToVideo`` makes them
        (its subject frames as ``time_dim_concat``)."""
        import node_helpers

        frames = torch.randn(1, 16, 1, *self.shape[-2:], generator=torch.Generator().manual_seed(4))
        with_frames = {"time_dim_concat": frames}
        return (
            node_helpers.conditioning_set_values(self.positive, with_frames),
            node_helpers.conditioning_set_values(self.negative, with_frames),
            self.negative,
        )

    def sampling(self, patched, *, steps: int, cfg: float, three_pass: bool) -> Callable[[], object]:
        """A sampling of ``steps`` euler steps as KSampler runs it (Phantom: core's DualCFGGuider with
        cfg and image cfg 5 as Sample's phantom guidance)."""
        if not three_pass:
            size = self.model.size
            return sampling_step(
                patched, self.shape, size.text_tokens, size.text_dim, self.dtype, steps=steps, cfg=cfg
            )
        import comfy.sample
        import comfy.samplers

        latent = torch.zeros(self.shape)
        noise = comfy.sample.prepare_noise(latent, 0)
        conds = self.phantom_conds()

        def run():
            with torch.inference_mode():
                from comfy_extras.nodes_custom_sampler import Guider_DualCFG

                guider = Guider_DualCFG(patched)
                guider.set_conds(*conds)
                guider.set_cfg(cfg, 5.0)
                sigmas = comfy.samplers.KSampler(
                    patched, steps=steps, device=patched.load_device, sampler="euler", scheduler="simple"
                ).sigmas
                return guider.sample(
                    noise, latent, comfy.samplers.sampler_object("euler"), sigmas, disable_pbar=True, seed=0
                )

        return run

    def count(self, run: Callable[[], object], with_memory: bool = False) -> tuple[Flops, int, int]:
        """``(FLOPs, peak bytes, DiT calls)`` of ``run``."""
        counter = flop_counter()
        memory = PeakMemory().track(model_tensors(self.base))
        calls = []
        hook = self.base.model.diffusion_model.register_forward_pre_hook(lambda *_: calls.append(1))
        try:
            with weights_stay_put():
                if with_memory:
                    with counter, memory:
                        run()
                else:
                    with counter:
                        run()
        finally:
            hook.remove()
        attention = attention_flops(counter)
        return Flops(counter.get_total_flops() - attention, attention), memory.peak, len(calls)

    def measure(self, variant: Variant) -> Measured:
        patched = self.patched(variant.label)

        def flops(steps: int, cfg: float, memory: bool = False) -> tuple[Flops, int, int]:
            return self.count(
                self.sampling(patched, steps=steps, cfg=cfg, three_pass=variant.three_pass), memory
            )

        one, peak, calls = flops(1, CFG, memory=not variant.cached)
        conditional = None
        if not variant.three_pass:
            conditional, _, _ = flops(1, 1.0)
        if variant.cached:
            two, peak, _ = flops(2, CFG, memory=True)
            step = two - one
            if conditional is not None:
                two_conditional, _, _ = flops(2, 1.0)
                conditional = two_conditional - conditional
            return Measured(step, conditional, peak, calls)
        return Measured(one, conditional, peak, calls)

    def cache_size(self, height: int, width: int) -> tuple[int, int]:
        """``(bytes of the reference K/V the branch computes for a ``height × width`` reference, the
        formula 2 × layers × Lr × dim × bytes)``."""
        branch = self.module("customvideox_core.standin.branch")
        reference = self.reference(height, width)
        with self.weight_values_unread():
            lora = self.module("customvideox_core.standin.lora_file").parse_standin_state_dict(
                self.fake_lora_state(), source="benchmark"
            )
        dit = self.base.model.diffusion_model
        grid = (self.shape[2], self.shape[3] // 2, self.shape[4] // 2)
        with torch.inference_mode():
            kv = branch.compute_reference_kv(
                dit, reference.latents, lora, strength=1.0, video_grid=grid, dtype=self.dtype, device="cpu"
            )
        measured = sum(t.numel() * t.element_size() for t in (*kv.keys, *kv.values))
        size = self.model.size
        formula = cache_bytes(
            size.layers, (height // 16) * (width // 16), size.heads * size.head_dim, self.element
        )
        return measured, formula

    @property
    def element(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()


def rows_of(model: RealModel, results: dict[str, Measured]) -> list[list[str]]:
    base = results["no reference"]
    base_pass = base.conditional
    floor_base, _, floor_base_step = floors(model, "no reference")
    rows = []
    for label, measured in results.items():
        floor_conditional, floor_negative, floor_step = floors(model, label)
        conditional_floor = ratio(floor_conditional.total, floor_base.total, RATIO_DIGITS)
        negative_floor = ratio(floor_negative.total, floor_base.total, RATIO_DIGITS)
        step_floor = ratio(floor_step.total, floor_base_step.total, RATIO_DIGITS)
        if measured.conditional is not None:
            conditional = ratio(measured.conditional.total, base_pass.total, RATIO_DIGITS)
            negative_pass = measured.step.total - measured.conditional.total
            negative = f"{ratio(negative_pass, base_pass.total, RATIO_DIGITS)} ({negative_floor})"
        else:  # Phantom: two passes with the subject frame and one without, which costs the base pass
            conditional = ratio((measured.step.total - base_pass.total) / 2, base_pass.total, RATIO_DIGITS)
            negative = f"n/a ({negative_floor})"
        rows.append(
            [
                model.size.name,
                label,
                f"{measured.step.total / TERA:.4g}",
                f"{ratio(measured.step.total, base.step.total, RATIO_DIGITS)} ({step_floor})",
                f"{measured.step.attention / TERA:.4g}",
                ratio(measured.step.attention, base.step.attention, RATIO_DIGITS),
                f"{conditional} ({conditional_floor})",
                negative,
                memory(measured.peak, GIB, 2),
                ratio(measured.peak, base.peak, RATIO_DIGITS),
                str(measured.calls),
            ]
        )
    return rows


HEADER = (
    "model",
    "variant",
    "step TFLOP",
    "× no ref (floor)",
    "attention TFLOP",
    "× no ref",
    "cond. pass × (floor)",
    "neg. pass × (floor)",
    "peak GiB",
    "× no ref",
    "DiT calls",
)


def describe(model: RealModel) -> str:
    video, frame, face = model.tokens()
    size = model.size
    return (
        f"{size.name}: {size.layers} layers, {size.heads} heads × {size.head_dim}, {size.width}×{size.height}"
        f"×{size.frames} ({video:,} video tokens), {size.text_tokens} text tokens, reference frame {frame:,} "
        f"tokens"
        + (f", face {model.face}² ({face:,} tokens), LoRA rank {model.rank}" if model.is_wan else "")
    )


def run_model(
    pack, model: RealModel, budget_end: float, selected: set[int] | None = None
) -> tuple[list[list[str]], list[str]]:
    mode = fake_mode()
    bench = Bench(pack, model, mode)
    results: dict[str, Measured] = {}
    for number, variant in enumerate(VARIANTS):
        if (variant.wan_only and not model.is_wan) or (
            selected is not None and number and number not in selected
        ):
            continue
        if time.monotonic() > budget_end:
            print(f"time budget spent: {model.size.name} {variant.label} skipped", flush=True)
            continue
        started = time.monotonic()
        results[variant.label] = bench.measure(variant)
        logger.info("%s, %s: %.0f s", model.size.name, variant.label, time.monotonic() - started)
    notes = []
    cached_rows = {number for number, variant in enumerate(VARIANTS) if variant.cached}
    if model.is_wan and (selected is None or selected & cached_rows):
        size = model.size
        for what, (height, width) in (
            ("Stand-In's face", (model.face, model.face)),
            ("the own cached adapter's frame", (size.height, size.width)),
        ):
            measured, formula = bench.cache_size(height, width)
            tokens = (height // 16) * (width // 16)
            notes.append(
                f"{size.name}: cache of {what} ({width}×{height}, {tokens:,} tokens) {measured / 2**20:,.1f} MiB; "
                f"2 × {size.layers} layers × {tokens:,} × {size.heads * size.head_dim} × {bench.element} B = "
                f"{formula / 2**20:,.1f} MiB ({'equal' if measured == formula else 'DIFFERENT'})"
            )
    return rows_of(model, results), notes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=None, help=f"comma-separated subset of {','.join(MODELS)}")
    parser.add_argument(
        "--variants", default=None, help="comma-separated row numbers (0 = no reference, always run)"
    )
    parser.add_argument("--tiny", action="store_true", help="tiny models (checks the script end to end)")
    parser.add_argument("--budget-s", type=float, default=540.0, help="stop starting rows after this long")
    parser.add_argument("--markdown", action="store_true")
    options = parser.parse_args(argv)
    comfyui = comfyui_path(parser)
    catalogue = TINY_MODELS if options.tiny else MODELS
    keys = list(catalogue) if options.models is None else options.models.split(",")
    unknown = [key for key in keys if key not in catalogue]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(catalogue)}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.WARNING)
    logger.setLevel(logging.INFO)
    started = time.monotonic()
    pack = import_comfy(comfyui, "cpu")
    rows, notes = [], []
    for key in keys:
        print(describe(catalogue[key]), flush=True)
        selected = None if options.variants is None else {int(n) for n in options.variants.split(",")}
        model_rows, model_notes = run_model(pack, catalogue[key], started + options.budget_s, selected)
        rows += model_rows
        notes += model_notes
    import comfy.ldm.modules.attention as attention

    print(
        f"\ntorch {torch.__version__}, fake tensors, ComfyUI attention {attention.optimized_attention.__name__}, "
        f"one euler step, cfg {CFG:g}, {time.monotonic() - started:.0f} s"
    )
    print(format_table(HEADER, rows, markdown=options.markdown))
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
