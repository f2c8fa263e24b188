"""Concat-ID-Wan (Wan 2.1 1.3B) in ComfyUI: loader node and the three patches its forward needs.

Concat-ID-Wan appends the reference frame after the video like the pack does, but its forward
(``inference_wan.py`` / ``pipelines/wan_video.py``) differs from Wan's in three ways. Each is installed
on the loaded model through a ComfyUI extension point and acts only on calls with reference frames
appended after the video — by the pack (``CustomVideoX Apply`` / ``Sample``) or by Wan's own
``time_dim_concat`` input (core's ``WanPhantomSubjectToVideo``):

1. reference RoPE: time ``T…``, height ``0…h−1``, width shifted by one frame width (``w…2w−1``) — an
   object patch of ``diffusion_model.rope_encode`` that encodes the video frames and the reference
   frames separately (ComfyUI's own ``rope_encode``, the reference with ``t_start=T`` and
   ``rope_options.shift_x = w``) and concatenates them;
2. the reference skips text cross-attention — object patches of every ``blocks.{i}.cross_attn.forward``
   that zero the reference tokens' rows of the cross-attention output, so nothing is added to them;
3. (AdaLN release only) the reference's own AdaLN — a ``patches_replace["dit"][("double_block", i)]``
   entry per block that gives the reference frame the modulation rows of
   ``customvideox_core.convert.concat_id_wan.reference_modulation`` through Wan's per-frame modulation.

A ``WrappersMP.DIFFUSION_MODEL`` wrapper computes the per-call facts (reference frame count, the
reference's time projection) once and hands them to the three patches in ``transformer_options``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import comfy.patcher_extension
import comfy.sd
import torch
from comfy.ldm.wan.model import sinusoidal_embedding_1d
from comfy_api.latest import io
from torch import Tensor

from ..customvideox_core.constants import CHECKPOINT_SUFFIXES
from ..customvideox_core.convert.checkpoint_io import load_tensor_checkpoint
from ..customvideox_core.convert.concat_id_wan import (
    ReferenceAdaLN,
    reference_modulation,
    reference_projection,
    split_concat_id_wan,
)
from ..customvideox_core.host_specs import spec_for
from .concat_id_node import checkpoint_inputs, checkpoint_output
from .finite_inputs import finite_float_inputs
from .patch import SETTINGS_KEY
from .wrapper_args import CONCAT_ID_CALL_KEY as CALL_KEY
from .wrapper_args import options_of, with_options

WRAPPER_KEY = "customvideox_concat_id_wan"


@dataclass(frozen=True, eq=False)
class ConcatIdWanCall:
    """Per model call: ``reference_frames`` appended latent frames; ``projected_reference`` ``[B, 6, D]``."""

    reference_frames: int
    projected_reference: Tensor | None


class ConcatIdWanWrapper:
    """``DIFFUSION_MODEL`` wrapper: record the call's reference frame count and reference projection.

    Reference frames are those the pack appends (``CustomVideoX Apply`` / ``Sample``) or those the
    conditioning carries in Wan's own reference input (``time_dim_concat``, core's
    ``WanPhantomSubjectToVideo``), which ``WanModel._forward`` appends after the video the same way.
    """

    def __init__(self, adaln: ReferenceAdaLN | None) -> None:
        self.adaln = adaln

    def __call__(self, executor, *args, **kwargs):
        spec = spec_for("wan")
        index = spec.transformer_options_index
        options = options_of(args, kwargs, index)
        reference_frames = _reference_frames(options.get(SETTINGS_KEY), spec, args, kwargs)
        if reference_frames == 0:
            return executor(*args, **kwargs)
        projected = None
        if self.adaln is not None:
            dit = executor.class_obj
            timestep = args[1]
            embedding = dit.time_embedding(
                sinusoidal_embedding_1d(dit.freq_dim, timestep.flatten()).to(dtype=args[0].dtype)
            )
            projected = reference_projection(self.adaln, embedding)
        call_options = {**options, CALL_KEY: ConcatIdWanCall(reference_frames, projected)}
        args, kwargs = with_options(args, kwargs, index, call_options)
        return executor(*args, **kwargs)


def _reference_frames(patch, spec, args: tuple, kwargs: dict) -> int:
    """Latent frames appended after the video in this call: the pack's reference, or the host input's."""
    frames = 0
    if patch is not None:
        frames += patch.reference_frames  # every Apply's own frames
    host_frames = spec.reference_input.value_of(args, kwargs)
    if host_frames is not None:
        frames += int(host_frames.shape[2])
    return frames


class ShiftedReferenceRope:
    """Replaces ``WanModel.rope_encode``: the last ``R`` frames get time ``T…`` and width ``w…2w−1``."""

    def __init__(self, original) -> None:
        self.original = original

    def __call__(self, t, h, w, *args, transformer_options=None, **kwargs):
        options = transformer_options or {}
        call = options.get(CALL_KEY)
        if call is None or call.reference_frames == 0 or kwargs.get("source_id", 0) != 0:
            # no appended reference; or another in-context stream (Bernini), which keeps its own rope
            return self.original(t, h, w, *args, transformer_options=options, **kwargs)
        if args or kwargs.get("t_start", 0) != 0:
            raise ValueError(
                "Concat-ID-Wan cannot place its reference positions: WanModel.rope_encode was called as "
                f"rope_encode({t}, {h}, {w}, *{args}, **{sorted(kwargs)}), not as this ComfyUI's _forward "
                "calls it; this ComfyUI version is not supported by the Concat-ID-Wan loader"
            )
        kwargs.pop("t_start", None)
        reference = call.reference_frames
        video = self.original(t - reference, h, w, transformer_options=options, **kwargs)
        patch_w = self.original.__self__.patch_size[2]
        width_tokens = (w + patch_w // 2) // patch_w
        rope_options = dict(options.get("rope_options") or {})
        rope_options["shift_x"] = rope_options.get("shift_x", 0.0) + width_tokens
        shifted = {**options, "rope_options": rope_options}
        frames = self.original(reference, h, w, t_start=t - reference, transformer_options=shifted, **kwargs)
        return torch.cat([video, frames], dim=1)


class VideoOnlyCrossAttention:
    """Replaces one block's ``cross_attn.forward``: the reference tokens get no text cross-attention.

    Cross-attention runs on all tokens (each query row is independent of the others, and the attention
    override keeps seeing the planned ``[video | reference]`` layout, e.g. for ERAE's entity map); the
    rows of the reference tokens are then replaced by zeros, so the block adds nothing to them — not even
    the output projection's bias, as in Concat-ID's ``x[:, :-n_ref] += cross_attn(...)``.
    """

    def __init__(self, original) -> None:
        self.original = original

    def __call__(self, x, context, *args, transformer_options=None, **kwargs):
        options = transformer_options if transformer_options is not None else {}
        out = self.original(x, context, *args, transformer_options=options, **kwargs)
        call = options.get(CALL_KEY)
        if call is None or call.reference_frames == 0:
            return out
        _, height, width = options["grid_sizes"]
        reference_tokens = call.reference_frames * int(height) * int(width)
        return torch.cat(
            [out[:, :-reference_tokens], out.new_zeros(out.shape[0], reference_tokens, out.shape[2])], dim=1
        )


class ReferenceAdaLNBlock:
    """``("double_block", i)`` replacement: the reference frame's rows of Wan's per-frame modulation."""

    def __init__(self, modulation: Tensor, modulation_ref: Tensor) -> None:
        self.modulation = modulation
        self.modulation_ref = modulation_ref

    def __call__(self, args: dict, extra: dict) -> dict:
        call = args["transformer_options"].get(CALL_KEY)
        if call is None or call.reference_frames == 0 or call.projected_reference is None:
            return extra["original_block"](args)
        vec = args["vec"]  # [B, 1 or F, 6, D]; the block adds its own modulation
        frames = int(args["transformer_options"]["grid_sizes"][0])
        per_frame = vec.expand(vec.shape[0], frames, *vec.shape[2:]).clone()
        rows = reference_modulation(self.modulation_ref, call.projected_reference.to(vec))
        per_frame[:, frames - call.reference_frames :] = (rows - self.modulation.to(vec)).unsqueeze(1)
        return extra["original_block"]({**args, "vec": per_frame})


def load_concat_id_wan(path: str, model_options: dict | None = None, disable_dynamic: bool = False):
    """Read a Concat-ID-Wan checkpoint, load its Wan weights with ComfyUI's loader, install the patches."""
    options = dict(model_options or {})
    loaded = load_tensor_checkpoint(path)
    weights = split_concat_id_wan(loaded.tensors)
    patcher = comfy.sd.load_diffusion_model_state_dict(
        weights.wan, model_options=options, metadata=loaded.metadata or None, disable_dynamic=disable_dynamic
    )
    config = "nothing" if patcher is None else type(patcher.model.model_config).__name__
    if patcher is None or not config.startswith("WAN21"):
        raise ValueError(
            f"{path}: ComfyUI detected {config}, expected a Wan 2.1 model (Concat-ID-Wan is 1.3B)"
        )
    if weights.reference_adaln is not None and len(weights.reference_adaln.modulation) != len(
        patcher.model.diffusion_model.blocks
    ):
        raise ValueError(f"{path}: the reference AdaLN does not have one modulation per Wan block")
    install_concat_id_wan(patcher, weights.reference_adaln)
    patcher.cached_patcher_init = (load_concat_id_wan, (path, options))
    return patcher


def install_concat_id_wan(model, adaln: ReferenceAdaLN | None) -> None:
    """Put the wrapper and patches on ``model`` (a clone or a freshly loaded patcher)."""
    dit = model.model.diffusion_model
    model.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY)
    model.add_wrapper_with_key(
        comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, ConcatIdWanWrapper(adaln)
    )
    model.add_object_patch("diffusion_model.rope_encode", ShiftedReferenceRope(dit.rope_encode))
    for index, block in enumerate(dit.blocks):
        model.add_object_patch(
            f"diffusion_model.blocks.{index}.cross_attn.forward",
            VideoOnlyCrossAttention(block.cross_attn.forward),
        )
        if adaln is not None:
            modulation = block.modulation.detach().to("cpu", torch.float32).clone()
            patch = ReferenceAdaLNBlock(modulation, adaln.modulation[index])
            model.set_model_patch_replace(patch, "dit", "double_block", index)


