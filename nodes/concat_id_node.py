"""CustomVideoXLoadConcatID: Concat-ID's SAT CogVideoX-5B checkpoint → a native ComfyUI CogVideoX MODEL.

The checkpoint (``.pt``/``.pth``/``.ckpt`` under ``models/diffusion_models``, e.g.
``Concat-ID/single-identity/1000/mp_rank_00_model_states.pt``) is read as plain tensors only
(``torch.load(weights_only=True)``), renamed to ComfyUI's layout in memory by
``customvideox_core.convert.sat_cogvideox`` and handed to ComfyUI's own
``comfy.sd.load_diffusion_model_state_dict``: the MODEL is exactly what Load Diffusion Model gives for
the converted safetensors file (``scripts/convert_concat_id.py``), without writing a second copy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import comfy.sd
import folder_paths
import torch
from comfy_api.latest import io, ui

from ..customvideox_core.constants import TORCH_CHECKPOINT_SUFFIXES
from ..customvideox_core.convert.checkpoint_io import load_tensor_checkpoint
from ..customvideox_core.convert.sat_cogvideox import convert_sat_cogvideox
from .finite_inputs import finite_float_inputs

logger = logging.getLogger(__name__)

CHECKPOINT_FOLDER = "diffusion_models"
WEIGHT_DTYPES = {
    "default": {},
    "fp8_e4m3fn": {"dtype": torch.float8_e4m3fn},
    "fp8_e4m3fn_fast": {"dtype": torch.float8_e4m3fn, "fp8_optimizations": True},
    "fp8_e5m2": {"dtype": torch.float8_e5m2},
}
"""The same weight-dtype choices as core's Load Diffusion Model (UNETLoader)."""


def checkpoint_choices(suffixes: Collection[str]) -> list[str]:
    """Files under models/diffusion_models with one of ``suffixes`` (default: the SAT ``.pt``/``.pth``/
    ``.ckpt`` checkpoints)."""
    try:
        names = folder_paths.get_filename_list(CHECKPOINT_FOLDER)
    except KeyError:
        return []
    return [name for name in names if Path(name).suffix.lower() in suffixes]


def load_sat_cogvideox(path: str, model_options: dict | None = None, disable_dynamic: bool = False):
    """Read, convert and load a SAT CogVideoX checkpoint; returns ComfyUI's ModelPatcher.

    Registered as the patcher's ``cached_patcher_init`` so that ComfyUI can rebuild the model from the
    file (multi-GPU clones, non-dynamic delegates, training copies) as it does for its own loaders.
    """
    options = dict(model_options or {})
    converted = convert_sat_cogvideox(load_tensor_checkpoint(path).tensors)
    patcher = comfy.sd.load_diffusion_model_state_dict(
        converted.tensors, model_options=options, disable_dynamic=disable_dynamic
    )
    if patcher is None or not type(patcher.model.model_config).__name__.startswith("CogVideoX"):
        detected = "nothing" if patcher is None else type(patcher.model.model_config).__name__
        raise ValueError(
            f"{path} converted to {len(converted.tensors)} CogVideoX weights, but ComfyUI detected "
            f"{detected}; this ComfyUI may be older than 0.21.0 (the first with native CogVideoX)"
        )
    patcher.cached_patcher_init = (load_sat_cogvideox, (path, options))
    return patcher


def checkpoint_inputs(suffixes: Collection[str], tooltip: str) -> list[io.Input]:
    """The inputs of both Concat-ID loaders: ``checkpoint`` (the files under models/diffusion_models with
    one of ``suffixes``, described by the loader's ``tooltip``) and ``weight_dtype`` (core Load Diffusion
    Model's choices)."""
    return [
        io.Combo.Input("checkpoint", options=checkpoint_choices(suffixes), tooltip=tooltip),
        io.Combo.Input(
            "weight_dtype",
            options=list(WEIGHT_DTYPES),
            default="default",
            tooltip="As in Load Diffusion Model: 'default' lets ComfyUI choose; fp8 halves memory.",
        ),
    ]


def checkpoint_output(
    checkpoint: str, weight_dtype: str, load: Callable[[str, dict], Any], summarize: Callable[[Any, str], str]
) -> io.NodeOutput:
    """What both Concat-ID loaders return: the MODEL ``load(path, options)`` gives for ``checkpoint``,
    with ``summarize(patcher, checkpoint)`` shown on the node and logged."""
    path, options = checkpoint_path_and_options(checkpoint, weight_dtype)
    patcher = load(path, options)
    summary = summarize(patcher, checkpoint)
    logger.info("%s (%s)", summary, path)
    return io.NodeOutput(patcher, ui=ui.PreviewText(summary))


def checkpoint_path_and_options(checkpoint: str, weight_dtype: str) -> tuple[str, dict]:
    """The full path of ``checkpoint`` under models/diffusion_models and ComfyUI's model options for
    ``weight_dtype``; a clear error for either that does not exist."""
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype {weight_dtype!r} is not one of {list(WEIGHT_DTYPES)}")
    return folder_paths.get_full_path_or_raise(CHECKPOINT_FOLDER, checkpoint), WEIGHT_DTYPES[weight_dtype]


@finite_float_inputs
class CustomVideoXLoadConcatID(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CustomVideoXLoadConcatID",
            display_name="Load Concat-ID (SAT CogVideoX-5B)",
            category="CustomVideoX/loaders",
            description=(
                "Loads Concat-ID's CogVideoX-5B checkpoint as published (SAT format, "
                "mp_rank_00_model_states.pt) as a native CogVideoX model, converting its weights in "
                "memory. Connect it to CustomVideoX Apply / Sample with the reference; Concat-ID was "
                "trained with the reference visible to both CFG passes (uncond_sees_reference on)."
            ),
            inputs=checkpoint_inputs(
                TORCH_CHECKPOINT_SUFFIXES,
                "A SAT checkpoint file (.pt/.pth/.ckpt) under models/diffusion_models, e.g. "
                "Concat-ID/single-identity/<iteration>/mp_rank_00_model_states.pt. Read as plain "
                "tensors only; a file holding pickled objects is refused.",
            ),
            outputs=[io.Model.Output(tooltip="Concat-ID's CogVideoX-5B as a native ComfyUI CogVideoX.")],
        )

    @classmethod
    def execute(cls, checkpoint: str, weight_dtype: str) -> io.NodeOutput:
        return checkpoint_output(checkpoint, weight_dtype, load_sat_cogvideox, _summary)


def _summary(patcher, checkpoint: str) -> str:
    """``Concat-ID CogVideoX: 42 layers converted from mp_rank_00_model_states.pt``."""
    layers = len(patcher.model.diffusion_model.blocks)
    return f"Concat-ID CogVideoX: {layers} layers converted from {Path(checkpoint).name}"
