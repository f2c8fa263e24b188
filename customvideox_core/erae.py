"""Entity region-aware enhancement (ERAE): where the reference bias is raised.

Two per-token weights feed the bias ``b(s) * (1 + gamma * a_i) * m_j`` (see ``layout.bias_factors``):

- ``m_j`` (:func:`reference_token_weights`): the reference image's subject mask pooled to its token grid.
- ``a_i`` (:func:`entity_activation`): how strongly video query ``i`` attends to the prompt's entity
  tokens, from the model's own attention (a cross-attention map, as in Prompt-to-Prompt), averaged over
  heads and min-max normalised per latent frame.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ERAEConfig:
    """Settings of the entity region-aware enhancement.

    - ``entity_positions``: token positions of the entity words in the text sequence.
    - ``gamma``: ERAE strength; 0 turns ERAE off, negative weakens the reference on entity regions.
    - ``threshold``: 0 = soft activation; > 0 = binary region ``a_i = [a_i >= threshold]``.
    - ``block_outside_mask``: reference keys with weight 0 (outside the subject mask) are blocked for every
      query.
    """

    entity_positions: tuple[int, ...] = ()
    gamma: float = 1.0
    threshold: float = 0.0
    block_outside_mask: bool = False

    def __post_init__(self) -> None:
        positions = tuple(self.entity_positions)
        for index, position in enumerate(positions):
            if isinstance(position, bool) or not isinstance(position, int) or position < 0:
                raise ValueError(
                    f"ERAE entity_positions[{index}] must be a non-negative integer token position, "
                    f"got {position!r}."
                )
        object.__setattr__(self, "entity_positions", positions)
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, (int, float)):
            raise TypeError(f"ERAE gamma must be a number, got {type(self.gamma).__name__}.")
        if not math.isfinite(self.gamma):
            raise ValueError(
                f"ERAE gamma (strength) must be finite, got {self.gamma!r}; use 0 to turn ERAE off."
            )
        object.__setattr__(self, "gamma", float(self.gamma))
        _check_threshold(self.threshold)
        object.__setattr__(self, "threshold", float(self.threshold))
        if not isinstance(self.block_outside_mask, bool):
            raise TypeError(f"ERAE block_outside_mask must be a bool, got {self.block_outside_mask!r}.")

    @property
    def enabled(self) -> bool:
        """True when ERAE changes anything: ``gamma != 0`` and at least one entity position."""
        return self.gamma != 0.0 and len(self.entity_positions) > 0


def _check_threshold(threshold: float) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"ERAE threshold must be a number, got {type(threshold).__name__}.")
    if not 0.0 <= threshold <= 1.0:  # also rejects NaN
        raise ValueError(
            f"ERAE threshold must lie in [0, 1] (0 = soft activation, > 0 = binary region), got {threshold!r}."
        )


def reference_token_weights(
    mask: Tensor, *, latent_size: tuple[int, int], patch_size: int, spatial_compression: int = 8
) -> Tensor:
    """Subject mask ``[N, H, W]`` in ``[0, 1]`` (pixel space, 1 = subject) -> token weights ``[N, h*w]``.

    ``(h, w) = latent_size / patch_size``, row-major like the host's patchify. Each token's weight is the
    mean of the mask over its pixel footprint (``patch_size * spatial_compression`` pixels square), after
    resizing the mask to ``latent_size * spatial_compression`` if it is not that size already (bilinear,
    antialiased). When the latent size is not a multiple of ``patch_size`` the hosts pad the latent up to
    one, so ``h = ceil(latent_h / patch_size)`` and an edge token averages the pixels it actually covers.
    Values are clamped to ``[0, 1]``; the result is float32 (float64 for a float64 mask).
    """
    if mask.ndim != 3:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected (N, H, W) (ComfyUI MASK layout).")
    if mask.shape[0] == 0 or mask.shape[1] == 0 or mask.shape[2] == 0:
        raise ValueError(f"mask has shape {tuple(mask.shape)}; expected a non-empty (N, H, W) mask.")
    latent_height, latent_width = latent_size
    for name, value in (
        ("latent height", latent_height),
        ("latent width", latent_width),
        ("patch_size", patch_size),
        ("spatial_compression", spatial_compression),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    work_dtype = torch.promote_types(mask.dtype, torch.float32)
    pixels = mask.to(work_dtype).clamp(0.0, 1.0)[:, None]
    target = (latent_height * spatial_compression, latent_width * spatial_compression)
    if tuple(pixels.shape[-2:]) != target:
        downscale = pixels.shape[-2] > target[0] or pixels.shape[-1] > target[1]
        pixels = F.interpolate(pixels, size=target, mode="bilinear", align_corners=False, antialias=downscale)
        pixels = pixels.clamp(0.0, 1.0)
    footprint = patch_size * spatial_compression
    pad_bottom = -target[0] % footprint
    pad_right = -target[1] % footprint
    if pad_bottom or pad_right:
        covered = F.pad(torch.ones_like(pixels), (0, pad_right, 0, pad_bottom))
        pixels = F.pad(pixels, (0, pad_right, 0, pad_bottom))
        token_sums = F.avg_pool2d(pixels, footprint)
        token_coverage = F.avg_pool2d(covered, footprint)
        tokens = token_sums / token_coverage
    else:
        tokens = F.avg_pool2d(pixels, footprint)
    return rearrange(tokens, "n 1 h w -> n (h w)")


def entity_activation(
    video_queries: Tensor,
    text_keys: Tensor,
    entity_positions: Sequence[int],
    *,
    frame_tokens: int,
    scale: float | None = None,
    threshold: float = 0.0,
    chunk_size: int = 4096,
) -> Tensor:
    """Entity activation ``a_i`` in ``[0, 1]`` for each video query.

    ``a_i`` is the attention probability mass on the entity tokens within the softmax over the *text*
    keys only (a cross-attention map, as in Prompt-to-Prompt), averaged over heads, then min-max
    normalised per latent frame (a frame = ``frame_tokens`` consecutive queries); a constant frame gives
    0; with ``threshold > 0`` the result is binary, ``a_i = [a_i >= threshold]``.

    Args:
        video_queries: ``[B, H, Lv, D]`` (RoPE already applied, as the attention sees them).
        text_keys: ``[B, H, Lt, D]`` (or ``[1, H, Lt, D]``, broadcast over the batch).
        entity_positions: positions of the entity tokens in ``0 .. Lt - 1``.
        frame_tokens: tokens per latent frame; ``Lv`` must be a multiple of it.
        scale: softmax scale, default ``1 / sqrt(D)``.
        threshold: 0 = soft; in ``(0, 1]`` = binary.
        chunk_size: video queries processed at once; memory is ``B * H * chunk_size * Lt`` floats, cost
            is linear in ``Lv``.

    Returns:
        ``[B, Lv]``, float32 (float64 for float64 inputs).
    """
    if video_queries.ndim != 4 or text_keys.ndim != 4:
        raise ValueError(
            f"video_queries and text_keys must be (B, H, L, D); got {tuple(video_queries.shape)} and "
            f"{tuple(text_keys.shape)}."
        )
    batch, heads, video_length, head_dim = video_queries.shape
    key_batch, key_heads, text_length, key_dim = text_keys.shape
    if key_batch not in (1, batch) or key_heads != heads or key_dim != head_dim:
        raise ValueError(
            f"text_keys has shape {tuple(text_keys.shape)}, expected ({batch}, {heads}, Lt, {head_dim}) "
            f"to match video_queries {tuple(video_queries.shape)}."
        )
    if text_length == 0:
        raise ValueError("text_keys has no tokens (Lt = 0); entity activation needs the text keys.")
    positions = [int(position) for position in entity_positions]
    if not positions:
        raise ValueError("entity_positions is empty; give the text positions of the entity words.")
    out_of_range = [position for position in positions if not 0 <= position < text_length]
    if out_of_range:
        raise ValueError(
            f"entity positions {out_of_range} are out of range for {text_length} text tokens "
            f"(valid: 0 .. {text_length - 1}); the positions must come from the same tokenizer and "
            "prompt as the text keys."
        )
    if isinstance(frame_tokens, bool) or not isinstance(frame_tokens, int) or frame_tokens < 1:
        raise ValueError(f"frame_tokens must be a positive integer, got {frame_tokens!r}.")
    if video_length == 0 or video_length % frame_tokens:
        raise ValueError(
            f"{video_length} video queries are not a whole number of frames of {frame_tokens} tokens; "
            f"expected Lv to be a positive multiple of frame_tokens."
        )
    _check_threshold(threshold)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}.")
    if scale is None:
        scale = 1.0 / math.sqrt(head_dim)

    work_dtype = torch.promote_types(video_queries.dtype, torch.float32)
    keys = text_keys.to(work_dtype)
    entity_index = torch.tensor(sorted(set(positions)), device=text_keys.device)
    masses = []
    for chunk_start in range(0, video_length, chunk_size):
        queries = video_queries[:, :, chunk_start : chunk_start + chunk_size].to(work_dtype)
        all_logits = torch.einsum("bhqd,bhkd->bhqk", queries, keys.expand(batch, -1, -1, -1)) * scale
        entity_logits = all_logits.index_select(-1, entity_index)
        log_mass = entity_logits.logsumexp(dim=-1) - all_logits.logsumexp(dim=-1)
        masses.append(reduce(log_mass.exp(), "b h q -> b q", "mean"))
    mass = torch.cat(masses, dim=1)
    return _normalise_per_frame(mass, frame_tokens, threshold)


def _normalise_per_frame(mass: Tensor, frame_tokens: int, threshold: float) -> Tensor:
    """Min-max normalise ``[B, Lv]`` within each frame; a (numerically) constant frame becomes 0."""
    frames = rearrange(mass, "b (f t) -> b f t", t=frame_tokens)
    low = frames.amin(dim=-1, keepdim=True)
    spread = frames.amax(dim=-1, keepdim=True) - low
    flat = spread <= 8 * torch.finfo(frames.dtype).eps
    normalised = torch.where(flat, torch.zeros_like(frames), (frames - low) / torch.where(flat, 1.0, spread))
    if threshold > 0.0:
        normalised = (normalised >= threshold).to(frames.dtype)
    return rearrange(normalised.clamp(0.0, 1.0), "b f t -> b (f t)")
