"""CogVideoX (2B, 5B, 1.5-5B; T2V and I2V) as ComfyUI runs it natively (``comfy/ldm/cogvideo/model.py``).

- Joint attention over ``[text | video | reference]`` in every block: the text tokens are part of the
  self-attention sequence, so ERAE reads the entity activation from the same call.
- ``_forward(x, timestep, context, ofs, transformer_options, ...)``.
- Reference frames are appended after the video: RoPE (5B, 1.5) gives them the time indices ``T…``,
  the 2B's 3D sin-cos table the rows of frames ``T…``, I2V's learned table its rows after the video
  (which must be long enough: :func:`check_reference_fits`).
- Trained as v-prediction on CogVideoX's 1000-step DDPM schedule.
"""

from __future__ import annotations

import re
from typing import Any

from ..layout import TokenLayout
from .base import HostSpec

_DIFFUSERS = re.compile(
    r"transformer_blocks\.(?P<index>\d+)\.attn1\.(?:processor\.)?(?P<proj>to_q|to_k|to_v|to_out\.0|to_out)"
)
_DIFFUSERS_PROJECTIONS = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "attn_out", "to_out": "attn_out"}


def diffusers_module_path(dotted: str) -> str | None:
    """``transformer_blocks.2.attn1.to_out.0`` → ``blocks.2.attn_out``; ``None`` for anything else."""
    match = _DIFFUSERS.fullmatch(dotted)
    if match is None:
        return None
    return f"blocks.{match['index']}.{_DIFFUSERS_PROJECTIONS[match['proj']]}"


def describe(dit: Any) -> dict[str, Any]:
    """HostSignature fields of a ``CogVideoXTransformer3DModel``."""
    if dit.use_rotary_positional_embeddings:
        positions = "rope"
    elif dit.patch_embed.use_learned_positional_embeddings:
        positions = "learned"
    else:
        positions = "sincos"
    return {
        "hidden_size": dit.dim,
        "num_layers": len(dit.blocks),
        "num_heads": dit.num_attention_heads,
        "head_dim": dit.attention_head_dim,
        "patch_size": dit.patch_size,
        "patch_size_t": dit.patch_size_t,
        "positions": positions,
    }


def check_reference_fits(dit: Any, image_tokens: int) -> None:
    """Raise when a learned position table is shorter than video + reference tokens (I2V models)."""
    embed = getattr(dit, "patch_embed", None)
    if embed is None or not getattr(embed, "use_learned_positional_embeddings", False):
        return
    available = embed.pos_embedding.shape[1] - embed.max_text_seq_length
    if image_tokens > available:
        raise ValueError(
            f"this CogVideoX uses learned positions for at most {available} video tokens; video plus "
            f"reference frames need {image_tokens}. Use fewer frames or fewer reference images."
        )


def make_layout(text: int, frames: int, reference_frames: int, frame_tokens: int) -> TokenLayout:
    return TokenLayout.cogvideox(
        text=text, frames=frames, reference_frames=reference_frames, frame_tokens=frame_tokens
    )


SPEC = HostSpec(
    family="cogvideox",
    supported="CogVideoX 2B / 5B / 1.5 (native ComfyUI)",
    dit_classes=("comfy.ldm.cogvideo.model.CogVideoXTransformer3DModel",),
    describe=describe,
    variants={(3072, 2): "CogVideoX-1.5-5B", (3072, None): "CogVideoX-5B", (1920, None): "CogVideoX-2B"},
    attention_targets=("q", "k", "v", "attn_out"),
    lora_aliases=(
        (re.compile(r"blocks_(\d+)_(q|k|v|attn_out)"), r"blocks.\1.\2"),
        (
            re.compile(r"transformer_blocks_(\d+)_attn1_(to_q|to_k|to_v|to_out_0)"),
            r"transformer_blocks.\1.attn1.\2",
        ),
    ),
    diffusers_module_path=diffusers_module_path,
    transformer_options_index=4,
    context_index=2,
    reference_input=None,
    make_layout=make_layout,
    entity_source="joint_attention",
    objective="v_prediction",
    sets_in_training=False,
    check_reference_fits=check_reference_fits,
)
