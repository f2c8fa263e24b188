"""The CustomVideoX MODEL patch: ComfyUI extension points only, no monkeypatching.

``apply_reference_patch`` clones the ModelPatcher and installs two things on the clone:

- a ``WrappersMP.DIFFUSION_MODEL`` wrapper (key ``customvideox``) that, for every model call, appends
  the reference latent frames *after* the video frames on the time axis, runs the DiT, and strips the
  reference frames' prediction again. Appending (not prepending) keeps every video token at its own
  position: under CogVideoX-5B/1.5's RoPE and Wan's RoPE the reference frames get the temporal indices
  ``T .. T+R-1``; under CogVideoX-2B's 3D sin-cos table they get the sin-cos rows of frames ``T ..``.
  CogVideoX-1.5 (temporal patch 2) first pads the video exactly as the model would (circular) and
  repeats each reference frame twice so that it fills one temporal patch.
- for the duration of that call, ``transformer_options["optimized_attention_override"]`` set to
  :class:`ReferenceAttentionOverride`, which adds the TAB/ERAE bias inside every self-attention (the
  joint ``[text | video | reference]`` attention of CogVideoX; Wan's self-attention) through
  ``customvideox_core.attention.biased_attention`` on the backend the user chose. Any override that was
  already there (another pack's) stays in the chain: ours calls it as the backend.

State rides on the clone under ``cvx_``-prefixed keys of ``model_options["transformer_options"]``;
the per-call state lives only in the copy of ``transformer_options`` handed to the DiT.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import comfy.ldm.common_dit
import comfy.patcher_extension
import torch
from torch import Tensor

from ..customvideox_core.erae import ERAEConfig, reference_token_weights
from ..customvideox_core.hosts import HostSignature
from ..customvideox_core.layout import TokenLayout
from ..customvideox_core.reference_attention import plan_step
from ..customvideox_core.tab import TABSchedule, sampling_progress
from .attention_override import OVERRIDE_KEY, RUNTIME_KEY, CallRuntime, reference_attention_override
from .host_model import diffusion_model_of, host_signature
from .types import ReferenceLatents

logger = logging.getLogger(__name__)

WRAPPER_KEY = "customvideox"
SETTINGS_KEY = "cvx_settings"
HOST_KEY = "cvx_host"

# Position of ``transformer_options`` among the positional arguments of each host's DiT forward.
_TRANSFORMER_OPTIONS_INDEX = {"cogvideox": 4, "wan": 5}


@dataclass(frozen=True, eq=False)
class ReferencePatch:
    """Everything one patched MODEL needs. ``model_latents``: ``[1, C, R, h, w]`` in the model's space."""

    reference: ReferenceLatents
    model_latents: Tensor
    tab: TABSchedule
    erae: ERAEConfig | None
    uncond_sees_reference: bool


def install_machinery(model, host: HostSignature) -> None:
    """Put the wrapper on ``model`` (a clone) and record the host; idempotent."""
    model.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY)
    model.add_wrapper_with_key(
        comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, ReferenceWrapper(host.family)
    )
    model.model_options.setdefault("transformer_options", {})[HOST_KEY] = host


def apply_reference_patch(
    model,
    reference: ReferenceLatents,
    *,
    tab: TABSchedule,
    erae: ERAEConfig | None,
    uncond_sees_reference: bool,
):
    """Clone ``model`` and make it generate with ``reference`` (the input model is left untouched)."""
    host = host_signature(model)
    model_latents = model.model.process_latent_in(reference.latents.clone())
    patched = model.clone()
    install_machinery(patched, host)
    patched.model_options["transformer_options"][SETTINGS_KEY] = ReferencePatch(
        reference=reference,
        model_latents=model_latents,
        tab=tab,
        erae=erae,
        uncond_sees_reference=uncond_sees_reference,
    )
    return patched


def _row_is_cond(transformer_options: dict, batch: int) -> list[bool]:
    cond_or_uncond = transformer_options.get("cond_or_uncond")
    if not cond_or_uncond or batch % len(cond_or_uncond):
        return [True] * batch
    per_chunk = batch // len(cond_or_uncond)
    return [chunk == 0 for chunk in cond_or_uncond for _ in range(per_chunk)]


def _progress(transformer_options: dict) -> float:
    sigmas = transformer_options.get("sigmas")
    sample_sigmas = transformer_options.get("sample_sigmas")
    if sigmas is None or sample_sigmas is None:
        return 0.5
    return sampling_progress(float(sigmas.reshape(-1)[0]), sample_sigmas)


