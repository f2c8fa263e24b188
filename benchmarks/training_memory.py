"""Benchmark: GPU memory of CustomVideoX LoRA training — a documented estimate, a measurement at real size
under fake tensors (no GPU), and a measured peak on CUDA.

    python benchmarks/training_memory.py [--markdown]            # estimate, CogVideoX-5B, rank 128, 480x720x49
    python benchmarks/training_memory.py --rank 64 --frames 25   # estimate for other settings
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/training_memory.py --fake cogvideox-5b --markdown  # measured
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/training_memory.py --device cuda [--layers 42] [--steps 3]
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/training_memory.py --tiny --steps 1  # check it runs (CPU)

**Estimate** (no GPU, no ComfyUI): counts, for ComfyUI's CogVideoX transformer (``comfy/ldm/cogvideo``),

- base weights (bf16; the patch and text embeddings are float32 in ComfyUI's module),
- the LoRA on ``q, k, v, attn_out`` of every block: float32 weights, gradients and AdamW's two moments,
- activations kept for the backward pass, with and without gradient checkpointing (one block at a time),
- the cached latents of one sample (video + one reference frame) and the text embeddings.

The token count is the joint sequence training builds: 226 text tokens, the video's latent frames
(``(frames - 1) / 4 + 1``) and one reference frame, each ``(height / 16) × (width / 16)`` tokens.

Activations per block, in bf16 elements, for ``L`` tokens of width ``D`` (what autograd keeps when only
the LoRA is trained: frozen linears keep their weight, not their input): LayerNorm inputs (norm1, norm2:
``2 L·D``), the LoRA input shared by q/k/v (``L·D``), the q/k LayerNorm inputs (``2 L·D``), the attention
inputs and output kept by a fused SDPA backend (``4 L·D``) and the tanh-GELU input (``4 L·D``, the FF is
``4 D`` wide): ``13 L·D``, plus the LoRA ranks (``5 L·r``). With checkpointing only each block's input
stays (``L·D``) and one block is recomputed at a time; its backward needs roughly the same again for
gradients of those activations (counted as a second ``13 L·D``). A fixed 1 GiB covers the CUDA context
and kernel workspaces. This is an estimate; ``--device cuda`` measures.

**Measurement** (``--device cuda``, ComfyUI needed for its CogVideoX module): builds the transformer with
random bf16 weights (``--layers`` lets a smaller GPU measure a slice and scale per block), injects the
rank-``r`` peft LoRA, and runs ``--steps`` real training steps of ``customvideox_core.training.train``
(v-prediction loss on the video frames with one clean reference frame appended, bf16 autocast, gradient
checkpointing unless ``--no-checkpointing``), then prints ``torch.cuda.max_memory_allocated`` next to the
estimate for the same shape. The target is what CogVideo's own LoRA recipe needs: one 24 GB card (24 GiB).

**Measurement under fake tensors** (``--fake cogvideox-5b,wan-1.3b,wan-14b``, ComfyUI needed, no GPU):
``real_size.py``'s models at their real video sizes, built by ComfyUI's loader with bf16 weights that are
fake tensors (shapes, no data; ``benchmarks/_fake_models.py``), the rank-``--rank`` peft LoRA on the
family's self-attention projections (``inject_lora``), and training steps as the core loop runs them
(``denoising_loss`` with the family's objective under bf16 autocast, ``checkpoint_modules`` on every block
unless ``--no-checkpointing``, backward, AdamW), the model function appending one clean reference frame.
It prints the peak of live tensor bytes over a step after the first (when AdamW's moments exist): what
``max_memory_allocated`` would see on a GPU, less kernel workspaces, the CUDA context and allocator
slack, with the CPU's autocast op lists (matrix products in bf16, as on CUDA). ``--fake tiny-cogvideox,
tiny-wan --tiny --rank 4`` is CI's smoke run of it.

**Tiny** (``--tiny``, ComfyUI needed): the same estimate and measurement for a tiny CogVideoX (2 blocks
of 2 heads × 64, time and text width 64, 16 text tokens, 96×64×9 frames, LoRA rank 4) on ``--device``,
the CPU included (there the peak is the rise of the resident set size, ``benchmarks/_timing.py``, which
also counts importing ComfyUI). It checks the measurement path end to end in seconds, it measures
nothing worth reading: ``--tiny --steps 1`` is CI's smoke run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))  # the benchmarks' helpers

GIB = 1024**3
BF16 = 2
FP32 = 4
TARGET_GIB = 24.0
"""A 24 GB card (RTX 3090/4090, A10G: 24 GiB) — what CogVideo's own LoRA recipe asks for."""
OVERHEAD_BYTES = 1 * GIB
ACTIVATION_ELEMENTS_PER_TOKEN_WIDTH = 13  # see the module docstring
LORA_RANK_TENSORS = 5  # LoRA-A outputs kept for LoRA-B's gradient (q, k, v share one input; attn_out)


