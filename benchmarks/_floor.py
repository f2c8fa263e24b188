"""The physical floor of a step: FLOPs counted by hand from the token counts, independent of any code run.

Every layer that maps tokens costs ``2 · tokens · in · out`` FLOPs (one multiply and one add per weight and
token), every attention call ``4 · queries · keys · width`` (``q·kᵀ`` and ``p·v``, summed over the heads),
whatever kernel computes it. A reference adds tokens (joint layout: they pass through every layer) or keys
(cached layout: the video's self-attention reads them), so the floor of a pass is this count at the pass's
token counts, and its ratio to the base pass is the least any exact implementation can cost:

    CogVideoX-5B, one reference frame: 226 text + 17,550 video + 1,350 reference tokens in every layer.

The counts follow ComfyUI's modules (``comfy/ldm/cogvideo/model.py``, ``comfy/ldm/wan/model.py``) layer by
layer, written out here from their shapes; nothing is read from a model. What a pack adds beyond the
tokens (ERAE's entity measurement, the bias factors, elementwise work) is not in the floor: it is the
measured cost's distance from it. Elementwise ops (norms, RoPE, activations) are not counted on either
side (``FlopCounterMode`` counts matrix products, convolutions and fused attention only).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Flops:
    """FLOPs of some work: ``linear`` (matrix products of layers, the patch convolution) and ``attention``
    (fused attention calls)."""

    linear: int
    attention: int

    @property
    def total(self) -> int:
        return self.linear + self.attention

    def __add__(self, other: Flops) -> Flops:
        return Flops(self.linear + other.linear, self.attention + other.attention)

    def __sub__(self, other: Flops) -> Flops:
        return Flops(self.linear - other.linear, self.attention - other.attention)

    def __mul__(self, times: int) -> Flops:
        return Flops(self.linear * times, self.attention * times)

    __rmul__ = __mul__


def _linear(tokens: int, inputs: int, outputs: int) -> int:
    return 2 * tokens * inputs * outputs


def _attention(queries: int, keys: int, width: int) -> int:
    return 4 * queries * keys * width


@dataclass(frozen=True)
class CogVideoXDims:
    """ComfyUI's ``CogVideoXTransformer3DModel`` (2D patches, as CogVideoX-2B/5B)."""

    layers: int
    dim: int
    time_dim: int = 512
    text_dim: int = 4096
    channels: int = 16
    patch: int = 2
    ff_mult: int = 4

    def pass_flops(self, text: int, visual: int) -> Flops:
        """One row's DiT pass over ``text`` text tokens and ``visual`` patch tokens (video + reference):
        every block runs q/k/v/out and the feed-forward on the joint ``[text | visual]`` sequence and its
        two AdaLN-zero linears once per row; patch and text embeddings, time embedding, the output norm's
        linear and the output projection around them."""
        d, t, tokens = self.dim, self.time_dim, text + visual
        patch_in = self.channels * self.patch**2
        block = (
            4 * _linear(tokens, d, d)
            + _linear(tokens, d, self.ff_mult * d)
            + _linear(tokens, self.ff_mult * d, d)
            + 2 * _linear(1, t, 6 * d)
        )
        around = (
            _linear(text, self.text_dim, d)
            + _linear(visual, patch_in, d)
            + _linear(1, d, t)
            + _linear(1, t, t)
            + _linear(1, t, 2 * d)
            + _linear(visual, d, patch_in)
        )
        return Flops(self.layers * block + around, self.layers * _attention(tokens, tokens, d))


@dataclass(frozen=True)
class WanDims:
    """ComfyUI's ``WanModel`` (Wan 2.1/2.2 text-to-video, patch 1×2×2)."""

    layers: int
    dim: int
    ffn: int
    text_dim: int = 4096
    freq_dim: int = 256
    channels: int = 16

    @property
    def patch_in(self) -> int:
        return self.channels * 4

    def pass_flops(self, text: int, video: int, extra_keys: int = 0) -> Flops:
        """One row's DiT pass over ``video`` patch tokens (appended reference frames included) and ``text``
        text tokens; ``extra_keys``: keys appended to every self-attention (a cached reference branch)."""
        d = self.dim
        block = (
            4 * _linear(video, d, d)  # self-attention q, k, v, o
            + 2 * _linear(video, d, d)  # cross-attention q, o
            + 2 * _linear(text, d, d)  # cross-attention k, v over the text
            + _linear(video, d, self.ffn)
            + _linear(video, self.ffn, d)
        )
        attention = _attention(video, video + extra_keys, d) + _attention(video, text, d)
        around = (
            _linear(video, self.patch_in, d)
            + _linear(text, self.text_dim, d)
            + _linear(text, d, d)
            + _linear(1, self.freq_dim, d)
            + _linear(1, d, d)
            + _linear(1, d, 6 * d)
            + _linear(video, d, self.patch_in)
        )
        return Flops(self.layers * block + around, self.layers * attention)

    def branch_flops(self, reference: int, rank: int) -> Flops:
        """Stand-In's reference branch once (``customvideox_core/standin/branch.py``): the reference tokens
        at timestep 0 through every block, attending to themselves; q/k/v with a rank-``rank`` LoRA in every
        block, attention, output and feed-forward in all blocks but the last (whose output is not read)."""
        d = self.dim
        qkv = 3 * (_linear(reference, d, d) + _linear(reference, d, rank) + _linear(reference, rank, d))
        rest = _linear(reference, d, d) + _linear(reference, d, self.ffn) + _linear(reference, self.ffn, d)
        around = (
            _linear(reference, self.patch_in, d)
            + _linear(1, self.freq_dim, d)
            + _linear(1, d, d)
            + _linear(1, d, 6 * d)
        )
        return Flops(
            self.layers * qkv + (self.layers - 1) * rest + around,
            (self.layers - 1) * _attention(reference, reference, d),
        )


def cache_bytes(layers: int, reference: int, dim: int, element_bytes: int) -> int:
    """Stand-In's cache: a key and a value ``[reference, dim]`` per layer, ``2 · layers · Lr · dim · bytes``."""
    return 2 * layers * reference * dim * element_bytes
