"""Helpers shared by the node host tests: the pack's modules, tiny models, references, sampling.

Imports ComfyUI only inside functions (this module is collected by the unit tier too).
"""

from __future__ import annotations

import contextlib
import importlib
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tiny_models import TINY_TEXT_DIM

GRAPH_NODE_IDS = frozenset(
    {
        "LoadCustomVideoX",
        "CustomVideoXReferenceEncode",
        "CustomVideoXTimeAwareBias",
        "CustomVideoXERAEMask",
        "CustomVideoXSample",
        "CustomVideoXApply",
        "CustomVideoXScore",
    }
)
"""The pack's nodes the example graphs are built from."""
PACK_NODE_IDS = GRAPH_NODE_IDS | {
    "CustomVideoXTrainAdapter",
    "CustomVideoXTrainSettings",
    "CustomVideoXReferenceConditioning",
    "CustomVideoXLoadConcatID",
    "CustomVideoXLoadConcatIDWan",
    "CustomVideoXLoadStandIn",
    "CustomVideoXApplyStandIn",
    "CustomVideoXLoadFaceModel",
    "CustomVideoXReferenceGuider",
}
"""Every node id the pack registers (frozen once released: saved workflows refer to them)."""
VIDEO_WIDTH, VIDEO_HEIGHT, VIDEO_FRAMES = 96, 64, 5
LATENT_SHAPE = (1, 16, 2, 8, 12)


@dataclass(frozen=True)
class Pack:
    """The pack's modules as ComfyUI loaded them (module names derive from the repo path)."""

    patch: types.ModuleType
    types: types.ModuleType
    tab: types.ModuleType
    erae: types.ModuleType
    hosts: types.ModuleType
    adapter_file: types.ModuleType

    @classmethod
    def of(cls, pack_module: types.ModuleType) -> Pack:
        return cls(**vars(pack_modules(pack_module, PACK_MODULES)))


PACK_MODULES = {
    "patch": "nodes.patch",
    "types": "nodes.types",
    "tab": "customvideox_core.tab",
    "erae": "customvideox_core.erae",
    "hosts": "customvideox_core.host_signature",
    "adapter_file": "customvideox_core.adapter_file",
}


STANDIN_MODULES = {
    "patch": "nodes.patch",
    "types": "nodes.types",
    "standin_nodes": "nodes.standin_nodes",
    "standin_patch": "nodes.standin_patch",
    "lora": "customvideox_core.standin.lora_file",
    "branch": "customvideox_core.standin.branch",
    "tab": "customvideox_core.tab",
    "erae": "customvideox_core.erae",
}
"""The modules the Stand-In host tests reach (``pack_modules``)."""


def pack_modules(pack_module: types.ModuleType, paths: dict[str, str]) -> types.SimpleNamespace:
    """``{name: dotted path under the pack}`` → the modules as ComfyUI loaded them (relative imports need
    the pack as their parent, so they are imported under its module name)."""
    return types.SimpleNamespace(
        **{name: importlib.import_module(f"{pack_module.__name__}.{path}") for name, path in paths.items()}
    )


def load_model(directory: Path, name: str):
    import comfy.sd

    return comfy.sd.load_diffusion_model(str(directory / name))


def load_vae(directory: Path, name: str):
    import comfy.sd
    import comfy.utils

    return comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(directory / name)))


def conditioning(seed: int, length: int = 6) -> list:
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, length, TINY_TEXT_DIM, generator=generator), {}]]


def random_conditioning_node(seed: int, length: int) -> dict:
    """An API-graph entry for the fixture pack's ``CVXTestRandomConditioning`` at the tiny models' text width."""
    return {
        "class_type": "CVXTestRandomConditioning",
        "inputs": {"seed": seed, "length": length, "dim": TINY_TEXT_DIM},
    }


def ksampler_node(
    model: list, positive: list, negative: list, latent: list, *, seed: int, steps: int, cfg: float
) -> dict:
    """An API-graph entry for core's KSampler on the given wires: euler, simple schedule, full denoise."""
    return {
        "class_type": "KSampler",
        "inputs": {
            "model": model,
            "seed": seed,
            "steps": steps,
            "cfg": cfg,
            "sampler_name": "euler",
            "scheduler": "simple",
            "positive": positive,
            "negative": negative,
            "latent_image": latent,
            "denoise": 1.0,
        },
    }


def constant_tab_node(peak: float) -> dict:
    """An API-graph entry for CustomVideoX TimeAwareBias: a constant ``peak`` over the whole run."""
    return {
        "class_type": "CustomVideoXTimeAwareBias",
        "inputs": {
            "shape": "constant",
            "peak": peak,
            "floor": 0.0,
            "start": 0.0,
            "end": 1.0,
            "custom_values": "",
        },
    }