@dataclass(frozen=True)
class DiTShape:
    """The sizes of a ComfyUI CogVideoX transformer that memory depends on."""

    name: str
    layers: int
    heads: int
    head_dim: int = 64
    time_dim: int = 512
    text_dim: int = 4096
    text_tokens: int = 226
    ff_mult: int = 4
    channels: int = 16
    patch: int = 2

    @property
    def width(self) -> int:
        return self.heads * self.head_dim


COGVIDEOX_5B = DiTShape(name="CogVideoX-5B", layers=42, heads=48)
TINY_DIT = DiTShape(name="tiny CogVideoX", layers=2, heads=2, time_dim=64, text_dim=64, text_tokens=16)


@dataclass(frozen=True)
class TrainShape:
    """One training sample and the LoRA."""

    width: int = 720
    height: int = 480
    frames: int = 49
    reference_frames: int = 1
    rank: int = 128
    lora_targets: int = 4  # q, k, v, attn_out

    @property
    def latent_frames(self) -> int:
        return (self.frames - 1) // 4 + 1


def block_parameters(shape: DiTShape) -> int:
    """Parameters of one CogVideoXBlock: two AdaLN-zero (6·D from the time embedding), q/k/v/out, q/k
    norms, FF (D → 4D → D)."""
    dim, inner = shape.width, shape.width * shape.ff_mult
    norms = 2 * (shape.time_dim * 6 * dim + 6 * dim + 2 * dim)
    attention = 4 * (dim * dim + dim) + 2 * 2 * shape.head_dim
    feed_forward = dim * inner + inner + inner * dim + dim
    return norms + attention + feed_forward


def weight_bytes(shape: DiTShape) -> tuple[int, int]:
    """``(parameters, bytes)``: bf16 blocks and heads, float32 patch/text embeddings (as ComfyUI builds it)."""
    dim = shape.width
    float32_params = (shape.channels * shape.patch**2 * dim + dim) + (shape.text_dim * dim + dim)
    bf16_params = (
        shape.layers * block_parameters(shape)
        + (dim * shape.time_dim + shape.time_dim)
        + (shape.time_dim * shape.time_dim + shape.time_dim)
        + 2 * dim  # norm_final
        + (shape.time_dim * 2 * dim + 2 * dim + 2 * dim)  # norm_out
        + (dim * shape.patch**2 * shape.channels + shape.patch**2 * shape.channels)  # proj_out
    )
    return float32_params + bf16_params, float32_params * FP32 + bf16_params * BF16


def lora_parameters(shape: DiTShape, train: TrainShape) -> int:
    return shape.layers * train.lora_targets * 2 * train.rank * shape.width


