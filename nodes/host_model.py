"""Recognise the host DiT inside a ComfyUI MODEL and describe it with the core's HostSignature."""

from __future__ import annotations

from comfy.ldm.cogvideo.model import CogVideoXTransformer3DModel
from comfy.ldm.wan.model import WanModel

from ..customvideox_core.hosts import SUPPORTED_HOSTS, HostSignature, UnsupportedHostError


def diffusion_model_of(model) -> object:
    """The ``torch.nn.Module`` DiT behind a ComfyUI ModelPatcher (``model.model.diffusion_model``)."""
    base = getattr(model, "model", None)
    return getattr(base, "diffusion_model", None)


def host_signature(model) -> HostSignature:
    """Describe the host of a ModelPatcher, or raise :class:`UnsupportedHostError` naming what is supported."""
    dit = diffusion_model_of(model)
    if isinstance(dit, CogVideoXTransformer3DModel):
        patch_embed = dit.patch_embed
        if dit.use_rotary_positional_embeddings:
            positions = "rope"
        elif patch_embed.use_learned_positional_embeddings:
            positions = "learned"
        else:
            positions = "sincos"
        return HostSignature(
            family="cogvideox",
            hidden_size=dit.dim,
            num_layers=len(dit.blocks),
            num_heads=dit.num_attention_heads,
            head_dim=dit.attention_head_dim,
            patch_size=dit.patch_size,
            patch_size_t=dit.patch_size_t,
            positions=positions,
        )
    if isinstance(dit, WanModel):
        return HostSignature(
            family="wan",
            hidden_size=dit.dim,
            num_layers=len(dit.blocks),
            num_heads=dit.num_heads,
            head_dim=dit.dim // dit.num_heads,
            patch_size=dit.patch_size[-1],
            patch_size_t=dit.patch_size[0] if dit.patch_size[0] != 1 else None,
            positions="rope",
        )
    config = getattr(getattr(model, "model", None), "model_config", None)
    found = type(config).__name__ if config is not None else type(dit if dit is not None else model).__name__
    raise UnsupportedHostError(
        f"CustomVideoX cannot patch this model ({found}). Supported: {SUPPORTED_HOSTS}. "
        "Load one of those with UNETLoader (Load Diffusion Model) and connect it here."
    )
