"""Recognise the host DiT inside a ComfyUI MODEL through the core's host-spec table."""

from __future__ import annotations

from ..customvideox_core.host_signature import HostSignature, signature_of_dit
from ..customvideox_core.host_specs import SUPPORTED_HOSTS, UnsupportedHostError


def diffusion_model_of(model) -> object:
    """The ``torch.nn.Module`` DiT behind a ComfyUI ModelPatcher (``model.model.diffusion_model``)."""
    base = getattr(model, "model", None)
    return getattr(base, "diffusion_model", None)


def host_signature(model) -> HostSignature:
    """Describe the host of a ModelPatcher, or raise :class:`UnsupportedHostError` naming what is supported."""
    dit = diffusion_model_of(model)
    signature = signature_of_dit(dit) if dit is not None else None
    if signature is not None:
        return signature
    config = getattr(getattr(model, "model", None), "model_config", None)
    found = type(config).__name__ if config is not None else type(dit if dit is not None else model).__name__
    raise UnsupportedHostError(
        f"CustomVideoX cannot patch this model ({found}). Supported: {SUPPORTED_HOSTS}. "
        "Load one of those with UNETLoader (Load Diffusion Model) and connect it here."
    )