@finite_float_inputs
class CustomVideoXLoadConcatIDWan(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CustomVideoXLoadConcatIDWan",
            display_name="Load Concat-ID-Wan (Wan 2.1 1.3B)",
            category="CustomVideoX/loaders",
            description=(
                "Loads Concat-ID-Wan (first_stage.pt, or second_stage_adaln.pt with its reference AdaLN) "
                "as a native Wan 2.1 model that runs Concat-ID's reference handling — width-shifted "
                "reference positions, no text cross-attention for the reference, the reference AdaLN — "
                "whenever CustomVideoX Apply / Sample appends the reference. Concat-ID was trained with "
                "the reference visible to both CFG passes (uncond_sees_reference on)."
            ),
            inputs=checkpoint_inputs(
                CHECKPOINT_SUFFIXES,
                "first_stage.pt or second_stage_adaln.pt (or a safetensors copy) under "
                "models/diffusion_models. Read as plain tensors only.",
            ),
            outputs=[io.Model.Output(tooltip="Concat-ID-Wan as a native Wan 2.1 model with its patches.")],
        )

    @classmethod
    def execute(cls, checkpoint: str, weight_dtype: str) -> io.NodeOutput:
        return checkpoint_output(checkpoint, weight_dtype, load_concat_id_wan, _summary)


def _summary(patcher, checkpoint: str) -> str:
    """``Concat-ID-Wan with reference AdaLN from second_stage_adaln.pt`` (or ``without``)."""
    adaln = bool(patcher.model_options["transformer_options"].get("patches_replace", {}).get("dit"))
    return f"Concat-ID-Wan {'with' if adaln else 'without'} reference AdaLN from {Path(checkpoint).name}"
