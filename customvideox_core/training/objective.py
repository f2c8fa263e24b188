"""The denoising loss of one batch, with the clean reference frames handed to the model beside the video.

Two parameterisations, matching how ComfyUI samples each host:

- ``"v_prediction"`` (CogVideoX): DDPM with ``num_train_timesteps`` steps, betas linear in ``sqrt(beta)``
  from ``beta_start`` to ``beta_end`` (ComfyUI's ``"linear"``, diffusers' ``"scaled_linear"``), rescaled to
  zero terminal SNR as diffusers' ``rescale_zero_terminal_snr``.
  ``x_t = sqrt(ᾱ_t) x0 + sqrt(1 − ᾱ_t) ε``, target ``v = sqrt(ᾱ_t) ε − sqrt(1 − ᾱ_t) x0``; the model
  gets the integer timestep ``t ∈ [0, T)``.
- ``"flow_matching"`` (Wan): ``x_σ = (1 − σ) x0 + σ ε``, target ``ε − x0``; ``σ ~ U[0, 1)`` then shifted
  ``σ ← shift σ / (1 + (shift − 1) σ)``; the model gets ``1000 σ`` (ComfyUI's timestep for flow models).

The model function gets the noisy video, the *clean* reference frames (as inference feeds them) and the
timestep, and returns its prediction for the video only; where the reference frames go in the model's
token sequence is the model function's business (in the pack: the inference wrapper). The loss covers
the video frames only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from ..host_specs.base import Objective

ObjectiveKind = Objective
"""The host spec's objective names (one list: :data:`customvideox_core.host_specs.base.Objective`)."""
ModelFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``model_fn(video [B, C, T, H, W], reference [B, C, R, H, W], timestep [B]) -> prediction [B, C, T, H, W]``
(the video's prediction only)."""

_KINDS = get_args(ObjectiveKind)
FLOW_TIMESTEP_MULTIPLIER = 1000.0


@dataclass(frozen=True)
class DenoisingObjective:
    """Noise schedule, target and timestep convention of one host family."""

    kind: ObjectiveKind
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    zero_terminal_snr: bool = True
    flow_shift: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"DenoisingObjective.kind must be one of {', '.join(_KINDS)}, got {self.kind!r}")
        if self.num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be at least 2, got {self.num_train_timesteps}")
        if not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise ValueError(f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")
        if self.flow_shift <= 0:
            raise ValueError(f"flow_shift must be positive, got {self.flow_shift}")

    @classmethod
    def coerce(cls, objective: DenoisingObjective | ObjectiveKind) -> DenoisingObjective:
        """Accept a kind name (defaults for everything else) or an objective."""
        return objective if isinstance(objective, DenoisingObjective) else cls(objective)

    def alphas_cumprod(self) -> Tensor:
        """``ᾱ_t`` for ``t = 0 .. T−1``, float64 ``[T]`` (``ᾱ_{T−1} = 0`` with zero terminal SNR)."""
        betas = (
            torch.linspace(
                self.beta_start**0.5, self.beta_end**0.5, self.num_train_timesteps, dtype=torch.float64
            )
            ** 2
        )
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        if not self.zero_terminal_snr:
            return alphas_cumprod
        root = alphas_cumprod.sqrt()
        first, last = root[0].clone(), root[-1].clone()
        root = (root - last) * first / (first - last)
        return root**2

    def sample_timesteps(self, batch: int, generator: torch.Generator, device: torch.device) -> Tensor:
        """Training timesteps ``[B]``: DDPM indices (int64) or flow sigmas (float32 in ``[0, 1)``)."""
        if self.kind == "v_prediction":
            return torch.randint(0, self.num_train_timesteps, (batch,), generator=generator, device=device)
        sigma = torch.rand((batch,), generator=generator, device=device, dtype=torch.float32)
        return self.flow_shift * sigma / (1.0 + (self.flow_shift - 1.0) * sigma)

    def model_timestep(self, timesteps: Tensor) -> Tensor:
        """What the DiT gets: the DDPM index as float, or ``1000 σ`` for flow models. ``[B]`` float32."""
        if self.kind == "v_prediction":
            return timesteps.to(torch.float32)
        return timesteps.to(torch.float32) * FLOW_TIMESTEP_MULTIPLIER

    def noisy_and_target(self, clean: Tensor, noise: Tensor, timesteps: Tensor) -> tuple[Tensor, Tensor]:
        """``clean, noise [B, C, T, H, W]``, ``timesteps [B]`` → ``(x_t, target)``, both like ``clean``."""
        shape = (-1,) + (1,) * (clean.ndim - 1)
        if self.kind == "v_prediction":
            alphas_cumprod = self.alphas_cumprod().to(clean.device)[timesteps.long()].reshape(shape)
            signal = alphas_cumprod.sqrt().to(clean.dtype)
            noise_level = (1.0 - alphas_cumprod).sqrt().to(clean.dtype)
            return signal * clean + noise_level * noise, signal * noise - noise_level * clean
        sigma = timesteps.to(clean.dtype).reshape(shape)
        return (1.0 - sigma) * clean + sigma * noise, noise - clean


def denoising_loss(
    model_fn: ModelFn,
    video_latents: Tensor,
    reference_latents: Tensor,
    *,
    objective: DenoisingObjective | ObjectiveKind,
    generator: torch.Generator,
    noise: Tensor | None = None,
    timesteps: Tensor | None = None,
) -> Tensor:
    """Mean squared error of the model's prediction over the video frames; a float32 scalar.

    ``video_latents [B, C, T, H, W]`` are noised; ``model_fn`` gets them with the clean
    ``reference_latents [B, C, R, H, W]`` and the model timestep ``[B]``, and returns the video's prediction
    ``[B, C, T, H, W]``. ``noise`` and ``timesteps`` (in :meth:`DenoisingObjective.sample_timesteps` units)
    override the random draws.
    """
    objective = DenoisingObjective.coerce(objective)
    if video_latents.ndim != 5 or reference_latents.ndim != 5:
        raise ValueError(
            "video and reference latents must be [B, C, T, H, W], got shapes "
            f"{tuple(video_latents.shape)} and {tuple(reference_latents.shape)}"
        )
    batch, channels, _, height, width = video_latents.shape
    if (reference_latents.shape[0], reference_latents.shape[1], *reference_latents.shape[3:]) != (
        batch,
        channels,
        height,
        width,
    ):
        raise ValueError(
            f"reference latents {tuple(reference_latents.shape)} must match the video's batch, channels and "
            f"size {(batch, channels, '*', height, width)}; encode the reference at the video's resolution"
        )
    clean = video_latents.to(torch.float32)
    if noise is None:
        noise = torch.randn(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
    if timesteps is None:
        timesteps = objective.sample_timesteps(batch, generator, clean.device)
    noisy, target = objective.noisy_and_target(clean, noise.to(clean), timesteps)
    prediction = model_fn(noisy, reference_latents.to(noisy), objective.model_timestep(timesteps))
    if prediction.shape != noisy.shape:
        raise ValueError(
            f"model_fn returned shape {tuple(prediction.shape)}, expected the video's {tuple(noisy.shape)} "
            "(the prediction for the video frames only)"
        )
    return F.mse_loss(prediction.to(torch.float32), target)