class ReferenceWrapper:
    """``DIFFUSION_MODEL`` wrapper: append the reference frames, run, strip them from the prediction."""

    def __init__(self, family: str) -> None:
        self.family = family

    def __call__(self, executor, *args, **kwargs):
        options_index = _TRANSFORMER_OPTIONS_INDEX[self.family]
        transformer_options = args[options_index] if len(args) > options_index else None
        if transformer_options is None:
            transformer_options = kwargs.get("transformer_options") or {}
        patch = transformer_options.get(SETTINGS_KEY)
        if patch is None:
            return executor(*args, **kwargs)

        x, context = args[0], args[2]
        dit = executor.class_obj
        video, reference, layout = self._join(dit, x, context, patch)
        weights = reference_token_weights(
            patch.reference.masks.to(x.device),
            latent_size=(video.shape[-2], video.shape[-1]),
            patch_size=layout_patch(dit),
        ).reshape(1, -1)
        if weights.shape[1] != layout.reference:
            raise ValueError(
                f"reference mask pooled to {weights.shape[1]} tokens, expected {layout.reference}"
            )
        step = plan_step(
            layout,
            tab=patch.tab,
            progress=_progress(transformer_options),
            row_sees_reference=[
                cond or patch.uncond_sees_reference for cond in _row_is_cond(transformer_options, x.shape[0])
            ],
            row_has_entities=_row_is_cond(transformer_options, x.shape[0]),
            reference_weights=weights,
            erae=patch.erae,
        )
        call_options = dict(transformer_options)
        call_options[RUNTIME_KEY] = CallRuntime(
            family=self.family, step=step, previous_override=transformer_options.get(OVERRIDE_KEY)
        )
        call_options[OVERRIDE_KEY] = reference_attention_override

        new_args = list(args)
        new_args[0] = torch.cat([video, reference], dim=2)
        if len(args) > options_index:
            new_args[options_index] = call_options
        else:
            kwargs = {**kwargs, "transformer_options": call_options}
        out = executor(*new_args, **kwargs)
        t, h, w = x.shape[-3:]
        return out[:, :, :t, :h, :w]

    def _join(
        self, dit, x: Tensor, context: Tensor, patch: ReferencePatch
    ) -> tuple[Tensor, Tensor, TokenLayout]:
        """Pad the video as the DiT would and build the reference frames. x ``[B, C, T, H, W]``."""
        reference = patch.model_latents.to(device=x.device, dtype=x.dtype)
        if reference.shape[1] != x.shape[1] or reference.shape[-2:] != x.shape[-2:]:
            raise ValueError(
                f"the reference latent is {tuple(reference.shape[1:2]) + tuple(reference.shape[-2:])} "
                f"(channels, height, width) but the video latent is "
                f"{tuple(x.shape[1:2]) + tuple(x.shape[-2:])}: encode the reference with the same VAE at "
                f"the video's size ({x.shape[-1] * 8}x{x.shape[-2] * 8} pixels)"
            )
        spatial = layout_patch(dit)
        temporal = layout_patch_t(dit)
        video = comfy.ldm.common_dit.pad_to_patch_size(x, (temporal, spatial, spatial))
        reference = comfy.ldm.common_dit.pad_to_patch_size(reference, (1, spatial, spatial))
        reference = reference.repeat_interleave(temporal, dim=2).expand(x.shape[0], -1, -1, -1, -1)
        frame_tokens = (video.shape[-2] // spatial) * (video.shape[-1] // spatial)
        frames = video.shape[2] // temporal
        reference_frames = reference.shape[2] // temporal
        if self.family == "cogvideox":
            _check_learned_positions(dit, (frames + reference_frames) * frame_tokens)
            layout = TokenLayout.cogvideox(
                text=context.shape[1],
                frames=frames,
                reference_frames=reference_frames,
                frame_tokens=frame_tokens,
            )
        else:
            layout = TokenLayout.wan(
                frames=frames, reference_frames=reference_frames, frame_tokens=frame_tokens
            )
        return video, reference, layout


def layout_patch(dit) -> int:
    patch = dit.patch_size
    return int(patch[-1]) if isinstance(patch, (tuple, list)) else int(patch)


def layout_patch_t(dit) -> int:
    patch = dit.patch_size
    if isinstance(patch, (tuple, list)):
        return int(patch[0])
    return int(getattr(dit, "patch_size_t", None) or 1)


def _check_learned_positions(dit, image_tokens: int) -> None:
    embed = getattr(dit, "patch_embed", None)
    if embed is None or not getattr(embed, "use_learned_positional_embeddings", False):
        return
    available = embed.pos_embedding.shape[1] - embed.max_text_seq_length
    if image_tokens > available:
        raise ValueError(
            f"this CogVideoX uses learned positions for at most {available} video tokens; video plus "
            f"reference frames need {image_tokens}. Use fewer frames or fewer reference images."
        )


__all__ = [
    "HOST_KEY",
    "SETTINGS_KEY",
    "WRAPPER_KEY",
    "ReferencePatch",
    "ReferenceWrapper",
    "apply_reference_patch",
    "diffusion_model_of",
    "host_signature",
    "install_machinery",
    "reference_attention_override",
]
