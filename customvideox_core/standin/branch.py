"""Stand-In's reference branch on a Wan DiT: the reference tokens' keys and values of every block.

What the published code does for the reference tokens (``models/wan_video_dit.py``, ``DiTBlock.forward``
with ``x_ip`` and ``SelfAttention.forward`` with ``kv_cache is None``):

1. the reference latent ``[1, C, 1, H, W]`` is patchified by the DiT's own ``patch_embedding``;
2. it gets its own modulation from timestep 0 (``time_projection(time_embedding(sinusoid(0)))``);
3. in every block: ``norm1`` + modulation, then ``q = norm_q(W_q x + LoRA_q x)``, ``k = norm_k(W_k x +
   LoRA_k x)``, ``v = W_v x + LoRA_v x``, RoPE at the reference positions (time -1, rows/columns right
   past the video's), attention over the reference tokens only, ``o``, gate; **no cross-attention**;
   then ``norm2`` + modulation, the FFN and its gate;
4. the keys and values are kept and appended to the video's keys in the video's self-attention.

Because the reference tokens see only themselves, at timestep 0, with no text, all of this depends on
the reference latent, the DiT's weights (one expert), the LoRA and the video's grid size (the RoPE row
and column offsets) — never on the noisy video, the sigma or the prompt. It is computed once per sampling
and reused (:mod:`.cache`).

The DiT is used through its modules only (ComfyUI's ``WanModel`` attribute names, listed in
:func:`compute_reference_kv`); nothing of the host's forward is run or copied.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

from ..attention import AttentionFn, sdpa_attention
from .lora_file import StandInLoRA
from .rope import STANDIN_PLACEMENT, ReferencePlacement, apply_rope, reference_positions, rope_angles


@dataclass(frozen=True, eq=False)
class ReferenceKV:
    """Keys and values of the reference tokens, one ``[1, Lr, dim]`` pair per block (keys RoPE'd)."""

    keys: tuple[Tensor, ...]
    values: tuple[Tensor, ...]
    grid: tuple[int, int]

    @property
    def tokens(self) -> int:
        return self.grid[0] * self.grid[1]


def timestep_zero_embedding(freq_dim: int) -> Tensor:
    """Wan's sinusoidal timestep embedding at t = 0, ``[1, freq_dim]``: ``[cos(0)…, sin(0)…] = [1…, 0…]``."""
    if freq_dim < 2 or freq_dim % 2:
        raise ValueError(f"freq_dim must be an even number >= 2, got {freq_dim}.")
    half = freq_dim // 2
    return torch.cat([torch.ones(1, half), torch.zeros(1, half)], dim=1)


def reference_grid(latent: Tensor, patch_size: tuple[int, int, int]) -> tuple[int, int]:
    """Token grid ``(rows, cols)`` of one reference latent ``[1, C, 1, H, W]``; H, W must divide evenly."""
    if latent.ndim != 5 or latent.shape[0] != 1 or latent.shape[2] != 1:
        raise ValueError(
            f"the Stand-In reference latent has shape {tuple(latent.shape)}, expected (1, C, 1, H, W): "
            "one reference image."
        )
    _, ph, pw = patch_size
    height, width = latent.shape[-2:]
    if height % ph or width % pw:
        raise ValueError(
            f"the reference latent is {height}x{width}, not a multiple of the patch {ph}x{pw}: encode the "
            f"reference at a size that is a multiple of {8 * ph} pixels (Stand-In uses 512x512)."
        )
    return height // ph, width // pw


def _modulation(block, e0: Tensor) -> tuple[Tensor, ...]:
    """The block's six ``[1, 1, dim]`` modulation rows (shift, scale, gate for attention, then FFN)."""
    return (block.modulation.to(device=e0.device, dtype=e0.dtype) + e0).chunk(6, dim=1)


def reference_kv(
    model,
    reference_latent: Tensor,
    lora: StandInLoRA | None,
    *,
    strength: float,
    video_grid: tuple[int, int, int],
    dtype: torch.dtype,
    device: torch.device | str | None = None,
    placement: ReferencePlacement = STANDIN_PLACEMENT,
    attention_fn: AttentionFn | None = None,
) -> ReferenceKV:
    """Run Stand-In's reference branch through ``model`` and return every block's reference K/V.

    Autograd runs through it (training the cached layout's LoRA); :func:`compute_reference_kv` is the
    same without gradients, for sampling.

    Args:
        model: a Wan DiT with ``patch_embedding``, ``patch_size``, ``freq_dim``, ``dim``, ``num_heads``,
            ``time_embedding``, ``time_projection`` and ``blocks[i]`` with ``modulation``, ``norm1``,
            ``norm2``, ``ffn`` and ``self_attn.{q, k, v, o, norm_q, norm_k}``.
        reference_latent: ``[1, C, 1, H, W]`` in the model's latent space (``process_latent_in`` done).
        lora: the Stand-In LoRA (reference tokens only), or None for the branch without a LoRA.
        strength: multiplier of the LoRA deltas (1 = as published; 0 = no LoRA).
        video_grid: the video's token grid ``(f, h, w)`` (RoPE rows/columns start past ``h``/``w``).
        dtype: the dtype the DiT computes in.
        device: the device it computes on (the video's); default: where ``patch_embedding``'s weights are.
        attention_fn: backend for the reference-to-reference attention (``[1, H, Lr, D]``); SDPA default.

    Returns:
        :class:`ReferenceKV` with ``keys[i]``, ``values[i]`` ``[1, Lr, dim]`` as block ``i``'s
        self-attention sees them (keys normalised and rotated).
    """
    attention = sdpa_attention if attention_fn is None else attention_fn
    blocks = list(model.blocks)
    dim, heads = int(model.dim), int(model.num_heads)
    if lora is not None:
        lora.check_model(num_blocks=len(blocks), dim=dim)
    grid = reference_grid(reference_latent, tuple(model.patch_size))
    if device is None:
        device = next(model.patch_embedding.parameters()).device
    latent = reference_latent.to(device=device)
    tokens = model.patch_embedding(latent.float()).to(dtype)
    tokens = rearrange(tokens, "b c f h w -> b (f h w) c")
    embedding = model.time_embedding(
        timestep_zero_embedding(int(model.freq_dim)).to(device=device, dtype=dtype)
    )
    e0 = model.time_projection(embedding).unflatten(1, (6, dim))  # [1, 6, dim]
    angles = rope_angles(reference_positions(video_grid, grid, placement), dim // heads)

    keys: list[Tensor] = []
    values: list[Tensor] = []
    for index, block in enumerate(blocks):
        shift, scale, gate, ffn_shift, ffn_scale, ffn_gate = _modulation(block, e0.to(tokens.dtype))
        hidden = block.norm1(tokens) * (1 + scale) + shift
        attn = block.self_attn
        q_lin, k_lin, v_lin = attn.q(hidden), attn.k(hidden), attn.v(hidden)
        if lora is not None and strength != 0.0:
            q_lin = q_lin + lora.pair(index, "q").delta(hidden, strength)
            k_lin = k_lin + lora.pair(index, "k").delta(hidden, strength)
            v_lin = v_lin + lora.pair(index, "v").delta(hidden, strength)
        query = apply_rope(attn.norm_q(q_lin).unflatten(-1, (heads, -1)), angles)
        key = apply_rope(attn.norm_k(k_lin).unflatten(-1, (heads, -1)), angles)
        keys.append(key.flatten(-2))
        values.append(v_lin)
        if index == len(blocks) - 1:
            break  # the last block's reference output is never read
        mixed = attention(
            rearrange(query, "b l h d -> b h l d"),
            rearrange(key, "b l h d -> b h l d"),
            rearrange(v_lin, "b l (h d) -> b h l d", h=heads),
        )
        tokens = tokens + gate * attn.o(rearrange(mixed, "b h l d -> b l (h d)"))
        tokens = tokens + ffn_gate * block.ffn(block.norm2(tokens) * (1 + ffn_scale) + ffn_shift)
    return ReferenceKV(keys=tuple(keys), values=tuple(values), grid=grid)


compute_reference_kv = torch.no_grad()(reference_kv)
""":func:`reference_kv` without gradients: what sampling computes once and caches."""
