"""LoadCustomVideoX: host MODEL + adapter file → MODEL with the adapter on it as its reference layout
wants: ``joint``, the LoRA through ``add_patches`` and the reference wrappers installed; ``cached``, no
weight patched and the reference-only LoRA carried for Apply/Sample (``nodes/cached_layout.py``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import comfy.lora
import folder_paths
from comfy_api.latest import io, ui

from ..customvideox_core.adapter_file import check_adapter_host, load_adapter
from ..customvideox_core.constants import ADAPTER_EXTENSIONS, MODEL_FOLDER
from ..customvideox_core.host_signature import HostSignature
from ..customvideox_core.lora_keys import to_comfy_lora
from ..customvideox_core.reference_layouts import DEFAULT_LAYOUT, reference_layout
from .cached_layout import attach_cached_adapter
from .finite_inputs import finite_float_inputs
from .host_model import host_signature
from .patch import install_machinery

logger = logging.getLogger(__name__)

NO_ADAPTER = "none"
ADAPTER_FOLDERS = (MODEL_FOLDER, "loras")


def adapter_choices() -> list[str]:
    """``none`` plus the safetensors files of models/customvideox and models/loras (customvideox first)."""
    names: list[str] = []
    for folder in ADAPTER_FOLDERS:
        try:
            listed = folder_paths.get_filename_list(folder)
        except KeyError:
            continue
        names.extend(n for n in listed if n.lower().endswith(ADAPTER_EXTENSIONS) and n not in names)
    return [NO_ADAPTER, *names]


def adapter_path(name: str) -> str:
    for folder in ADAPTER_FOLDERS:
        try:
            path = folder_paths.get_full_path(folder, name)
        except KeyError:
            continue
        if path is not None:
            return path
    raise FileNotFoundError(
        f"adapter '{name}' was not found in models/customvideox or models/loras; put the .safetensors file "
        "there and refresh the node list (press R in the editor)"
    )


@dataclass(frozen=True)
class AppliedAdapter:
    """A patched clone and how the LoRA mapped onto it: ``layers`` patched, adapter keys ``unmatched``,
    and how the user reads it (``summary``)."""

    model: object
    layers: int
    unmatched: tuple[str, ...]
    summary: str


def _apply_joint(model, host: HostSignature, state_dict: Mapping, strength: float, source: str):
    """The joint layout: the machinery installed and the LoRA added through ``add_patches``."""
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    weights = model.model.state_dict()
    shapes = {
        module: tuple(weights[target].shape)
        for module, target in key_map.items()
        if target in weights and weights[target].ndim == 2
    }
    converted = to_comfy_lora(dict(state_dict), host.family, known_modules=set(key_map), known_shapes=shapes)
    if converted.mismatched:
        shown = "; ".join(converted.mismatch_details[:3])
        more = (
            f" (+{len(converted.mismatch_details) - 3} more)" if len(converted.mismatch_details) > 3 else ""
        )
        raise ValueError(
            f"{source} does not fit this {host.variant}: "
            f"{len(converted.mismatch_details)} layers have other shapes: {shown}{more}. It was trained for "
            "another model; load it with the model it was trained for."
        )
    patched = model.clone()
    install_machinery(patched, host)
    patches = comfy.lora.load_lora(converted.state_dict, key_map, log_missing=False)
    patched.add_patches(patches, strength)
    return AppliedAdapter(
        model=patched,
        layers=len(patches),
        unmatched=tuple(converted.unmatched),
        summary=f"{len(patches)} layers patched from {source}",
    )


def _apply_cached(model, host: HostSignature, state_dict: Mapping, strength: float, source: str):
    """The cached layout: no weight patched; the LoRA rides on the clone for Apply/Sample's branch."""
    patched, adapter = attach_cached_adapter(model, host, state_dict, strength, source)
    layers = len(adapter.lora.pairs)
    return AppliedAdapter(
        model=patched, layers=layers, unmatched=(), summary=f"{adapter.summary} from {source}"
    )


_APPLY_LAYOUT = {"joint": _apply_joint, "cached": _apply_cached}
"""Reference layout (``customvideox_core.reference_layouts``) → how its adapter goes onto a MODEL."""


def apply_adapter(
    model,
    host: HostSignature,
    state_dict: Mapping,
    strength: float,
    *,
    layout: str = DEFAULT_LAYOUT,
    source: str = "the adapter",
) -> AppliedAdapter:
    """The one adapter → MODEL path (this node, and the Train Adapter node's output MODEL): a clone of
    ``model`` with the adapter on it as its reference ``layout`` wants."""
    return _APPLY_LAYOUT[reference_layout(layout).name](model, host, state_dict, strength, source)


@finite_float_inputs
class LoadCustomVideoX(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoadCustomVideoX",
            display_name="Load CustomVideoX",
            category="CustomVideoX",
            description=(
                "Prepares a CogVideoX or Wan model for subject-customized video: applies a CustomVideoX "
                "adapter (LoRA on the attention projections) and installs the 3D reference attention. "
                "Choose 'none' to run training-free."
            ),
            inputs=[
                io.Model.Input(
                    "model", tooltip="A native ComfyUI CogVideoX (2B/5B/1.5) or Wan 2.1/2.2 model."
                ),
                io.Combo.Input(
                    "adapter",
                    options=adapter_choices(),
                    default=NO_ADAPTER,
                    tooltip="Adapter file from models/customvideox or models/loras (safetensors). "
                    "'none' = training-free reference attention.",
                ),
                io.Float.Input(
                    "strength",
                    default=1.0,
                    min=-4.0,
                    max=4.0,
                    step=0.05,
                    tooltip="LoRA strength: 1 = as trained, 0 = no LoRA.",
                ),
            ],
            outputs=[io.Model.Output(tooltip="The patched copy of the model (the input stays untouched).")],
        )

    @classmethod
    def execute(cls, model, adapter: str, strength: float) -> io.NodeOutput:
        host = host_signature(model)
        if adapter == NO_ADAPTER:
            patched = model.clone()
            install_machinery(patched, host)
            return io.NodeOutput(patched, ui=ui.PreviewText(f"{host.variant}: training-free (no adapter)"))
        state_dict, metadata = load_adapter(adapter_path(adapter))
        check_adapter_host(metadata, host)
        layout = metadata.reference_layout if metadata is not None else DEFAULT_LAYOUT
        applied = apply_adapter(
            model, host, state_dict, strength, layout=layout, source=os.path.basename(adapter)
        )
        if not applied.layers:
            raise ValueError(
                f"adapter '{adapter}' has no LoRA weights for this {host.variant}: none of its "
                f"{len(state_dict)} keys match the model's attention layers (first keys: "
                f"{', '.join(sorted(state_dict)[:3])})"
            )
        summary = f"{host.variant}: {applied.summary}"
        if applied.unmatched:
            shown = ", ".join(applied.unmatched[:5])
            more = f" (+{len(applied.unmatched) - 5} more)" if len(applied.unmatched) > 5 else ""
            logger.warning(
                "CustomVideoX adapter %s: %d keys match nothing: %s%s",
                adapter,
                len(applied.unmatched),
                shown,
                more,
            )
            summary += f"; {len(applied.unmatched)} keys match nothing: {shown}{more}"
        return io.NodeOutput(applied.model, ui=ui.PreviewText(summary))
