"""Wan 2.1 / 2.2 (T2V 1.3B / 14B, TI2V 5B, and their Phantom / VACE subclasses) as ComfyUI runs it
natively (``comfy/ldm/wan/model.py``).

- Self-attention over ``[video | reference]``; the text is read in a separate cross-attention, so ERAE
  takes the entity activation of block ``i``'s cross-attention into block ``i + 1``'s self-attention.
- ``_forward(x, timestep, context, clip_fea, time_dim_concat, transformer_options, ...)``.
  ``time_dim_concat`` is Wan's own reference-frame input (core's ``WanPhantomSubjectToVideo`` fills it
  on the conditioning): frames appended after the padded video, RoPE over the longer time axis, the
  prediction sliced back to the video — exactly the pack's layout.
- Trained as rectified flow; Wan's RoPE reads ComfyUI's ``in_training`` flag to take its autograd path.
"""

from __future__ import annotations

import re
from typing import Any

from ..layout import TokenLayout
from .base import HostSpec, PrefixRoute, ReferenceInput

_DIFFUSERS = re.compile(
    r"blocks\.(?P<index>\d+)\.(?P<attn>attn1|attn2)\.(?:processor\.)?"
    r"(?P<proj>to_q|to_k|to_v|to_out\.0|to_out|add_k_proj|add_v_proj)"
)
_NATIVE_CROSS = re.compile(r"blocks\.(?P<index>\d+)\.cross_attn\.(?P<proj>q|k|v|o|k_img|v_img)")
_PROJECTIONS = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "o", "to_out": "o"}
_IMAGE_PROJECTIONS = {"add_k_proj": "k_img", "add_v_proj": "v_img"}


def diffusers_module_path(dotted: str) -> str | None:
    """``blocks.1.attn1.to_q`` → ``blocks.1.self_attn.q``; cross-attention (``attn2``, native
    ``cross_attn``) maps too, so adapters that also touch it load; ``None`` for anything else."""
    if _NATIVE_CROSS.fullmatch(dotted) is not None:
        return dotted
    match = _DIFFUSERS.fullmatch(dotted)
    if match is None:
        return None
    attention = "self_attn" if match["attn"] == "attn1" else "cross_attn"
    projection = match["proj"]
    if projection in _IMAGE_PROJECTIONS:
        if attention != "cross_attn":
            return None
        return f"blocks.{match['index']}.cross_attn.{_IMAGE_PROJECTIONS[projection]}"
    return f"blocks.{match['index']}.{attention}.{_PROJECTIONS[projection]}"


def describe(dit: Any) -> dict[str, Any]:
    """HostSignature fields of a ``WanModel`` (or a subclass)."""
    return {
        "hidden_size": dit.dim,
        "num_layers": len(dit.blocks),
        "num_heads": dit.num_heads,
        "head_dim": dit.dim // dit.num_heads,
        "patch_size": dit.patch_size[-1],
        "patch_size_t": dit.patch_size[0] if dit.patch_size[0] != 1 else None,
        "positions": "rope",
    }


def make_layout(text: int, frames: int, reference_frames: int, frame_tokens: int) -> TokenLayout:
    del text  # Wan's self-attention holds no text tokens
    return TokenLayout.wan(frames=frames, reference_frames=reference_frames, frame_tokens=frame_tokens)


_INSTEAD = (
    " Instead: Phantom-Wan (WanPhantomSubjectToVideo, then CustomVideoX Apply with no reference) or Apply "
    "Stand-In on a Wan 2.1 T2V model; or sample this model without CustomVideoX."
)
_MODEL = "comfy.ldm.wan.model."
PREFIX_ROUTES = {
    _MODEL + "VaceWanModel": PrefixRoute(
        frames_from="WanVaceToVideo's trim_latent",
        own_reference=(
            "VACE's blocks add the control video's hints to exactly the video's own tokens, so frames "
            "appended by CustomVideoX would not line up with them. Give the reference image to "
            "WanVaceToVideo's reference_image instead, and use CustomVideoX Apply with no reference "
            "connected and WanVaceToVideo's trim_latent wired to its reference_prefix_frames: it biases "
            "that reference. Or: Phantom-Wan, or Apply Stand-In on a Wan 2.1 T2V model."
        ),
    ),
}
"""Wan routes whose conditioning puts reference frames in front of the video (``HostSpec.prefix_routes``):
VACE, whose ``WanVaceToVideo`` puts ``trim_latent`` encoded reference frames before the video, in the
latent and in the control context its blocks read."""

REFUSED_ROUTES = {
    _MODEL + "WanModel_S2V": (
        "Wan S2V (speech to video) runs its reference image and audio as streams of its own, which "
        "CustomVideoX's reference frames would misalign; use WanSoundImageToVideo's ref_image." + _INSTEAD
    ),
    _MODEL + "HumoWanModel": (
        "HuMo reads its reference images through its own conditioning (WanHuMoImageToVideo) and audio "
        "layers; use that node's reference_image." + _INSTEAD
    ),
    "comfy.ldm.wan.model_animate.AnimateWanModel": (
        "Wan Animate drives a character from a pose/face video with streams of its own; use "
        "WanAnimateToVideo's reference_image." + _INSTEAD
    ),
    "comfy.ldm.wan.model_animate2.WanAnimate2Model": (
        "Wan Animate 2 drives a character from a pose/face video with streams of its own; use its own "
        "reference input." + _INSTEAD
    ),
    _MODEL + "CameraWanModel": (
        "Wan camera control adds a camera embedding sized to the video's own tokens." + _INSTEAD
    ),
    _MODEL + "SCAILWanModel": "SCAIL runs streams of its own next to the video." + _INSTEAD,
    _MODEL + "SCAIL2WanModel": "SCAIL 2 runs streams of its own next to the video." + _INSTEAD,
    "comfy.ldm.wan.model_wandancer.WanDancerModel": (
        "WanDancer runs streams of its own next to the video." + _INSTEAD
    ),
    "comfy.ldm.wan.ar_model.CausalWanModel": (
        "the causal (autoregressive) Wan attends frame by frame through its own cache." + _INSTEAD
    ),
}
"""Wan routes of ComfyUI that CustomVideoX Apply refuses (``HostSpec.refused_routes``)."""


SPEC = HostSpec(
    family="wan",
    supported="Wan 2.1 / 2.2 (incl. Phantom-Wan)",
    dit_classes=("comfy.ldm.wan.model.WanModel",),
    describe=describe,
    variants={(1536, None): "Wan 2.1/2.2 1.3B", (5120, None): "Wan 2.1/2.2 14B", (3072, None): "Wan 2.2 5B"},
    attention_targets=("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o"),
    lora_aliases=(
        (re.compile(r"blocks_(\d+)_(self_attn|cross_attn)_(q|k|v|o|k_img|v_img)"), r"blocks.\1.\2.\3"),
        (
            re.compile(r"blocks_(\d+)_(attn1|attn2)_(to_q|to_k|to_v|to_out_0|add_k_proj|add_v_proj)"),
            r"blocks.\1.\2.\3",
        ),
    ),
    diffusers_module_path=diffusers_module_path,
    transformer_options_index=5,
    context_index=2,
    reference_input=ReferenceInput(name="time_dim_concat", index=4),
    make_layout=make_layout,
    entity_source="cross_attention",
    objective="flow_matching",
    sets_in_training=True,
    reference_layouts=("joint", "cached"),
    branch_dit_classes=("comfy.ldm.wan.model.WanModel",),
    refused_routes=REFUSED_ROUTES,
    prefix_routes=PREFIX_ROUTES,
)
