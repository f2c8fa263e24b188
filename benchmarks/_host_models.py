"""The benchmarks' ComfyUI side, in one place: import ComfyUI with the pack loaded, build random-weight
host models from ComfyUI's own classes, patch them with a reference, and run one cfg sampling step.

Nothing of ComfyUI is copied and nothing is downloaded: a model's tensor shapes come from ComfyUI's own
``CogVideoXTransformer3DModel`` / ``WanModel`` built on the ``meta`` device, the weights are random
(std 0.02 for matrices, 0.01 for vectors, float32 draws cast to the dtype, seed 0), and ComfyUI's own
``load_diffusion_model_state_dict`` turns them into a ``ModelPatcher`` (so detection, the model class
and the patcher are exactly what Load Diffusion Model gives).

Used by the benchmark scripts (and by host tests that count model calls: ``counted_clone``); the
scripts take the checkout from ``COMFYUI_PATH`` (``comfyui_path``, or ``preset_parser`` + ``start_comfy``
for the preset scripts) and must run with the Python that runs that ComfyUI.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO_ROOT))

from customvideox_core.host_specs import HOST_SPECS, spec_for  # noqa: E402  (the checkout's own core)

HOST_FAMILIES = tuple(HOST_SPECS)
"""The host model families (``"cogvideox"``, ``"wan"``), as the host specs name them."""

WAN_TEXT_DIM = 4096  # Wan's umT5 width; ComfyUI detects Wan by it (it does not infer it from the weights)

# Reference variants of ``reference_variants``: (TAB peak, ERAE on, the unconditional pass sees the
# reference). TAB is parabolic with floor peak / 4; ERAE marks entity tokens 3 and 7 with gamma 1.
REFERENCE_VARIANTS: dict[str, tuple[float, bool, bool] | None] = {
    "no reference": None,
    "reference, TAB 0": (0.0, False, False),
    "reference + TAB 2": (2.0, False, False),
    "reference + TAB 2 + ERAE": (2.0, True, False),
    "reference + TAB 2 + ERAE, uncond sees": (2.0, True, True),
}


def preset_parser(doc: str, presets: dict, default: str, *, device: bool = True) -> argparse.ArgumentParser:
    """The options of a benchmark run by preset: ``--preset``, ``--device`` (``device``: it can run on
    CUDA; the default is CUDA when there is one), ``--repeats``, ``--threads`` and ``--markdown``; the
    description is the first paragraph of the script's ``doc``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(presets), default=default)
    if device:
        parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--markdown", action="store_true")
    return parser


def start_comfy(parser: argparse.ArgumentParser, options: argparse.Namespace, device: str, **comfy):
    """After ``preset_parser``'s options are read: the ``--threads`` setting, warnings-only logging and
    ComfyUI imported on ``device`` (``comfy``: ``import_comfy``'s options); returns the pack's module."""
    comfyui = comfyui_path(parser)
    if options.threads:
        torch.set_num_threads(options.threads)
    logging.basicConfig(level=logging.WARNING)
    return import_comfy(comfyui, device, **comfy)


def run_environment(dtype: torch.dtype, device: torch.device) -> str:
    """The setting a timing was taken in, for the line above a table: dtype, device, torch, threads."""
    return f"{dtype}, device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}"


def comfyui_path(parser: argparse.ArgumentParser) -> Path:
    """``COMFYUI_PATH`` as a checkout, or the parser's usage error saying how to set it."""
    path = Path(os.environ.get("COMFYUI_PATH", "")).expanduser()
    if not (path / "comfyui_version.py").is_file():
        parser.error("set COMFYUI_PATH to a ComfyUI checkout and run with the Python that runs it")
    return path


def import_comfy(comfyui: Path, device: str, pytorch_attention: bool = True):
    """Import ComfyUI (CPU mode on the CPU) and load the pack; returns the pack's module. ``pytorch_attention``:
    run ComfyUI's SDPA backend as on a GPU (``--use-pytorch-cross-attention``); on the CPU ComfyUI
    otherwise picks sub-quad."""
    sys.path.insert(0, str(comfyui))
    from comfy.cli_args import args

    args.cpu = device == "cpu"
    args.use_pytorch_cross_attention = pytorch_attention
    import nodes

    if not asyncio.run(nodes.load_custom_node(str(REPO_ROOT))):
        raise RuntimeError(f"ComfyUI could not load the pack at {REPO_ROOT}")
    return sys.modules[str(REPO_ROOT).replace(".", "_x_")]


