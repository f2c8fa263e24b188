"""Concat-ID-Wan (Wan 2.1 T2V 1.3B) checkpoints: Wan weights plus the optional reference AdaLN.

Concat-ID publishes two DiffSynth-Studio ``WanModel`` state dicts (Hugging Face ``yongzhong/Concat-ID-Wan``):

- ``first_stage.pt``: stock Wan 2.1 keys only (``patch_embedding``, ``blocks.{i}.self_attn.q`` …), which
  ComfyUI's Wan loader reads as they are;
- ``second_stage_adaln.pt``: the same, plus a separate AdaLN for the reference tokens
  (``inference_wan.py``, ``--use_adaln``): ``time_projection_ref.1.{weight,bias}`` (``[6·D, D]``,
  ``[6·D]``, applied after SiLU like ``time_projection``) and ``blocks.{i}.modulation_ref`` (``[1, 6, D]``).

:func:`split_concat_id_wan` separates the two; :func:`reference_modulation` is the reference tokens'
per-block modulation exactly as ``forward_adaln`` computes it — including its quirk that the
feed-forward input of the reference uses the *attention* shift and scale
(``modulate(norm2(x_ref), shift_msa_ref, scale_msa_ref)``) with the feed-forward gate.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from .sat_cogvideox import ConversionError

WAN_CONVERTER_ID = "customvideox_core.convert.concat_id_wan/1"
PROJECTION_WEIGHT = "time_projection_ref.1.weight"
PROJECTION_BIAS = "time_projection_ref.1.bias"
_MODULATION_REF = re.compile(r"blocks\.(?P<layer>\d+)\.modulation_ref")
_WAN_MODULATION = re.compile(r"blocks\.(?P<layer>\d+)\.modulation")

# Order of Wan's six modulation chunks: shift/scale/gate of self-attention, then of the feed-forward.
# The reference tokens of Concat-ID-Wan-AdaLN feed the feed-forward with the attention's shift and
# scale (chunks 0, 1) and gate it with the feed-forward gate (chunk 5).
REFERENCE_CHUNK_ORDER = (0, 1, 2, 0, 1, 5)


@dataclass(frozen=True, eq=False)
class ReferenceAdaLN:
    """The reference AdaLN of Concat-ID-Wan-AdaLN. ``modulation``: per block ``[1, 6, D]``."""

    projection_weight: Tensor
    projection_bias: Tensor
    modulation: tuple[Tensor, ...]

    def __post_init__(self) -> None:
        rows, width = self.projection_weight.shape
        if rows != 6 * width or tuple(self.projection_bias.shape) != (rows,):
            raise ConversionError(
                f"time_projection_ref is {tuple(self.projection_weight.shape)} / "
                f"{tuple(self.projection_bias.shape)}; expected [6·D, D] / [6·D]"
            )
        for index, modulation in enumerate(self.modulation):
            if tuple(modulation.shape) != (1, 6, width):
                raise ConversionError(
                    f"blocks.{index}.modulation_ref is {tuple(modulation.shape)}; expected (1, 6, {width})"
                )


@dataclass(frozen=True, eq=False)
class ConcatIdWanWeights:
    """Wan 2.1 weights for ComfyUI's loader, and the reference AdaLN when the file has one."""

    wan: dict[str, Tensor]
    reference_adaln: ReferenceAdaLN | None


def split_concat_id_wan(state_dict: Mapping[str, Tensor]) -> ConcatIdWanWeights:
    """Split a Concat-ID-Wan state dict; raises :class:`ConversionError` on a partial reference AdaLN."""
    wan: dict[str, Tensor] = {}
    modulation_ref: dict[int, Tensor] = {}
    projection: dict[str, Tensor] = {}
    wan_blocks: set[int] = set()
    for key, tensor in state_dict.items():
        match = _MODULATION_REF.fullmatch(key)
        if match is not None:
            modulation_ref[int(match["layer"])] = tensor
        elif key in (PROJECTION_WEIGHT, PROJECTION_BIAS):
            projection[key] = tensor
        else:
            wan[key] = tensor
            block = _WAN_MODULATION.fullmatch(key)
            if block is not None:
                wan_blocks.add(int(block["layer"]))
    if not wan_blocks:
        raise ConversionError("no Wan blocks ('blocks.N.modulation') found: this is not a Wan 2.1 checkpoint")
    if not modulation_ref and not projection:
        return ConcatIdWanWeights(wan=wan, reference_adaln=None)
    missing = sorted(
        [f"blocks.{i}.modulation_ref" for i in sorted(wan_blocks - modulation_ref.keys())]
        + [key for key in (PROJECTION_WEIGHT, PROJECTION_BIAS) if key not in projection]
    )
    extra = sorted(f"blocks.{i}.modulation_ref" for i in modulation_ref.keys() - wan_blocks)
    if missing or extra:
        raise ConversionError(
            "the reference AdaLN of this Concat-ID-Wan checkpoint is incomplete: "
            f"missing {missing or 'nothing'}, for blocks the model lacks {extra or 'none'}"
        )
    adaln = ReferenceAdaLN(
        projection_weight=projection[PROJECTION_WEIGHT],
        projection_bias=projection[PROJECTION_BIAS],
        modulation=tuple(modulation_ref[i] for i in sorted(wan_blocks)),
    )
    return ConcatIdWanWeights(wan=wan, reference_adaln=adaln)


def reference_projection(adaln: ReferenceAdaLN, time_embedding: Tensor) -> Tensor:
    """``time_projection_ref(e)`` = Linear(SiLU(e)): ``[B, D]`` → ``[B, 6, D]``."""
    weight = adaln.projection_weight.to(device=time_embedding.device, dtype=time_embedding.dtype)
    bias = adaln.projection_bias.to(device=time_embedding.device, dtype=time_embedding.dtype)
    projected = torch.nn.functional.linear(torch.nn.functional.silu(time_embedding), weight, bias)
    return projected.unflatten(-1, (6, weight.shape[1]))


def reference_modulation(modulation_ref: Tensor, projected_reference: Tensor) -> Tensor:
    """The six modulation rows Concat-ID-Wan-AdaLN gives a block's reference tokens.

    ``modulation_ref`` ``[1, 6, D]``, ``projected_reference`` ``[B, 6, D]`` → ``[B, 6, D]`` in Wan's chunk
    order (attention shift/scale/gate, feed-forward shift/scale/gate) — with the feed-forward's shift
    and scale taken from the attention's, as ``forward_adaln`` does.
    """
    full = modulation_ref.to(projected_reference) + projected_reference
    return full[:, list(REFERENCE_CHUNK_ORDER)]


__all__ = [
    "REFERENCE_CHUNK_ORDER",
    "WAN_CONVERTER_ID",
    "ConcatIdWanWeights",
    "ReferenceAdaLN",
    "reference_modulation",
    "reference_projection",
    "split_concat_id_wan",
]
