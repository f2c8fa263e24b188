"""How one training step calls the DiT: the denoising objective of the host, the reference patch and
the model functions of the two reference layouts (see ``nodes/train_run.py``)."""

from __future__ import annotations

import math

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.utils
import torch
from torch import Tensor, nn

from ..customvideox_core.host_signature import HostSignature
from ..customvideox_core.standin.branch import reference_grid
from ..customvideox_core.tab import TABSchedule
from ..customvideox_core.training import (
    DenoisingObjective,
    ModelFn,
    ReferenceBranchLoRA,
)
from . import standin_patch
from .patch import SETTINGS_KEY, WRAPPER_KEY, ReferencePatch, ReferenceWrapper

TRAINING_TAB = TABSchedule(shape="constant", peak=0.0)
"""Training adds no attention bias: the LoRA learns to read the reference from plain attention."""
SCHEDULE_TOLERANCE = 1e-4


def _flow_matching_objective(sampling) -> DenoisingObjective:
    multiplier = float(getattr(sampling, "multiplier", 1000.0))
    if not math.isclose(multiplier, 1000.0):
        raise ValueError(f"this model maps sigma to timestep × {multiplier}, the trainer assumes × 1000")
    return DenoisingObjective("flow_matching", flow_shift=float(getattr(sampling, "shift", 1.0)))


def _v_prediction_objective(sampling) -> DenoisingObjective:
    objective = DenoisingObjective("v_prediction")
    host_alphas = 1.0 / (1.0 + sampling.sigmas.detach().to("cpu", torch.float64) ** 2)
    core_alphas = objective.alphas_cumprod()
    if host_alphas.shape != core_alphas.shape:
        raise ValueError(
            f"this model's noise schedule has {host_alphas.shape[0]} steps, the trainer assumes "
            f"{core_alphas.shape[0]} (CogVideoX's 1000-step DDPM)"
        )
    # The last step differs by construction (ComfyUI keeps a tiny ᾱ to stay finite; the core uses 0).
    deviation = float((host_alphas[:-1] - core_alphas[:-1]).abs().max())
    if deviation > SCHEDULE_TOLERANCE:
        raise ValueError(
            f"this model's noise schedule differs from CogVideoX's (max |Δᾱ| = {deviation:.2e}); "
            "training would not match how ComfyUI samples it"
        )
    return objective


_OBJECTIVES = {"flow_matching": _flow_matching_objective, "v_prediction": _v_prediction_objective}
"""Host spec ``objective`` → builder of the core objective, checked against ComfyUI's ``model_sampling``."""


def objective_for(base_model, host: HostSignature) -> DenoisingObjective:
    """The host's denoising objective (its spec's), checked against its ComfyUI ``model_sampling``."""
    return _OBJECTIVES[host.spec.objective](base_model.model_sampling)


def training_reference_patch(reference_latents: Tensor) -> ReferencePatch:
    """The inference patch for one reference ``[1, C, R, h, w]`` (model space), with no bias. The
    reference carries no subject mask at training time (the bias is 0): every token weighs 1, as
    ReferenceEncode's all-ones mask of an image without a mask gives."""
    return ReferencePatch(
        model_latents=reference_latents,
        tab=TRAINING_TAB,
        erae=None,
        uncond_sees_reference=True,
    )


def reference_call_options(host: HostSignature, reference_latents: Tensor) -> dict:
    """``transformer_options`` that route a DiT call through the pack's reference wrapper."""
    wrappers = {comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL: {WRAPPER_KEY: [ReferenceWrapper(host)]}}
    return {"wrappers": wrappers, SETTINGS_KEY: training_reference_patch(reference_latents)}


def _dit_call(
    dit: nn.Module, video: Tensor, timestep: Tensor, context: Tensor, options: dict, dtype: torch.dtype
) -> Tensor:
    """One DiT call on ``video`` ``[B, C, T, h, w]`` with ``context`` ``[1, L, D]`` for every row."""
    return dit(
        video.to(dtype),
        timestep.to(video.device, torch.float32),
        context.to(device=video.device, dtype=dtype).expand(video.shape[0], -1, -1),
        transformer_options=options,
    )


def predict_video(
    dit: nn.Module,
    host: HostSignature,
    video: Tensor,
    timestep: Tensor,
    context: Tensor,
    reference_latents: Tensor,
    *,
    dtype: torch.dtype,
) -> Tensor:
    """The DiT's prediction for the video frames with the reference appended, as at inference.

    video ``[B, C, T, h, w]`` (noisy, model space), timestep ``[B]`` (the DiT's own units), context
    ``[1, L, D]``, reference_latents ``[1 or B, C, R, h, w]`` (clean, model space; one reference for the
    batch) → ``[B, C, T, h, w]``.
    """
    options = reference_call_options(host, reference_latents[:1].to(device=video.device, dtype=dtype))
    return _dit_call(dit, video, timestep, context, options, dtype)


def video_model_fn(dit: nn.Module, host: HostSignature, context: Tensor, dtype: torch.dtype) -> ModelFn:
    """For the core loop: ``model_fn(video [B, C, T, h, w], reference [B, C, R, h, w], t [B])`` → the
    video's prediction ``[B, C, T, h, w]`` (see :func:`predict_video`)."""

    def model_fn(video: Tensor, reference: Tensor, timestep: Tensor) -> Tensor:
        prediction = predict_video(dit, host, video, timestep, context, reference, dtype=dtype)
        return prediction.to(video.dtype)

    return model_fn


def cached_model_fn(
    dit: nn.Module, adapter: ReferenceBranchLoRA, context: Tensor, dtype: torch.dtype
) -> ModelFn:
    """The cached layout's model function: the reference branch (``adapter``'s LoRA on the reference
    tokens, timestep 0, recomputed with autograd at every call) and the video over ``[video | reference]``
    keys, through the very wrapper and attention override sampling uses (``nodes/standin_patch.py``).

    ``model_fn(video [B, C, T, h, w], reference [B, C, 1, h, w], t [B])`` → ``[B, C, T, h, w]``.
    """
    wrappers = {
        comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL: {
            standin_patch.WRAPPER_KEY: [standin_patch.StandInWrapper()]
        }
    }

    def model_fn(video: Tensor, reference: Tensor, timestep: Tensor) -> Tensor:
        latent = reference[:1]
        rows, cols = reference_grid(latent, tuple(dit.patch_size))
        patch = standin_patch.StandInPatch(
            lora=adapter.as_standin_lora(),
            strength=1.0,
            reference_latent=latent,
            reference_weights=torch.ones(rows * cols, device=latent.device),
            tab=None,
            erae=None,
            uncond_sees_reference=True,
            cache=None,
        )
        options = {"wrappers": wrappers, standin_patch.SETTINGS_KEY: patch}
        return _dit_call(dit, video, timestep, context, options, dtype).to(video.dtype)

    return model_fn