def pack_module(pack, name: str):
    """One of the pack's modules (``"nodes.patch"``, ``"customvideox_core.tab"``...) as ComfyUI loaded it."""
    return importlib.import_module(f"{pack.__name__}.{name}")


def attention_backend() -> str:
    """The name of ComfyUI's ``optimized_attention`` (the backend the model modules call)."""
    import comfy.ldm.modules.attention as attention

    return attention.optimized_attention.__name__


def cogvideox_arguments(*, heads: int, head_dim: int, layers: int, text_dim: int) -> dict:
    """Arguments of ComfyUI's ``CogVideoXTransformer3DModel`` (RoPE, as CogVideoX-5B)."""
    return {
        "num_attention_heads": heads,
        "attention_head_dim": head_dim,
        "num_layers": layers,
        "text_embed_dim": text_dim,
        "use_rotary_positional_embeddings": True,
    }


def wan_arguments(*, heads: int, head_dim: int, layers: int, ffn_dim: int) -> dict:
    """Arguments of ComfyUI's ``WanModel`` (Wan 2.1 T2V; text width ``WAN_TEXT_DIM``)."""
    return {
        "model_type": "t2v",
        "dim": heads * head_dim,
        "ffn_dim": ffn_dim,
        "num_heads": heads,
        "num_layers": layers,
        "text_dim": WAN_TEXT_DIM,
    }


def module_class(family: str):
    """ComfyUI's DiT class of a host ``family`` (one of :data:`HOST_FAMILIES`): its host spec's first class."""
    return getattr(
        importlib.import_module(model_module(family)), spec_for(family).dit_classes[0].rpartition(".")[2]
    )


def model_module(family: str) -> str:
    """The name of the ComfyUI module that defines ``family``'s DiT class."""
    return spec_for(family).dit_classes[0].rpartition(".")[0]


def weight_shapes(family: str, arguments: dict) -> dict[str, torch.Size]:
    """Name → shape of every weight of ComfyUI's ``family`` class built with ``arguments`` (built on the
    meta device: nothing allocated)."""
    import comfy.ops

    with torch.device("meta"):
        shapes = module_class(family)(**arguments, operations=comfy.ops.disable_weight_init).state_dict()
    return {name: tensor.shape for name, tensor in shapes.items()}


def load_model(state_dict: dict, dtype: torch.dtype):
    """``state_dict`` as a ComfyUI ``ModelPatcher`` of ``dtype``, through ComfyUI's own loader."""
    import comfy.sd

    return comfy.sd.load_diffusion_model_state_dict(state_dict, model_options={"dtype": dtype})


def random_state_dict(family: str, arguments: dict, dtype: torch.dtype, seed: int = 0) -> dict:
    """Random weights in the shapes of ComfyUI's ``family`` class built with ``arguments``."""
    generator = torch.Generator().manual_seed(seed)
    return {
        name: (torch.randn(shape, generator=generator) * (0.02 if len(shape) >= 2 else 0.01)).to(dtype)
        for name, shape in weight_shapes(family, arguments).items()
    }


def build_model(family: str, arguments: dict, dtype: torch.dtype):
    """A random-weight host model as a ComfyUI ``ModelPatcher``, through ComfyUI's own loader."""
    return load_model(random_state_dict(family, arguments, dtype), dtype)


