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
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parent))
from _timing import compare, synchronize
from sampling_step import import_comfy

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
        return (1, 16, (self.frames - 1) // 4 + 1, self.height // 8, self.width // 8)

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
BACKENDS = {"sdpa": "attention_pytorch", "sage": "attention_sage", "flash": "attention_flash"}
"""Row label -> ComfyUI backend function in ``comfy.ldm.modules.attention``."""
BACKEND_LIBRARIES = {"sage": "sageattention", "flash": "flash_attn"}
MODEL_MODULES = {"cogvideox": "comfy.ldm.cogvideo.model", "wan": "comfy.ldm.wan.model"}


def module_class(family: str):
    if family == "cogvideox":
        from comfy.ldm.cogvideo.model import CogVideoXTransformer3DModel

        return CogVideoXTransformer3DModel
    from comfy.ldm.wan.model import WanModel

    return WanModel


MODEL_ARGUMENTS: dict[str, Callable[[ModelSize], dict]] = {
    "cogvideox": lambda size: {
        "num_attention_heads": size.heads,
        "attention_head_dim": size.head_dim,
        "num_layers": size.layers,
        "text_embed_dim": size.text_dim,
        "use_rotary_positional_embeddings": True,
    },
    "wan": lambda size: {
        "model_type": "t2v",
        "dim": size.heads * size.head_dim,
        "ffn_dim": size.ffn_dim,
        "num_heads": size.heads,
        "num_layers": size.layers,
        "text_dim": size.text_dim,
    },
}


def build_model(size: ModelSize, dtype: torch.dtype):
    """Random weights of ``size`` (std 0.02) as a ComfyUI ModelPatcher, through ComfyUI's own loader."""
    import comfy.ops
    import comfy.sd

    with torch.device("meta"):
        shapes = module_class(size.family)(
            **MODEL_ARGUMENTS[size.family](size), operations=comfy.ops.disable_weight_init
        ).state_dict()
    generator = torch.Generator().manual_seed(0)
    state_dict = {
        name: (
            torch.randn(tensor.shape, generator=generator, dtype=dtype) * (0.02 if tensor.ndim >= 2 else 0.01)
        )
        for name, tensor in shapes.items()
    }
    return comfy.sd.load_diffusion_model_state_dict(state_dict, model_options={"dtype": dtype})


def variants(pack, model, size: ModelSize) -> dict:
    patch = importlib.import_module(f"{pack.__name__}.nodes.patch")
    types = importlib.import_module(f"{pack.__name__}.nodes.types")
    tab = importlib.import_module(f"{pack.__name__}.customvideox_core.tab")
    erae = importlib.import_module(f"{pack.__name__}.customvideox_core.erae")
    _, channels, _, latent_h, latent_w = size.latent_shape
    reference = types.ReferenceLatents(
        latents=torch.randn(1, channels, 1, latent_h, latent_w),
        masks=torch.ones(1, size.height, size.width),
        source_size=(size.height, size.width),
        fit="pad",
    )

    def patched(peak: float, config):
        return patch.apply_reference_patch(
            model,
            reference,
            tab=tab.TABSchedule(shape="parabolic", peak=peak, floor=peak / 4),
            erae=config,
            uncond_sees_reference=False,
        )

    return {
        "no reference": model,
        "reference": patched(0.0, None),
        "reference + TAB + ERAE": patched(2.0, erae.ERAEConfig(entity_positions=(3, 7), gamma=1.0)),
    }


def step_function(model, size: ModelSize, dtype: torch.dtype):
    import comfy.sample

    latent = torch.zeros(size.latent_shape)
    noise = comfy.sample.prepare_noise(latent, 0)
    generator = torch.Generator().manual_seed(1)
    positive, negative = (
        [[torch.randn(1, size.text_tokens, size.text_dim, generator=generator).to(dtype), {}]]
        for _ in range(2)
    )

    def step():
        with torch.inference_mode():
            return comfy.sample.sample(
                model, noise, 1, 6.0, "euler", "simple", positive, negative, latent, disable_pbar=True, seed=0
            )

    return step


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
    for module in MODEL_MODULES.values():
        importlib.import_module(module).optimized_attention = function


def format_rows(rows: list[list[str]], markdown: bool) -> str:
    header = [
        "model",
        "backend",
        "variant",
        "step s",
        "× no ref",
        "step peak GiB",
        "× no ref",
        "total peak GiB",
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows])


def run(options: argparse.Namespace) -> None:
    started = time.monotonic()
    device = torch.device(options.device)
    dtype = torch.float32 if options.tiny else torch.bfloat16
    pack = import_comfy(Path(os.environ["COMFYUI_PATH"]).expanduser(), options.device)
    sizes = TINY_SIZES if options.tiny else REAL_SIZES
    backends = available_backends(options.backends.split(","))
    rows: list[list[str]] = []
    for size in sizes:
        if time.monotonic() - started > options.budget_s:
            print(f"budget of {options.budget_s} s spent: {size.name} skipped")
            continue
        print(size.describe(), flush=True)
        model = build_model(size, dtype)
        for backend in backends:
            if time.monotonic() - started > options.budget_s:
                print(f"budget of {options.budget_s} s spent: {size.name} on {backend} skipped")
                continue
            use_backend(backend)
            steps = {name: step_function(m, size, dtype) for name, m in variants(pack, model, size).items()}
            results = compare(steps, device, warmup=1, repeats=options.repeats)
            base = results["no reference"]
            for name, measured in results.items():
                total = total_peak_bytes(steps[name], device)
                peak = measured.peak_bytes
                rows.append(
                    [
                        size.name,
                        backend,
                        name,
                        f"{measured.median_seconds:.3f}",
                        f"{measured.median_seconds / base.median_seconds:.2f}",
                        "n/a" if peak is None else f"{peak / 2**30:.2f}",
                        "n/a" if peak is None or not base.peak_bytes else f"{peak / base.peak_bytes:.2f}",
                        "n/a" if total is None else f"{total / 2**30:.2f}",
                    ]
                )
            print(format_rows(rows[-len(results) :], options.markdown), flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\n{name}, torch {torch.__version__}, {dtype}, cfg batch of 2, {time.monotonic() - started:.0f} s")
    print(format_rows(rows, options.markdown))


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
    comfyui_path = Path(os.environ.get("COMFYUI_PATH", "")).expanduser()
    if not (comfyui_path / "comfyui_version.py").is_file():
        parser.error("set COMFYUI_PATH to a ComfyUI checkout and run with the Python that runs it")
    if not options.tiny and options.device != "cuda":
        parser.error("the real sizes need a CUDA device; use --tiny to check the script on the CPU")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(options)


if __name__ == "__main__":
    main()