def reference_images(count: int, *, seed: int = 0, height: int = VIDEO_HEIGHT, width: int = VIDEO_WIDTH):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, height, width, 3, generator=generator)


def sample(
    model,
    *,
    seed: int = 3,
    steps: int = 2,
    cfg: float = 2.0,
    latent: torch.Tensor | None = None,
    positive: list | None = None,
    negative: list | None = None,
):
    """Two euler steps with random text (or the given conditionings), as KSampler would run them."""
    import comfy.sample

    latent = torch.zeros(LATENT_SHAPE) if latent is None else latent
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(
        model,
        noise,
        steps,
        cfg,
        "euler",
        "simple",
        conditioning(1) if positive is None else positive,
        conditioning(2) if negative is None else negative,
        latent,
        disable_pbar=True,
        seed=seed,
    )


def euler_sigmas(model, steps: int) -> torch.Tensor:
    """The ``steps + 1`` sigmas KSampler runs for ``model`` with euler, the simple scheduler, denoise 1."""
    import comfy.samplers

    return comfy.samplers.KSampler(
        model,
        steps=steps,
        device=model.load_device,
        sampler="euler",
        scheduler="simple",
        denoise=1.0,
        model_options=model.model_options,
    ).sigmas


def guided_sample(guider, model, steps: int, *, seed: int = 3) -> torch.Tensor:
    """``guider`` (a core ``CFGGuider`` or subclass) run as SamplerCustom would: euler over
    :func:`euler_sigmas`, from a zero latent of ``LATENT_SHAPE`` and the seed's noise."""
    import comfy.sample
    import comfy.samplers

    latent = torch.zeros(LATENT_SHAPE)
    noise = comfy.sample.prepare_noise(latent, seed)
    return guider.sample(
        noise,
        latent,
        comfy.samplers.sampler_object("euler"),
        euler_sigmas(model, steps),
        disable_pbar=True,
        seed=seed,
    )


SCORE_SETTINGS = {"region": "full", "frame_stride": 1, "center_crop": True}
"""CustomVideoX Score's widget defaults: whole frames, every frame, centre crop."""


def score_graph(
    reference_image: str, frames: int, clip_vision: str, encoder: dict, encoder_input: str
) -> dict:
    """An API graph scoring ``frames`` copies of the uploaded ``reference_image`` against it.

    1 LoadImage, 2 RepeatImageBatch, 3 the fixture pack's tiny CLIP vision ``clip_vision``, 4 ``encoder``
    (wired into Score's ``encoder_input``), 5 CustomVideoX Score (its summary: ``ui_outputs["5"]``).
    """
    links = {"frames": ["2", 0], "reference": ["1", 0], "clip_vision": ["3", 0], encoder_input: ["4", 0]}
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": reference_image}},
        "2": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": frames}},
        "3": {"class_type": "CVXTestTinyClipVisionLoader", "inputs": {"clip_name": clip_vision}},
        "4": encoder,
        "5": {"class_type": "CustomVideoXScore", "inputs": {**links, **SCORE_SETTINGS}},
    }


def constant_tab_patch(
    pack, model, reference, peak: float, *, erae=None, uncond_sees_reference: bool = False
):
    """``model`` patched by the pack's ``apply_reference_patch`` with ``reference`` at a constant TAB ``peak``
    (``pack``: anything with the pack's ``patch`` and ``tab`` modules)."""
    tab = pack.tab.TABSchedule(shape="constant", peak=peak)
    return pack.patch.apply_reference_patch(
        model, reference, tab=tab, erae=erae, uncond_sees_reference=uncond_sees_reference
    )


def model_fingerprint(model) -> dict:
    """What must not change on an input MODEL: its options, patches, wrappers and weights."""
    weights = model.model.diffusion_model.state_dict()
    return {
        "options": repr(sorted(model.model_options.get("transformer_options", {}).keys())),
        "option_keys": repr(sorted(model.model_options.keys())),
        "patches": len(model.patches),
        "wrappers": repr(model.wrappers),
        "weights": {name: tensor.clone() for name, tensor in weights.items()},
    }


def assert_same_fingerprint(before: dict, after: dict) -> None:
    assert before["options"] == after["options"]
    assert before["option_keys"] == after["option_keys"]
    assert before["patches"] == after["patches"]
    assert before["wrappers"] == after["wrappers"]
    for name, tensor in before["weights"].items():
        assert torch.equal(tensor, after["weights"][name]), f"weight {name} changed"


@contextlib.contextmanager
def left_untouched(model) -> Iterator[None]:
    """Asserts after the block that ``model`` kept its options, patches, wrappers and weights."""
    before = model_fingerprint(model)
    yield
    assert_same_fingerprint(before, model_fingerprint(model))