def token_counts(shape: DiTShape, train: TrainShape) -> tuple[int, int, int]:
    """``(text, video, reference)`` tokens of the joint sequence."""
    per_frame = (train.height // (8 * shape.patch)) * (train.width // (8 * shape.patch))
    return shape.text_tokens, train.latent_frames * per_frame, train.reference_frames * per_frame


TINY_TRAIN = TrainShape(width=96, height=64, frames=9, rank=4)


@dataclass(frozen=True)
class Row:
    item: str
    bytes_with: int
    bytes_without: int
    note: str


def estimate(shape: DiTShape, train: TrainShape) -> list[Row]:
    """Memory rows with and without gradient checkpointing (bytes)."""
    params, weights = weight_bytes(shape)
    lora = lora_parameters(shape, train)
    text, video, reference = token_counts(shape, train)
    tokens = text + video + reference
    dim = shape.width
    per_block = (
        ACTIVATION_ELEMENTS_PER_TOKEN_WIDTH * tokens * dim + LORA_RANK_TENSORS * tokens * train.rank
    ) * BF16
    block_inputs = shape.layers * tokens * dim * BF16
    latents = (
        shape.channels
        * (train.latent_frames + train.reference_frames)
        * (train.height // 8)
        * (train.width // 8)
        * FP32
        + text * shape.text_dim * FP32
    )
    return [
        Row("base weights", weights, weights, f"{params / 1e9:.2f} B parameters (bf16; embeddings float32)"),
        Row(
            "LoRA weights",
            lora * FP32,
            lora * FP32,
            f"{lora / 1e6:.1f} M parameters, rank {train.rank}, float32",
        ),
        Row("LoRA gradients", lora * FP32, lora * FP32, "float32"),
        Row("AdamW state", 2 * lora * FP32, 2 * lora * FP32, "two float32 moments"),
        Row(
            "activations",
            block_inputs + 2 * per_block,
            shape.layers * per_block + per_block,
            f"{tokens:,} tokens ({text} text + {video:,} video + {reference:,} reference) × {dim}",
        ),
        Row("latents + text", latents, latents, "one sample: video + reference latents, T5 embeddings"),
        Row("CUDA context, workspaces", OVERHEAD_BYTES, OVERHEAD_BYTES, "fixed allowance"),
    ]


def render(rows: list[Row], *, markdown: bool, title: str) -> str:
    total_with = sum(row.bytes_with for row in rows)
    total_without = sum(row.bytes_without for row in rows)
    lines = [title]
    if markdown:
        lines += [
            "",
            "| | with checkpointing | without | what |",
            "|---|---:|---:|---|",
            *(
                f"| {row.item} | {row.bytes_with / GIB:.2f} GiB | {row.bytes_without / GIB:.2f} GiB | {row.note} |"
                for row in rows
            ),
            f"| **total** | **{total_with / GIB:.1f} GiB** | **{total_without / GIB:.1f} GiB** | "
            f"target ≤ {TARGET_GIB:.0f} GiB (a 24 GB card) |",
        ]
    else:
        lines.append(f"{'':26} {'with ckpt':>11} {'without':>11}  what")
        lines += [
            f"{row.item:26} {row.bytes_with / GIB:9.2f} GiB {row.bytes_without / GIB:7.2f} GiB  {row.note}"
            for row in rows
        ]
        lines.append(
            f"{'total':26} {total_with / GIB:9.2f} GiB {total_without / GIB:7.2f} GiB  target ≤ {TARGET_GIB:.0f} GiB (a 24 GB card)"
        )
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------
# CUDA measurement
# -------------------------------------------------------------------------------------------------


def _import_comfy_cogvideox():
    comfyui = os.environ.get("COMFYUI_PATH")
    if not comfyui or not (Path(comfyui) / "comfy").is_dir():
        raise SystemExit(
            "--device cuda builds ComfyUI's CogVideoX module: set COMFYUI_PATH to a ComfyUI checkout "
            "(0.21.0 or newer) and run with the Python that runs it"
        )
    sys.path.insert(0, str(Path(comfyui).resolve()))
    import comfy.options  # first: ComfyUI keeps its argument parsing off (argv is ours)
    import torch
    from comfy.cli_args import args

    args.cpu = not torch.cuda.is_available()  # lets ComfyUI import on a machine without a GPU
    import comfy.ops
    from _host_models import module_class

    return module_class("cogvideox"), comfy.ops.disable_weight_init


def _import_comfy_for_fake() -> str:
    """Import ComfyUI (CPU mode, SDPA attention, as ``real_size.py`` does) for the fake measurement."""
    from _host_models import comfyui_path, import_comfy

    parser = argparse.ArgumentParser()
    path = comfyui_path(parser)
    import_comfy(path, "cpu")
    return path.name


def run_training_steps(
    shape: DiTShape, train: TrainShape, *, device: str, steps: int, checkpointing: bool
) -> float:
    """Build ComfyUI's CogVideoX with random bf16 weights on ``device``, inject the LoRA and run ``steps``
    training steps of the core loop; returns seconds per step."""
    import torch

    sys.path.append(str(Path(__file__).resolve().parents[1]))
    from customvideox_core.training import LatentCacheEntry, LoraTrainConfig, TrainConfig, inject_lora
    from customvideox_core.training import train as train_lora

    transformer_class, operations = _import_comfy_cogvideox()
    torch.manual_seed(0)
    model = transformer_class(
        num_attention_heads=shape.heads,
        attention_head_dim=shape.head_dim,
        in_channels=shape.channels,
        out_channels=shape.channels,
        time_embed_dim=shape.time_dim,
        text_embed_dim=shape.text_dim,
        num_layers=shape.layers,
        sample_width=train.width // 8,
        sample_height=train.height // 8,
        sample_frames=train.frames,
        patch_size=shape.patch,
        use_rotary_positional_embeddings=True,
        device=torch.device(device),
        dtype=torch.bfloat16,
        operations=operations,
    )
    with torch.no_grad():  # ComfyUI's modules skip initialisation: give every weight a value
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.zero_()
            elif parameter.ndim >= 2:
                parameter.normal_(0.0, 0.02)
            else:
                parameter.fill_(1.0)
    inject_lora(model, LoraTrainConfig(rank=train.rank, alpha=float(train.rank)))
    generator = torch.Generator().manual_seed(0)
    latent_size = (train.height // 8, train.width // 8)
    video_shape = (1, shape.channels, train.latent_frames, *latent_size)
    reference_shape = (1, shape.channels, train.reference_frames, *latent_size)
    entry = LatentCacheEntry(
        video_latents=torch.randn(video_shape, generator=generator),
        reference_latents=torch.randn(reference_shape, generator=generator),
    )
    context = torch.randn((1, shape.text_tokens, shape.text_dim), generator=generator)
    context = context.to(device, torch.bfloat16)

    def model_fn(video, reference, timestep):
        # CogVideoX-5B layout: the reference frame simply follows the video frames (as the wrapper does).
        joined = torch.cat([video, reference], dim=2).to(torch.bfloat16)
        return model(joined, timestep, context).float()[:, :, : video.shape[2]]

    config = TrainConfig(steps=steps, bf16_autocast=True, gradient_checkpointing=checkpointing)
    started = time.perf_counter()
    train_lora(model, [entry], config, model_fn=model_fn)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def measure_cuda(shape: DiTShape, train: TrainShape, *, steps: int, checkpointing: bool) -> tuple[int, float]:
    """Peak ``torch.cuda.max_memory_allocated`` (bytes) over real training steps, and seconds per step."""
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to this Python")
    torch.cuda.reset_peak_memory_stats()
    seconds = run_training_steps(shape, train, device="cuda", steps=steps, checkpointing=checkpointing)
    return torch.cuda.max_memory_allocated(), seconds


def measure_cpu(
    shape: DiTShape, train: TrainShape, *, steps: int, checkpointing: bool
) -> tuple[int | None, float]:
    """Peak rise of the resident set size (bytes; ``None`` where unavailable) over real training steps on
    the CPU, and seconds per step."""
    import torch
    from _timing import peak_bytes

    seconds: list[float] = []

    def run() -> None:
        seconds.append(
            run_training_steps(shape, train, device="cpu", steps=steps, checkpointing=checkpointing)
        )

    peak = peak_bytes(run, torch.device("cpu"))
    return peak, seconds[0]


# -------------------------------------------------------------------------------------------------
# Measurement at real size under fake tensors (no GPU)
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeMeasurement:
    """One training step at real size under fake tensors (bytes): the peak of live tensors over forward,
    backward and the AdamW step, what of it the weights are, and the LoRA's parameter count."""

    peak: int
    weights: int
    lora_parameters: int
    seconds: float


def measure_fake(key: str, rank: int, *, checkpointing: bool, tiny: bool = False) -> FakeMeasurement:
    """Two training steps of ``real_size.py``'s model ``key`` (its video size, one reference frame, its
    text length) under fake tensors: ComfyUI's class loaded by ComfyUI's loader with bf16 weights, the
    rank-``rank`` peft LoRA on the family's attention targets (``inject_lora``), the core's denoising loss
    (``denoising_loss``, the family's objective) under bf16 autocast, the core's block checkpointing
    (``checkpoint_modules``), backward and AdamW. The peak of live tensor bytes
    (``_fake_models.PeakMemory``) is taken over the second step, when AdamW's moments exist, as every step
    after the first sees them. ComfyUI's ``in_training`` is set where the host spec says training sets it
    (Wan: its RoPE's autograd path). The model function is training's for the joint layout: the reference frame
    after the video, the video's prediction back."""
    import torch
    from _fake_models import (
        PeakMemory,
        fake_mode,
        fake_model,
        fake_modules_convert_in_place,
        model_tensors,
        weights_stay_put,
    )
    from real_size import MODELS, TINY_MODELS

    sys.path.append(str(Path(__file__).resolve().parents[1]))
    from customvideox_core.host_specs import spec_for
    from customvideox_core.training import LoraTrainConfig, inject_lora
    from customvideox_core.training.loop import checkpoint_modules
    from customvideox_core.training.objective import denoising_loss

    model = (TINY_MODELS if tiny else MODELS)[key]
    size = model.size
    mode = fake_mode()
    dtype = torch.float32 if tiny else torch.bfloat16
    patcher = fake_model(mode, size.family, size.arguments(), dtype)
    dit = patcher.model.diffusion_model
    with mode, fake_modules_convert_in_place():
        inject_lora(dit, LoraTrainConfig.for_family(size.family, rank=rank, alpha=float(rank)))
        context = torch.empty(1, size.text_tokens, size.text_dim, dtype=dtype)
        video = torch.empty(size.latent_shape)
        reference = torch.empty(*size.latent_shape[:2], 1, *size.latent_shape[3:])
    parameters = [parameter for parameter in dit.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, foreach=False)
    generator = torch.Generator().manual_seed(0)
    objective = spec_for(size.family).objective

    def model_fn(noisy, clean_reference, timestep):
        joined = torch.cat([noisy, clean_reference], dim=2).to(dtype)
        return dit(joined, timestep, context).float()[:, :, : noisy.shape[2]]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=not tiny):
            loss = denoising_loss(model_fn, video, reference, objective=objective, generator=generator)
        loss.backward()
        optimizer.step()

    import comfy.model_management

    restore = checkpoint_modules(list(dit.blocks)) if checkpointing else None
    in_training = comfy.model_management.in_training
    comfy.model_management.in_training = spec_for(size.family).sets_in_training  # as training sets it
    started = time.perf_counter()
    try:
        dit.train()
        with weights_stay_put():
            step()  # the first step creates AdamW's moments
            memory = PeakMemory().track([*model_tensors(patcher), *optimizer_state(optimizer)])
            with memory:
                step()
    finally:
        comfy.model_management.in_training = in_training
        if restore is not None:
            restore()
    weights = sum(t.untyped_storage().nbytes() for t in model_tensors(patcher) if not t.requires_grad)
    return FakeMeasurement(
        peak=memory.peak,
        weights=weights,
        lora_parameters=sum(p.numel() for p in parameters),
        seconds=time.perf_counter() - started,
    )


def optimizer_state(optimizer) -> list:
    """The tensors AdamW keeps between steps (its moments and step counts)."""
    import torch

    return [value for state in optimizer.state.values() for value in state.values() if torch.is_tensor(value)]


def fake_table(keys: list[str], rank: int, *, checkpointing: bool, markdown: bool, tiny: bool) -> str:
    """One row per model: the measured peak, its weights and the rest, against a 24 GB card."""
    from _table import format_table
    from real_size import MODELS, TINY_MODELS

    rows = []
    for key in keys:
        measured = measure_fake(key, rank, checkpointing=checkpointing, tiny=tiny)
        size = (TINY_MODELS if tiny else MODELS)[key].size
        video, frame, _ = (TINY_MODELS if tiny else MODELS)[key].tokens()
        rows.append(
            [
                size.name,
                f"{size.width}×{size.height}×{size.frames}",
                f"{video + frame + (size.text_tokens if size.family == 'cogvideox' else 0):,}",
                f"{measured.lora_parameters / 1e6:.1f} M",
                f"{measured.weights / GIB:.2f}",
                f"{(measured.peak - measured.weights) / GIB:.2f}",
                f"{measured.peak / GIB:.2f}",
                "met" if measured.peak <= TARGET_GIB * GIB else "NOT met",
            ]
        )
    header = (
        "model",
        "video",
        "tokens per layer",
        f"LoRA rank {rank}",
        "weights GiB",
        "the rest GiB",
        "peak GiB",
        f"≤ {TARGET_GIB:.0f} GiB",
    )
    return format_table(header, rows, markdown=markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: also measure")
    parser.add_argument("--width", type=int, default=720)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--rank", type=int, default=128)
    parser.add_argument("--layers", type=int, default=COGVIDEOX_5B.layers, help="blocks (measure a slice)")
    parser.add_argument("--steps", type=int, default=3, help="training steps to measure")
    parser.add_argument("--no-checkpointing", action="store_true", help="measure without checkpointing")
    parser.add_argument("--markdown", action="store_true", help="print the estimate as a markdown table")
    parser.add_argument(
        "--fake",
        default=None,
        help="measure at real size under fake tensors (no GPU): comma-separated subset of "
        "cogvideox-5b,wan-1.3b,wan-14b (with --tiny: tiny-cogvideox,tiny-wan); needs COMFYUI_PATH",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="a tiny CogVideoX, estimated and measured on --device (the CPU too): checks the script end to end",
    )
    args = parser.parse_args()

    if args.fake:
        import logging

        logging.basicConfig(level=logging.WARNING)
        comfyui = _import_comfy_for_fake()
        keys = args.fake.split(",")
        checkpointing = not args.no_checkpointing
        print(
            f"Measured training memory under fake tensors (ComfyUI {comfyui}): LoRA rank {args.rank} on the "
            f"self-attention projections, one reference frame, batch 1, bf16 weights and autocast, AdamW, "
            f"{'with' if checkpointing else 'without'} gradient checkpointing; peak of live tensors over a "
            "training step after the first (forward, backward, optimizer step)"
        )
        print(
            fake_table(keys, args.rank, checkpointing=checkpointing, markdown=args.markdown, tiny=args.tiny)
        )
        return
    if args.tiny:
        shape, train, label = TINY_DIT, TINY_TRAIN, TINY_DIT.name
    else:
        shape = DiTShape(name=COGVIDEOX_5B.name, layers=args.layers, heads=COGVIDEOX_5B.heads)
        train = TrainShape(width=args.width, height=args.height, frames=args.frames, rank=args.rank)
        label = (
            shape.name
            if shape.layers == COGVIDEOX_5B.layers
            else f"{shape.name} ({shape.layers} of 42 blocks)"
        )
    rows = estimate(shape, train)
    title = (
        f"Estimated training memory: {label}, LoRA rank {train.rank} on q/k/v/attn_out, "
        f"{train.height}x{train.width}x{train.frames} + {train.reference_frames} reference frame, batch 1, "
        "bf16 autocast, AdamW"
    )
    print(render(rows, markdown=args.markdown, title=title))
    if args.device == "cuda" or args.tiny:
        checkpointing = not args.no_checkpointing
        if args.device == "cuda":
            peak, seconds = measure_cuda(shape, train, steps=args.steps, checkpointing=checkpointing)
            kind = "CUDA steps", "max_memory_allocated"
        else:
            peak, seconds = measure_cpu(shape, train, steps=args.steps, checkpointing=checkpointing)
            kind = "CPU steps", "resident set size rise"
        estimated = (
            sum(row.bytes_with if checkpointing else row.bytes_without for row in rows) - OVERHEAD_BYTES
        )
        peak_text = "n/a" if peak is None else f"{peak / GIB:.2f} GiB"
        verdict = "n/a" if peak is None else ("met" if peak <= TARGET_GIB * GIB else "NOT met")
        print(
            f"\nmeasured on {args.steps} {kind[0]} ({'with' if checkpointing else 'without'} checkpointing): "
            f"peak {kind[1]} {peak_text} (estimate without the context allowance "
            f"{estimated / GIB:.2f} GiB), {seconds:.2f} s/step; target ≤ {TARGET_GIB:.0f} GiB: {verdict}"
        )


if __name__ == "__main__":
    main()
