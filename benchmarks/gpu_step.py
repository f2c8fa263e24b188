"""One cfg sampling step at real sizes on a GPU: no reference / reference / reference + TAB + ERAE, per
attention backend, time and peak memory side by side, as ratios against the base model.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/gpu_step.py --markdown          # CUDA, real sizes
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/gpu_step.py --tiny --device cpu  # check it runs

Models (random weights, built with ComfyUI's own classes, nothing downloaded):

- CogVideoX-5B: 42 layers, 48 heads × 64, 480×720×49 (13 latent frames, 17,550 video tokens), 226 text
  tokens, one reference image (1,350 tokens), bf16;
- Wan 2.1 1.3B: 30 layers, 12 heads × 128, 480×832×81 (21 latent frames, 32,760 video tokens), 512
  text tokens, one reference image (1,560 tokens), bf16.

Backends: ComfyUI's ``attention_pytorch`` (SDPA) always; ``attention_sage`` and ``attention_flash`` when
their library imports. The backend is switched for the benchmark only, by rebinding the name the model
modules call. Issue #11's GPU targets: ≤ 1.15× step time and ≤ 1.05× peak memory with one reference.
The run stops starting new rows once ``--budget-s`` seconds have passed (default 420: inside 8 min).

The variants are ``sampling_step.py``'s "no reference", "reference, TAB 0" (here "reference") and
"reference + TAB 2 + ERAE" (here "reference + TAB + ERAE"), one cfg step each as there; models, variants
and the step come from ``benchmarks/_host_models.py``. The variants run interleaved, one step each per
round; "× no ref" (time) is the median of the per-round ratios (``Measurement.ratio_to``, as in the other
scripts), "× no ref" (memory) the ratio of the step peaks. ``--tiny --device cpu --repeats 1`` checks the
script end to end on the CPU in seconds (CI's smoke run does; sage and flash are skipped where they do
not import).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parent))
from _host_models import (
    HOST_FAMILIES,
    build_model,
    cogvideox_arguments,
    comfyui_path,
    import_comfy,
    latent_shape,
    model_module,
    reference_variants,
    sampling_step,
    wan_arguments,
)
from _table import format_table, memory, ratio
from _timing import compare, synchronize

logger = logging.getLogger("benchmarks.gpu_step")


@dataclass(frozen=True)
class ModelSize:
    """A host model at one video size."""

    name: str
    family: str  # "cogvideox" | "wan": which ComfyUI class builds it
    layers: int
    heads: int
    head_dim: int
    width: int
    height: int
    frames: int
    text_tokens: int
    text_dim: int
    ffn_dim: int = 0  # Wan only

    @property
    def latent_shape(self) -> tuple[int, int, int, int, int]:
        return latent_shape(self.height, self.width, self.frames)

    def arguments(self) -> dict:
        """The arguments of ComfyUI's class for this size."""
        if self.family == "wan":
            return wan_arguments(
                heads=self.heads, head_dim=self.head_dim, layers=self.layers, ffn_dim=self.ffn_dim
            )
        return cogvideox_arguments(
            heads=self.heads, head_dim=self.head_dim, layers=self.layers, text_dim=self.text_dim
        )

    def describe(self) -> str:
        _, _, frames, height, width = self.latent_shape
        video = frames * (height // 2) * (width // 2)
        return (
            f"{self.name}: {self.layers} layers, {self.heads}×{self.head_dim} heads, {self.width}×{self.height}"
            f"×{self.frames} ({video} video tokens + {(height // 2) * (width // 2)} reference tokens)"
        )


REAL_SIZES = (
    ModelSize("CogVideoX-5B", "cogvideox", 42, 48, 64, 720, 480, 49, 226, 4096),
    ModelSize("Wan 2.1 1.3B", "wan", 30, 12, 128, 832, 480, 81, 512, 4096, ffn_dim=8960),
)
TINY_SIZES = (
    ModelSize("tiny CogVideoX", "cogvideox", 2, 2, 64, 96, 64, 9, 16, 64),
    ModelSize("tiny Wan", "wan", 2, 2, 128, 96, 64, 9, 16, 4096, ffn_dim=256),  # Wan detection: text dim 4096
)
VARIANTS = {
    "no reference": "no reference",
    "reference": "reference, TAB 0",
    "reference + TAB + ERAE": "reference + TAB 2 + ERAE",
}
"""Row label -> ``_host_models.REFERENCE_VARIANTS`` name."""
BACKENDS = {"sdpa": "attention_pytorch", "sage": "attention_sage", "flash": "attention_flash"}
"""Row label -> ComfyUI backend function in ``comfy.ldm.modules.attention``."""
BACKEND_LIBRARIES = {"sage": "sageattention", "flash": "flash_attn"}
HEADER = (
    "model",
    "backend",
    "variant",
    "step s",
    "× no ref",
    "step peak GiB",
    "× no ref",
    "total peak GiB",
)


def variants(pack, model, size: ModelSize) -> dict:
    """The three rows' models: the base model and two reference-patched variants of it."""
    found = reference_variants(pack, model, size.height, size.width, tuple(VARIANTS.values()))
    return {label: found[name] for label, name in VARIANTS.items()}


def total_peak_bytes(step: Callable[[], object], device: torch.device) -> int | None:
    """Peak allocated bytes during one step, weights included (CUDA only)."""
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def available_backends(names: list[str]) -> list[str]:
    found = []
    for name in names:
        library = BACKEND_LIBRARIES.get(name)
        if library is not None:
            try:
                importlib.import_module(library)
            except Exception as error:  # an installed-but-broken CUDA extension raises more than ImportError
                logger.warning("backend %s skipped: %s does not import (%s)", name, library, error)
                continue
        found.append(name)
    return found


def use_backend(backend: str) -> None:
    """Point the model modules' ``optimized_attention`` at ComfyUI's ``backend`` (benchmark only)."""
    attention = importlib.import_module("comfy.ldm.modules.attention")
    function = getattr(attention, BACKENDS[backend])
    for family in HOST_FAMILIES:
        importlib.import_module(model_module(family)).optimized_attention = function


def run(options: argparse.Namespace, comfyui: Path) -> None:
    started = time.monotonic()
    device = torch.device(options.device)
    dtype = torch.float32 if options.tiny else torch.bfloat16
    pack = import_comfy(comfyui, options.device)
    sizes = TINY_SIZES if options.tiny else REAL_SIZES
    backends = available_backends(options.backends.split(","))
    rows: list[list[str]] = []
    for size in sizes:
        if time.monotonic() - started > options.budget_s:
            print(f"budget of {options.budget_s} s spent: {size.name} skipped")
            continue
        print(size.describe(), flush=True)
        model = build_model(size.family, size.arguments(), dtype)
        for backend in backends:
            if time.monotonic() - started > options.budget_s:
                print(f"budget of {options.budget_s} s spent: {size.name} on {backend} skipped")
                continue
            use_backend(backend)
            steps = {
                name: sampling_step(m, size.latent_shape, size.text_tokens, size.text_dim, dtype)
                for name, m in variants(pack, model, size).items()
            }
            results = compare(steps, device, warmup=1, repeats=options.repeats)
            base = results["no reference"]
            for name, measured in results.items():
                total = total_peak_bytes(steps[name], device)
                rows.append(
                    [
                        size.name,
                        backend,
                        name,
                        f"{measured.median_seconds:.3f}",
                        f"{measured.ratio_to(base):.2f}",
                        memory(measured.peak_bytes, 2**30, 2),
                        ratio(measured.peak_bytes, base.peak_bytes),
                        memory(total, 2**30, 2),
                    ]
                )
            print(format_table(HEADER, rows[-len(results) :], markdown=options.markdown), flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\n{name}, torch {torch.__version__}, {dtype}, cfg batch of 2, {time.monotonic() - started:.0f} s")
    print(format_table(HEADER, rows, markdown=options.markdown))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny models (checks the script end to end)")
    parser.add_argument(
        "--backends", default="sdpa,sage,flash", help="comma-separated subset of sdpa,sage,flash"
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=420.0)
    parser.add_argument("--markdown", action="store_true")
    options = parser.parse_args(argv)
    comfyui = comfyui_path(parser)
    if not options.tiny and options.device != "cuda":
        parser.error("the real sizes need a CUDA device; use --tiny to check the script on the CPU")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(options, comfyui)


if __name__ == "__main__":
    main()
