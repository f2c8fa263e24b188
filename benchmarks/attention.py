"""Benchmark: one reference self-attention call, every path side by side, against unbiased attention.

    python benchmarks/attention.py [--device cuda] [--preset cpu|cpu-quick|cuda-small|cogvideox-5b]
        [--threads N] [--repeats N] [--markdown]

One table, one block of rows per size, time (median) and peak memory side by side, ratios against
"SDPA +ref, no bias" (unbiased attention over the same ``[text | video | reference]`` keys, with the
host-layout reshapes ComfyUI's SDPA backend does). Every variant runs once per round, the rounds
interleaved (``benchmarks/_timing.py``); "× base" is the median of the per-round time ratios, "ratio
IQR" their interquartile range (the noise of a shared machine made visible) and "× base, min" the ratio
of the fastest rounds (other processes only add time):

1. ``SDPA text+video``: the base model's attention (no reference at all).
2. ``SDPA +ref, no bias``: the baseline of the ratios.
3. ``ours, lse-merge``: ``reference_self_attention`` for a row that sees the reference with TAB·ERAE
   (b(s)·(1 + γ·a_i) on video queries, m_j an elliptic subject mask on reference keys): native-head-dim
   attention over text + video, biased attention over the reference keys, merged with the log-sum-exps.
   On the CPU the small reference part takes the bias as a mask; ``ours, lse-merge, bias as head dims``
   is the same path with the bias as extra head dims of the small part instead (as on CUDA kernels).
   ``lse-merge, kernels alone`` (CPU): the same path's two kernel calls and the merge on inputs prepared
   outside the timed call (heads split, whole key blocks, the bias mask): what the path costs with no glue
   around it, the floor of any implementation on these two calls.
4. ``ours, augmented``: the same through the augmented-head-dim fallback (any backend without LSE).
5. ``ours, row without reference``: a row that does not see the reference (compare with row 1).
6. ``dense bias``: SDPA with an explicit ``[B, 1, L, L]`` additive float mask (built inside the timed call);
   skipped with the reason printed when its estimated memory exceeds the limit.

Peak memory is what one call adds on top of its inputs (see ``benchmarks/_timing.py``). ``max abs Δ`` is
each of ours against the dense-bias result. Issue #11 target: lse-merge ≤ 1.05× the baseline on the CPU.
The table names the CPU thread count (``--threads``, default torch's).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from _table import format_table as render_table
from _table import memory, ratio
from _timing import Measurement, compare

sys.path.append(str(Path(__file__).resolve().parents[1]))

from customvideox_core.attention import sdpa_attention
from customvideox_core.biased_paths import join_heads, split_heads
from customvideox_core.layout import TokenLayout
from customvideox_core.lse_attention import LSE_KERNELS, LseKernel, merge_partial_attention, whole_block_keys
from customvideox_core.reference_attention import ReferenceStep, reference_self_attention


@dataclass(frozen=True)
class Size:
    """One attention call: ``[text | video | reference]`` tokens, heads of ``head_dim`` channels."""

    batch: int
    heads: int
    head_dim: int
    text: int
    video_frames: int
    grid: tuple[int, int]  # latent patch grid h x w of one frame (and of the reference frame)

    @property
    def layout(self) -> TokenLayout:
        return TokenLayout.cogvideox(
            text=self.text,
            frames=self.video_frames,
            reference_frames=1,
            frame_tokens=self.grid[0] * self.grid[1],
        )

    def label(self) -> str:
        layout = self.layout
        return (
            f"B{self.batch} H{self.heads} D{self.head_dim} "
            f"{layout.text}+{layout.video}+{layout.reference} (L={layout.total})"
        )


@dataclass(frozen=True)
class Preset:
    device: str
    dtype: torch.dtype
    sizes: tuple[Size, ...]
    warmup: int
    repeats: int


PRESETS: dict[str, Preset] = {
    "cpu": Preset(
        device="cpu",
        dtype=torch.float32,
        sizes=tuple(Size(1, 8, 64, 32, frames, (8, 8)) for frames in (16, 32, 64)),  # 1024..4096 video
        warmup=2,
        repeats=15,
    ),
    "cpu-quick": Preset(
        device="cpu", dtype=torch.float32, sizes=(Size(1, 4, 64, 32, 16, (8, 8)),), warmup=1, repeats=3
    ),
    "cuda-small": Preset(
        device="cuda",
        dtype=torch.bfloat16,
        sizes=(Size(1, 48, 64, 226, 13, (15, 22)), Size(2, 48, 64, 226, 13, (30, 45))),
        warmup=3,
        repeats=10,
    ),
    # CogVideoX-5B at 480x720, 49 frames: 226 text + 13 x 30 x 45 video + one 30 x 45 reference frame.
    "cogvideox-5b": Preset(
        device="cuda", dtype=torch.bfloat16, sizes=(Size(2, 48, 64, 226, 13, (30, 45)),), warmup=3, repeats=10
    ),
}


@dataclass(frozen=True)
class Row:
    size: str
    variant: str
    measurement: Measurement | None
    note: str = ""


def elliptic_mask(size: Size) -> torch.Tensor:
    """``[1, reference]`` subject weights: 1 inside an ellipse (~40% of the tokens), 0.1 outside."""
    height, width = size.grid
    rows = torch.linspace(-1, 1, height)[:, None]
    cols = torch.linspace(-1, 1, width)[None, :]
    inside = (rows / 0.8) ** 2 + (cols / 0.6) ** 2 <= 1.0
    return torch.where(inside, 1.0, 0.1).reshape(1, -1)


def steps(size: Size, device: torch.device) -> tuple[ReferenceStep, ReferenceStep]:
    """(a step whose rows all see the reference with TAB 2, one whose rows see none of it)."""
    batch, layout = size.batch, size.layout

    def make(sees: bool) -> ReferenceStep:
        return ReferenceStep(
            layout=layout,
            tab_per_row=torch.full((batch,), 2.0, device=device),
            reference_weights=elliptic_mask(size).to(device),
            row_sees_reference=torch.full((batch,), sees, device=device),
            kept_reference=None,
            erae=None,
            erae_rows=torch.zeros(batch, dtype=torch.bool, device=device),
        )

    return make(True), make(False)


def dense_bias_bytes(size: Size, dtype: torch.dtype) -> int:
    """Estimated extra memory of the dense baseline: the float32 product, its cast, a padded copy."""
    length = size.layout.total
    itemsize = torch.empty((), dtype=dtype).element_size()
    return size.batch * length * length * (4 + 2 * itemsize)


def memory_limit_bytes(device: torch.device, limit_gib: float | None) -> int:
    if limit_gib is not None:
        return int(limit_gib * 2**30)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    try:
        with open("/proc/meminfo") as handle:
            available = next(
                int(line.split()[1]) * 1024 for line in handle if line.startswith("MemAvailable:")
            )
    except (OSError, StopIteration):
        return 4 * 2**30
    return available // 2


def benchmark_size(
    size: Size, preset: Preset, device: torch.device, limit: int, generator: torch.Generator, repeats: int
) -> tuple[list[Row], dict[str, float]]:
    layout = size.layout
    shape = (size.batch, layout.total, size.heads * size.head_dim)  # the host layout "B L (H D)"
    query, key, value = (torch.randn(shape, generator=generator).to(device, preset.dtype) for _ in range(3))
    seeing, blind = steps(size, device)
    # One activation column, as ERAE gives it per layer: b(s)(1 + a_i) on video queries.
    activation = torch.rand(size.batch, layout.video, 1, generator=generator).to(device)
    # ERAE acts on every row (their prompts hold the entity words), as the dense row assumes.
    entity_rows = torch.ones(size.batch, dtype=torch.bool, device=device)
    seeing = ReferenceStep(**{**_fields(seeing), "erae": _erae(), "erae_rows": entity_rows})
    context = layout.text + layout.video

    def split(tokens: torch.Tensor) -> torch.Tensor:  # as ComfyUI's attention_pytorch: view + transpose
        return tokens.view(size.batch, -1, size.heads, size.head_dim).transpose(1, 2)

    def host_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = sdpa_attention(split(q), split(k), split(v))
        return out.transpose(1, 2).reshape(size.batch, -1, size.heads * size.head_dim)

    def ours(step: ReferenceStep, kernel: LseKernel | None) -> Callable[[], torch.Tensor]:
        return lambda: reference_self_attention(
            query,
            key,
            value,
            size.heads,
            step,
            attention_fn=sdpa_attention,
            activation=activation,
            lse_kernel=kernel,
        )

    factors = dense_factors(layout, seeing.tab_per_row, seeing.reference_weights, activation)

    def dense() -> torch.Tensor:
        mask = (factors[0] @ factors[1].transpose(-1, -2)).to(preset.dtype).unsqueeze(1)
        out = F.scaled_dot_product_attention(split(query), split(key), split(value), attn_mask=mask)
        return out.transpose(1, 2).reshape(size.batch, -1, size.heads * size.head_dim)

    torch_kernel = LSE_KERNELS["torch"]
    candidates: dict[str, Callable[[], torch.Tensor]] = {
        "SDPA text+video": lambda: host_sdpa(query[:, :context], key[:, :context], value[:, :context]),
        "SDPA +ref, no bias": lambda: host_sdpa(query, key, value),
        "ours, lse-merge": ours(seeing, torch_kernel),
        "ours, augmented": ours(seeing, None),
        "ours, row without reference": ours(blind, None),
    }
    if torch_kernel.takes_bias(query):
        head_dims_only = LseKernel("torch, bias as head dims", torch_kernel.run, torch_kernel.supports)
        candidates["ours, lse-merge, bias as head dims"] = ours(seeing, head_dims_only)
        candidates["lse-merge, kernels alone"] = kernels_alone(size, query, key, value, factors, torch_kernel)
    label = size.label()
    differences: dict[str, float] = {}
    needed = dense_bias_bytes(size, preset.dtype)
    dense_note = ""
    if needed > limit:
        dense_note = f"skipped: needs ~{needed / 2**30:.1f} GiB > limit {limit / 2**30:.1f} GiB"
    else:
        try:  # one trial call: an out-of-memory here skips the row instead of ending the run
            expected = dense().float()
            biased = (
                "ours, lse-merge",
                "ours, lse-merge, bias as head dims",
                "lse-merge, kernels alone",
                "ours, augmented",
            )
            for name in [name for name in biased if name in candidates]:
                differences[name] = (candidates[name]().float() - expected).abs().max().item()
            candidates["dense bias"] = dense
        except torch.cuda.OutOfMemoryError as error:
            dense_note = f"skipped: out of memory ({str(error).splitlines()[0]})"
    measurements = compare(candidates, device, warmup=preset.warmup, repeats=repeats)
    rows = [Row(label, name, measurement) for name, measurement in measurements.items()]
    if dense_note:
        rows.append(Row(label, "dense bias", None, dense_note))
    return rows, {f"{label}|{name}": value for name, value in differences.items()}


def dense_factors(layout: TokenLayout, tab: torch.Tensor, weights: torch.Tensor, activation: torch.Tensor):
    """The dense row's bias factors over the whole sequence: query "B L 1" = ``b(s) (1 + a_i)`` on video
    queries, key "1 L 1" = ``m_j`` on reference keys (γ = 1, one term), zeros elsewhere."""
    query = torch.zeros(tab.shape[0], layout.total, 1, device=tab.device)
    query[:, layout.video_slice] = tab[:, None, None] * (1.0 + activation.to(query.dtype))
    key = torch.zeros(1, layout.total, 1, device=tab.device)
    key[:, layout.reference_slice, 0] = weights.to(key.dtype)
    return query, key


def kernels_alone(
    size: Size, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, factors, kernel: LseKernel
) -> Callable[[], torch.Tensor]:
    """The lse-merge path's two kernel calls and merge, everything else prepared here: the many keys in
    whole blocks, the rest (the short last block and the reference keys) with the bias as a mask.
    Returns "B L (H D)" as the other rows do (a view of the merged output).

    query/key/value "B L (H D)"; ``factors`` (query "B L K", key "1 L K") from :func:`dense_factors`.
    """
    context = size.layout.text + size.layout.video
    main = whole_block_keys(context, kernel.block_on(query))

    query4, key4, value4 = (split_heads(tokens, size.heads) for tokens in (query, key, value))
    small_key, small_value = key4[:, :, main:].contiguous(), value4[:, :, main:].contiguous()
    bias = (factors[0] @ factors[1][:, main:].transpose(-1, -2)).unsqueeze(1).contiguous()
    scale = size.head_dim**-0.5
    assert kernel.run_biased is not None

    def call() -> torch.Tensor:
        out, lse = kernel.run(query4, key4[:, :, :main], value4[:, :, :main], scale)
        out_small, lse_small = kernel.run_biased(query4, small_key, small_value, scale, bias)
        return join_heads(merge_partial_attention(out, lse, out_small, lse_small))

    return call


def _fields(step: ReferenceStep) -> dict:
    return {
        name: getattr(step, name)
        for name in (
            "layout",
            "tab_per_row",
            "reference_weights",
            "row_sees_reference",
            "kept_reference",
            "erae",
            "erae_rows",
        )
    }


def _erae():
    from customvideox_core.erae import ERAEConfig

    return ERAEConfig(entity_positions=(0,), gamma=1.0)


HEADER = (
    "size",
    "threads",
    "variant",
    "time ms",
    "× base",
    "ratio IQR",
    "× base, min",
    "peak MiB",
    "× base",
    "max abs Δ vs dense",
)


def format_table(rows: list[Row], differences: dict[str, float], markdown: bool, threads: int) -> str:
    baselines = {row.size: row.measurement for row in rows if row.variant == "SDPA +ref, no bias"}
    body = []
    for row in rows:
        base = baselines[row.size]
        if row.measurement is None:
            body.append([row.size, str(threads), row.variant, row.note, *[""] * 6])
            continue
        seconds, peak = row.measurement.median_seconds, row.measurement.peak_bytes
        difference = differences.get(f"{row.size}|{row.variant}")
        body.append(
            [
                row.size,
                str(threads),
                row.variant,
                f"{seconds * 1e3:.2f}",
                f"{row.measurement.ratio_to(base):.3f}",
                _spread(row.measurement.paired_ratios(base)),
                f"{row.measurement.min_ratio_to(base):.3f}",
                memory(peak, 2**20, 1),
                ratio(peak, base.peak_bytes),
                "" if difference is None else f"{difference:.1e}",
            ]
        )
    return render_table(HEADER, body, markdown=markdown, rule=True)


def _spread(ratios: list[float]) -> str:
    """First to third quartile of the per-round ratios, "" with fewer than 4 rounds."""
    if len(ratios) < 4:
        return ""
    first, _, third = statistics.quantiles(ratios, n=4)
    return f"{first:.3f}–{third:.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help="default: cpu or cuda-small")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--dense-limit-gib", type=float, default=None, help="memory limit of the dense row")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    preset_name = args.preset or ("cpu" if args.device == "cpu" else "cuda-small")
    preset = PRESETS[preset_name]
    if preset.device != args.device:
        parser.error(f"preset {preset_name!r} runs on {preset.device}; pass --device {preset.device}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda given but torch.cuda.is_available() is False")
    device = torch.device(args.device)
    limit = memory_limit_bytes(device, args.dense_limit_gib)
    generator = torch.Generator().manual_seed(args.seed)
    repeats = args.repeats or preset.repeats

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"torch {torch.__version__} | device {name} | dtype {str(preset.dtype).removeprefix('torch.')} | "
        f"threads {torch.get_num_threads()} | preset {preset_name} | warmup {preset.warmup}, "
        f"{repeats} interleaved rounds"
    )
    rows: list[Row] = []
    differences: dict[str, float] = {}
    with torch.inference_mode():
        for size in preset.sizes:
            size_rows, size_differences = benchmark_size(size, preset, device, limit, generator, repeats)
            rows += size_rows
            differences.update(size_differences)
    print(format_table(rows, differences, args.markdown, torch.get_num_threads()))
    peak_kind = "CUDA max_memory_allocated" if device.type == "cuda" else "peak RSS"
    print(f"peak = {peak_kind} above the level before the call (inputs excluded, output included)")


if __name__ == "__main__":
    main()