def reference_latents(pack, height: int, width: int, generator: torch.Generator | None = None):
    """A random one-image reference (``ReferenceEncode``'s output) of ``height × width`` pixels."""
    types = pack_module(pack, "nodes.types")
    return types.ReferenceLatents(
        latents=torch.randn(1, 16, 1, height // 8, width // 8, generator=generator),
        masks=torch.ones(1, height, width),
        source_size=(height, width),
        fit="pad",
    )


def reference_variants(pack, model, height: int, width: int, selected: tuple[str, ...]) -> dict:
    """``model`` and its reference-patched variants named in ``selected`` (keys of ``REFERENCE_VARIANTS``),
    all with one random reference image at the video's size."""
    patch = pack_module(pack, "nodes.patch")
    tab = pack_module(pack, "customvideox_core.tab")
    erae = pack_module(pack, "customvideox_core.erae")
    reference = reference_latents(pack, height, width)
    entity = erae.ERAEConfig(entity_positions=(3, 7), gamma=1.0)
    found = {}
    for name in selected:
        settings = REFERENCE_VARIANTS[name]
        if settings is None:
            found[name] = model
            continue
        peak, with_erae, uncond_sees_reference = settings
        found[name] = patch.apply_reference_patch(
            model,
            reference,
            tab=tab.TABSchedule(shape="parabolic", peak=peak, floor=peak / 4),
            erae=entity if with_erae else None,
            uncond_sees_reference=uncond_sees_reference,
        )
    return found


def latent_shape(height: int, width: int, frames: int) -> tuple[int, int, int, int, int]:
    """The 16-channel video latent of ``frames`` frames of ``height × width`` (4× time, 8× space)."""
    return (1, 16, (frames - 1) // 4 + 1, height // 8, width // 8)


@dataclass(frozen=True)
class WanVideo:
    """A random-weight Wan 2.1 T2V (heads of 128) and the video it samples: the sizes the Wan benchmarks'
    presets share (their own settings follow in subclasses)."""

    layers: int
    dim: int
    ffn_dim: int
    width: int
    height: int
    frames: int
    text_tokens: int

    @property
    def latent_shape(self) -> tuple[int, int, int, int, int]:
        return latent_shape(self.height, self.width, self.frames)

    def build(self, dtype: torch.dtype):
        """The model as a ComfyUI ModelPatcher (``build_model``)."""
        arguments = wan_arguments(
            heads=self.dim // 128, head_dim=128, layers=self.layers, ffn_dim=self.ffn_dim
        )
        return build_model("wan", arguments, dtype)


class CallCounter:
    """``DIFFUSION_MODEL`` wrapper: counts the DiT's calls and the batch rows (passes) they run."""

    def __init__(self) -> None:
        self.calls = 0
        self.passes = 0

    def __call__(self, executor, *args, **kwargs):
        self.calls += 1
        self.passes += args[0].shape[0]
        return executor(*args, **kwargs)


def counted_clone(model):
    """A clone of ``model`` (a ModelPatcher) whose DiT calls a fresh :class:`CallCounter` counts, and
    that counter."""
    import comfy.patcher_extension

    counter = CallCounter()
    clone = model.clone()
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "cvx_count", counter)
    return clone, counter


def text_conditionings(text_tokens: int, text_dim: int, dtype: torch.dtype) -> tuple[list, list]:
    """``(positive, negative)`` conditionings of random ``(1, text_tokens, text_dim)`` text embeddings
    (seeded: the same every call)."""
    generator = torch.Generator().manual_seed(1)
    positive, negative = (
        [[torch.randn(1, text_tokens, text_dim, generator=generator).to(dtype), {}]] for _ in range(2)
    )
    return positive, negative


def sampling_step(
    model,
    shape: tuple[int, ...],
    text_tokens: int,
    text_dim: int,
    dtype: torch.dtype,
    *,
    steps: int = 1,
    cfg: float = 6.0,
) -> Callable[[], object]:
    """A cfg sampling as KSampler runs it (``comfy.sample.sample``, euler, simple scheduler) of a ``shape``
    latent: by default one step at cfg 6, one model call over the conditional and unconditional rows (at
    cfg 1 ComfyUI runs the conditional row alone)."""
    import comfy.sample

    latent = torch.zeros(shape)
    noise = comfy.sample.prepare_noise(latent, 0)
    positive, negative = text_conditionings(text_tokens, text_dim, dtype)

    def step():
        with torch.inference_mode():
            return comfy.sample.sample(
                model,
                noise,
                steps,
                cfg,
                "euler",
                "simple",
                positive,
                negative,
                latent,
                disable_pbar=True,
                seed=0,
            )

    return step
