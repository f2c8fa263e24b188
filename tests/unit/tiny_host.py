"""A tiny pure-torch video DiT with ComfyUI's module names, for the unit tests (test code, not the product).

Not a real model: patch size 1, one token per latent pixel, full 3D self-attention, no text. What it
shares with ComfyUI's CogVideoX / Wan is what LoRA training touches: the module paths of the attention
projections (``blocks.{i}.q/k/v/attn_out``, or ``blocks.{i}.self_attn.q/k/v/o`` plus a
``cross_attn`` that must *not* be trained) and Linear layers that subclass ``nn.Linear`` but override
``forward`` (as ComfyUI's ``ops`` do, casting weights to the input).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from customvideox_core.host_signature import HostFamily, check_family


class CastingLinear(nn.Linear):
    """``nn.Linear`` whose ``forward`` casts weight and bias to the input dtype (like ComfyUI's ops)."""

    comfy_cast_weights = True

    def forward(self, input: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.to(input.dtype)
        return F.linear(input, self.weight.to(input.dtype), bias)


class _Projections(nn.Module):
    """``q``, ``k``, ``v``, ``o`` Linear layers (Wan's ``self_attn`` / ``cross_attn`` naming)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.q = CastingLinear(hidden_size, hidden_size)
        self.k = CastingLinear(hidden_size, hidden_size)
        self.v = CastingLinear(hidden_size, hidden_size)
        self.o = CastingLinear(hidden_size, hidden_size)


def _attention(queries: Tensor, keys: Tensor, values: Tensor, num_heads: int) -> Tensor:
    """``[B, L, (H D)]`` ×3 → ``[B, L, (H D)]``, softmax attention per head."""
    split = [rearrange(tensor, "b l (h d) -> b h l d", h=num_heads) for tensor in (queries, keys, values)]
    return rearrange(F.scaled_dot_product_attention(*split), "b h l d -> b l (h d)")


class TinyBlock(nn.Module):
    """Pre-norm attention + MLP block; attention projections named as in ComfyUI's ``family`` model."""

    def __init__(self, hidden_size: int, num_heads: int, family: HostFamily) -> None:
        super().__init__()
        self.family = family
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False)
        if family == "cogvideox":
            self.q = CastingLinear(hidden_size, hidden_size)
            self.k = CastingLinear(hidden_size, hidden_size)
            self.v = CastingLinear(hidden_size, hidden_size)
            self.attn_out = CastingLinear(hidden_size, hidden_size)
        else:
            self.self_attn = _Projections(hidden_size)
            self.cross_attn = _Projections(hidden_size)
        self.ff_proj = CastingLinear(hidden_size, 2 * hidden_size)
        self.ff_out = CastingLinear(2 * hidden_size, hidden_size)

    def forward(self, tokens: Tensor) -> Tensor:
        """``[B, L, D] → [B, L, D]``."""
        normed = self.norm1(tokens)
        if self.family == "cogvideox":
            projections = (self.q, self.k, self.v, self.attn_out)
        else:
            attn = self.self_attn
            projections = (attn.q, attn.k, attn.v, attn.o)
        mixed = _attention(
            projections[0](normed), projections[1](normed), projections[2](normed), self.num_heads
        )
        tokens = tokens + projections[3](mixed)
        if self.family == "wan":
            # Stand-in for text cross-attention: attends to the same tokens, never LoRA-trained.
            cross = self.cross_attn
            mixed = _attention(cross.q(normed), cross.k(normed), cross.v(normed), self.num_heads)
            tokens = tokens + cross.o(mixed)
        return tokens + self.ff_out(F.gelu(self.ff_proj(self.norm2(tokens))))


class TinyVideoDiT(nn.Module):
    """``forward(x [B, C, T, H, W], timestep [B]) -> [B, C, T, H, W]`` with ComfyUI-like module names."""

    def __init__(
        self,
        family: HostFamily = "cogvideox",
        *,
        channels: int = 4,
        hidden_size: int = 16,
        num_heads: int = 2,
        num_layers: int = 2,
        seed: int = 0,
        weight_std: float = 0.3,
    ) -> None:
        super().__init__()
        self.family = check_family(family)
        self.hidden_size = hidden_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.proj_in = CastingLinear(channels, hidden_size)
            self.time_proj = CastingLinear(hidden_size, hidden_size)
            self.blocks = nn.ModuleList(TinyBlock(hidden_size, num_heads, family) for _ in range(num_layers))
            self.proj_out = CastingLinear(hidden_size, channels)
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, std=weight_std)
                    nn.init.normal_(module.bias, std=weight_std)

    def timestep_embedding(self, timestep: Tensor) -> Tensor:
        """``[B] → [B, D]`` sinusoidal embedding (timesteps in the host's units, 0..1000)."""
        half = self.hidden_size // 2
        frequencies = torch.exp(
            -math.log(10000.0) * torch.arange(half, device=timestep.device, dtype=torch.float32) / half
        )
        angles = timestep.float()[:, None] * frequencies[None, :]
        return torch.cat([angles.cos(), angles.sin()], dim=-1)

    def forward(self, latents: Tensor, timestep: Tensor) -> Tensor:
        batch, channels, frames, height, width = latents.shape
        tokens = self.proj_in(rearrange(latents, "b c t h w -> b (t h w) c"))
        tokens = tokens + self.time_proj(self.timestep_embedding(timestep).to(tokens.dtype))[:, None, :]
        for block in self.blocks:
            tokens = block(tokens)
        output = self.proj_out(tokens)
        return rearrange(output, "b (t h w) c -> b c t h w", t=frames, h=height, w=width)

    def predict_video(self, video: Tensor, reference: Tensor, timestep: Tensor) -> Tensor:
        """The training model function (``ModelFn``): the reference frames ``[B, C, R, H, W]`` join the
        video ``[B, C, T, H, W]`` in one attention, as the pack's wrapper appends them in a real host;
        returns the video's prediction ``[B, C, T, H, W]``."""
        joined = self(torch.cat([video, reference.to(video)], dim=2), timestep)
        return joined[:, :, : video.shape[2]]
