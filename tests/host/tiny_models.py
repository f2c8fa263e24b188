"""Tiny random-weight model files that ComfyUI's own loaders detect as the real model families.

Nothing here is downloaded and nothing is shipped: every file is *built* at test time with
ComfyUI's own module classes (so the key names are exactly the ones its loaders expect), filled
with seeded random weights and saved as safetensors. Each writer returns the path it wrote.

What ComfyUI infers from the weights (``comfy/model_detection.py``) and what it cannot:

- CogVideoX: ``num_attention_heads = dim // 64`` and ``attention_head_dim = 64`` are *assumed*, so the
  hidden size fixes the head count: 128 → 2 heads. Rotary vs learned positions is decided by the
  presence of ``patch_embed.pos_embedding``; CogVideoX 1.5 is recognised by a Linear (not Conv2d)
  ``patch_embed.proj`` and gets ``patch_size_t = 2``. The 2B-style (sincos/learned positions) model
  needs ``dim % 3 == 0`` (ComfyUI builds a 3D sincos table of ``dim // 3`` per axis), so the tiny 2B
  has 3 heads of 64 (hidden 192) instead of 2. Every tiny CogVideoX has fewer than 48 heads, so
  ComfyUI gives it the 2B latent format (scale 1.15258426) — as it does for the real 2B.
- Wan 2.1: ``num_heads = dim // 128`` is assumed and ``text_dim`` is not inferred (default 4096). Both
  are set through ComfyUI's own override, a ``config`` safetensors metadata entry
  ``{"transformer": {...}}``, so the tiny Wan has 2 heads of 64 and a 32-wide text input.
- The video VAE is TAEHV ("taew2_1"-style): ComfyUI detects it by ``decoder.22.bias``; saved in
  float32 it gets no latent scaling (like lighttaew2_1). Its architecture is fixed (about 11 M
  parameters); only the weights are random.
- SD1.5: detection matches ``model_channels == 320`` and ``context_dim == 768`` but infers the depth,
  so a one-level UNet (one res block, one transformer, no middle block) is detected as ``SD15``.

Weights: attention projections are drawn with std ``ATTENTION_INIT_STD`` (0.3) — with ComfyUI's usual
std 0.02 the attention branch moves the output by ~1e-6 and every reference effect drowns in float
noise; other matrices get unit-gain std ``1/sqrt(fan_in)``; norms are identity; biases are zero.

Importable without ComfyUI: ``comfy`` is imported inside the writers only.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

CogVideoXVariant = Literal["5b", "2b", "1.5"]
COGVIDEOX_VARIANTS: tuple[CogVideoXVariant, ...] = ("5b", "2b", "1.5")

ATTENTION_INIT_STD = 0.3
"""Std of the attention projection weights (q, k, v, out) of the tiny transformers."""

TINY_TEXT_DIM = 32
"""Width of the text embeddings the tiny transformers take (CONDITIONING tensors ``[1, L, 32]``)."""

TINY_LATENT_CHANNELS = 16
"""Latent channels of every tiny video model and of the tiny VAE."""


@dataclass(frozen=True)
class TinyCogVideoXConfig:
    """What a tiny CogVideoX file is built as — and what ComfyUI must detect it as."""

    variant: CogVideoXVariant
    num_heads: int
    head_dim: int
    num_layers: int
    time_embed_dim: int
    text_embed_dim: int
    in_channels: int
    patch_size: int
    patch_size_t: int | None
    rotary: bool

    @property
    def hidden_dim(self) -> int:
        return self.num_heads * self.head_dim

    def __post_init__(self) -> None:
        if self.variant not in COGVIDEOX_VARIANTS:
            raise ValueError(
                f"CogVideoX variant {self.variant!r} is unknown; expected one of {COGVIDEOX_VARIANTS}."
            )
        if self.head_dim != 64:
            raise ValueError(f"head_dim is {self.head_dim}, but ComfyUI assumes 64 for CogVideoX; use 64.")
        if not self.rotary and self.hidden_dim % 3 != 0:
            raise ValueError(
                f"hidden size {self.hidden_dim} is not a multiple of 3, which ComfyUI's 3D sincos positions "
                "need for a 2B-style (non-rotary) CogVideoX; use a head count divisible by 3."
            )


def tiny_cogvideox_config(variant: CogVideoXVariant = "5b") -> TinyCogVideoXConfig:
    """The configuration ``write_tiny_cogvideox(variant=...)`` builds."""
    if variant not in COGVIDEOX_VARIANTS:
        raise ValueError(f"CogVideoX variant {variant!r} is unknown; expected one of {COGVIDEOX_VARIANTS}.")
    return TinyCogVideoXConfig(
        variant=variant,
        num_heads=3 if variant == "2b" else 2,
        head_dim=64,
        num_layers=2,
        time_embed_dim=128,
        text_embed_dim=TINY_TEXT_DIM,
        in_channels=TINY_LATENT_CHANNELS,
        patch_size=2,
        patch_size_t=2 if variant == "1.5" else None,
        rotary=variant != "2b",
    )


@dataclass(frozen=True)
class TinyWanConfig:
    """What the tiny Wan 2.1 T2V file is built as — and what ComfyUI must detect it as."""

    dim: int = 128
    num_heads: int = 2
    ffn_dim: int = 256
    num_layers: int = 2
    text_dim: int = TINY_TEXT_DIM
    in_channels: int = TINY_LATENT_CHANNELS
    out_channels: int = TINY_LATENT_CHANNELS

    def __post_init__(self) -> None:
        if self.dim % self.num_heads != 0:
            raise ValueError(f"Wan dim {self.dim} is not divisible by num_heads {self.num_heads}.")

    def model_kwargs(self) -> dict[str, int]:
        """The sizes as keyword arguments of ComfyUI's ``WanModel`` (and of its subclasses)."""
        return {
            "dim": self.dim,
            "ffn_dim": self.ffn_dim,
            "num_heads": self.num_heads,
            "num_layers": self.num_layers,
            "text_dim": self.text_dim,
            "in_dim": self.in_channels,
            "out_dim": self.out_channels,
        }


TINY_WAN = TinyWanConfig()

_COGVIDEOX_ATTENTION = re.compile(r"^blocks\.\d+\.(q|k|v|attn_out)\.weight$")
_WAN_ATTENTION = re.compile(r"^blocks\.\d+\.(self_attn|cross_attn)\.(q|k|v|o)\.weight$")
_SD15_ATTENTION = re.compile(r"\.attn[12]\.(to_q|to_k|to_v|to_out\.0)\.weight$")


def _fill_random(
    state_dict: dict[str, torch.Tensor],
    *,
    seed: int,
    attention: re.Pattern[str] | None = None,
    attention_std: float = 0.0,
    keep: Callable[[str], bool] = lambda name: False,
) -> dict[str, torch.Tensor]:
    """Seeded float32 weights for every tensor of ``state_dict`` (shapes kept, values replaced).

    Matrices and kernels (ndim ≥ 2) get N(0, attention_std) where ``attention`` is found in the
    name, else N(0, 1/fan_in); 1-D weights (norm scales) are ones; biases are zeros; names for
    which ``keep`` is true (computed buffers such as sincos tables) are kept as built. Iteration is
    in sorted key order, so a seed always gives the same file.
    """
    generator = torch.Generator().manual_seed(seed)
    filled: dict[str, torch.Tensor] = {}
    for name in sorted(state_dict):
        template = state_dict[name]
        if keep(name):
            filled[name] = template.detach().to(torch.float32).contiguous().clone()
            continue
        shape = template.shape
        if name.endswith("bias"):
            value = torch.zeros(shape)
        elif template.ndim >= 2 and not name.endswith("modulation"):
            fan_in = math.prod(shape[1:])
            is_attention = attention is not None and attention.search(name) is not None
            std = attention_std if is_attention else 1.0 / math.sqrt(fan_in)
            value = torch.randn(shape, generator=generator) * std
        elif name.endswith("modulation"):  # Wan's learned [1, n, dim] modulation offsets
            value = torch.randn(shape, generator=generator) / math.sqrt(shape[-1])
        else:
            value = torch.ones(shape)
        filled[name] = value.to(torch.float32).contiguous()
    return filled


def _save(path: Path | str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    import safetensors.torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)
    return path


def write_tiny_cogvideox(
    path: Path | str,
    *,
    variant: CogVideoXVariant = "5b",
    seed: int = 0,
    attention_std: float = ATTENTION_INIT_STD,
) -> Path:
    """Write a tiny CogVideoX transformer that ``UNETLoader`` detects as ``CogVideoX_T2V``.

    2 layers, heads of 64 (2 heads, hidden 128; the 2B variant has 3 heads, see the module doc),
    text embed dim 32, 16 in/out channels, patch 2. ``5b``: rotary positions; ``1.5``: rotary and
    ``patch_size_t = 2`` (Linear patch embedding); ``2b``: learned positional table holding
    ComfyUI's 3D sincos values (no rotary).
    """
    from comfy.ldm.cogvideo.model import CogVideoXTransformer3DModel
    from comfy.ops import disable_weight_init

    config = tiny_cogvideox_config(variant)
    model = CogVideoXTransformer3DModel(
        num_attention_heads=config.num_heads,
        attention_head_dim=config.head_dim,
        in_channels=config.in_channels,
        out_channels=config.in_channels,
        time_embed_dim=config.time_embed_dim,
        text_embed_dim=config.text_embed_dim,
        num_layers=config.num_layers,
        patch_size=config.patch_size,
        patch_size_t=config.patch_size_t,
        use_rotary_positional_embeddings=config.rotary,
        use_learned_positional_embeddings=not config.rotary,
        operations=disable_weight_init,
    )
    tensors = _fill_random(
        model.state_dict(),
        seed=seed,
        attention=_COGVIDEOX_ATTENTION,
        attention_std=attention_std,
        keep=lambda name: name == "patch_embed.pos_embedding",
    )
    return _save(path, tensors, {"cvx_tiny_model": f"cogvideox-{variant}", "cvx_seed": str(seed)})


def write_tiny_wan(
    path: Path | str,
    *,
    seed: int = 0,
    attention_std: float = ATTENTION_INIT_STD,
    config: TinyWanConfig = TINY_WAN,
) -> Path:
    """Write a tiny Wan 2.1 T2V transformer that ``UNETLoader`` detects as ``WAN21_T2V``.

    2 layers, dim 128, 2 heads, ffn 256, text dim 32, 16 channels. Head count and text width are
    carried in the ``config`` metadata ComfyUI reads for Wan (they cannot be inferred from shapes).
    """
    from comfy.ldm.wan.model import WanModel
    from comfy.ops import disable_weight_init

    model = WanModel(model_type="t2v", **config.model_kwargs(), operations=disable_weight_init)
    return _save_wan(path, model, config, seed=seed, attention_std=attention_std, name="wan2.1-t2v")


def _save_wan(
    path: Path | str, model, config: TinyWanConfig, *, seed: int, attention_std: float, name: str
) -> Path:
    """Random weights for a built Wan ``model`` (or subclass), with the ``config`` metadata ComfyUI reads."""
    tensors = _fill_random(
        model.state_dict(), seed=seed, attention=_WAN_ATTENTION, attention_std=attention_std
    )
    transformer_overrides = {"num_heads": config.num_heads, "text_dim": config.text_dim}
    metadata = {
        "config": json.dumps({"transformer": transformer_overrides}),
        "cvx_tiny_model": name,
        "cvx_seed": str(seed),
    }
    return _save(path, tensors, metadata)


TINY_VACE_LAYERS = 2
"""VACE blocks of the tiny VACE model: one after each of its two main blocks."""
TINY_VACE_IN_DIM = 2 * TINY_LATENT_CHANNELS + 64
"""``WanVaceToVideo``'s control latent (inactive and reactive halves) and its 8 x 8 pixel mask channels."""


def write_tiny_wan_vace(path: Path | str, *, seed: int = 0, config: TinyWanConfig = TINY_WAN) -> Path:
    """Write a tiny Wan 2.1 VACE transformer that ``UNETLoader`` detects as ``WAN21_Vace``: the tiny Wan's
    sizes (:func:`write_tiny_wan`) plus ComfyUI's ``VaceWanModel`` blocks and control patch embedding."""
    from comfy.ldm.wan.model import VaceWanModel
    from comfy.ops import disable_weight_init

    model = VaceWanModel(
        **config.model_kwargs(),
        vace_layers=TINY_VACE_LAYERS,
        vace_in_dim=TINY_VACE_IN_DIM,
        operations=disable_weight_init,
    )
    return _save_wan(path, model, config, seed=seed, attention_std=ATTENTION_INIT_STD, name="wan2.1-vace")


def write_tiny_vae(path: Path | str, *, seed: int = 0) -> Path:
    """Write a TAEHV-style 16-channel video VAE with random weights (``comfy.sd.VAE`` → ``TAEHV``).

    8× spatial and 4× temporal compression: ``[F, H, W, 3]`` pixels ↔ ``[1, 16, (F + 3) // 4, H/8, W/8]``
    latents. Convolutions are unit-gain random; the last decoder convolution has bias 0.5, so decoded
    frames sit around mid-grey instead of being clipped to black.
    """
    from comfy.taesd.taehv import TAEHV

    model = TAEHV(latent_channels=TINY_LATENT_CHANNELS)
    state_dict = model.state_dict()
    tensors = _fill_random(state_dict, seed=seed)
    last_decoder_bias = max(
        (name for name in tensors if name.startswith("decoder.") and name.endswith(".bias")),
        key=lambda name: int(name.split(".")[1]),
    )
    tensors[last_decoder_bias] = torch.full_like(tensors[last_decoder_bias], 0.5)
    return _save(path, tensors, {"cvx_tiny_model": "taehv-16ch", "cvx_seed": str(seed)})


def write_tiny_sd15_unet(path: Path | str, *, seed: int = 0) -> Path:
    """Write a one-level SD1.5 UNet (about 12 M parameters) that ``UNETLoader`` detects as ``SD15``.

    For "an unsupported model is refused" tests: it is a real ``BaseModel`` with the SD15 config
    (eps prediction, 4 latent channels, 768-wide context), just shallow.
    """
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from comfy.ops import disable_weight_init

    model = UNetModel(
        image_size=32,
        in_channels=4,
        model_channels=320,
        out_channels=4,
        num_res_blocks=[1],
        channel_mult=[1],
        num_heads=8,
        use_spatial_transformer=True,
        transformer_depth=[1],
        transformer_depth_output=[0, 0],
        transformer_depth_middle=-2,
        context_dim=768,
        legacy=False,
        operations=disable_weight_init,
    )
    tensors = _fill_random(
        model.state_dict(), seed=seed, attention=_SD15_ATTENTION, attention_std=ATTENTION_INIT_STD
    )
    half = {name: tensor.to(torch.float16) for name, tensor in tensors.items()}
    return _save(path, half, {"cvx_tiny_model": "sd15-unet-one-level", "cvx_seed": str(seed)})


# ----------------------------------------------------------------------------------------------
# Tiny image encoders (CLIP vision, DINOv2) and a tiny CLIP text model, for the score node
# ----------------------------------------------------------------------------------------------
#
# ComfyUI's ``load_clipvision_from_sd`` picks a *fixed full-size* JSON config from the layer count
# (24 layers → ViT-L, 1024 wide; ``encoder.layer.23`` → DINOv2-large), so no tiny file can pass
# through core's Load CLIP Vision. These files hold ComfyUI's own key layout (the state dict of
# ``comfy.clip_vision.ClipVisionModel``'s module, built from a tiny config) plus that config in the
# safetensors metadata (``cvx_clip_vision_config``); ``load_tiny_clip_vision`` builds the same
# ``ClipVisionModel`` that Load CLIP Vision returns, from that config, and loads the weights with
# ``ClipVisionModel.load_sd`` — the object the node receives is of the real class.

CLIP_VISION_CONFIG_KEY = "cvx_clip_vision_config"

TINY_CLIP_VISION_CONFIG: dict = {
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "hidden_act": "quick_gelu",
    "hidden_size": 48,
    "image_size": 32,
    "intermediate_size": 96,
    "layer_norm_eps": 1e-05,
    "model_type": "clip_vision_model",
    "num_attention_heads": 2,
    "num_channels": 3,
    "num_hidden_layers": 2,
    "patch_size": 8,
    "projection_dim": 32,
}
"""A ViT-L-shaped config (same keys as ComfyUI's ``clip_vision_config_vitl.json``), tiny."""

TINY_DINOV2_CONFIG: dict = {
    "hidden_size": 48,
    "use_mask_token": True,
    "patch_size": 14,
    "image_size": 518,
    "num_channels": 3,
    "num_attention_heads": 2,
    "attention_probs_dropout_prob": 0.0,
    "hidden_dropout_prob": 0.0,
    "hidden_act": "gelu",
    "mlp_ratio": 4,
    "model_type": "dinov2",
    "num_hidden_layers": 2,
    "layer_norm_eps": 1e-6,
    "qkv_bias": True,
    "use_swiglu_ffn": False,
    "layerscale_value": 1.0,
    "drop_path_rate": 0.0,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
}
"""A DINOv2-shaped config (same keys as ComfyUI's ``image_encoders/dino2_large.json``), tiny in width
and depth only: ComfyUI 0.21.0's ``Dino2Embeddings`` hard-codes the 518-pixel image and 14-pixel patches
(a 37 × 37 position table), so the tiny model keeps that geometry."""

TINY_CLIP_TEXT_CONFIG: dict = {
    "eos_token_id": 49407,
    "hidden_act": "quick_gelu",
    "hidden_size": 32,
    "intermediate_size": 64,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "projection_dim": 32,
    "vocab_size": 49408,
}
"""The text twin of ``TINY_CLIP_VISION_CONFIG``: 32 wide, so its 32×32 text projection meets the
vision projection's 32-wide space (ComfyUI's CLIP text projection is square)."""


def _config_file(config: dict, directory: Path) -> Path:
    """ComfyUI 0.21's ``ClipVisionModel`` takes a JSON file path (0.33 also a dict): write one."""
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(config, sort_keys=True)
    path = directory / f"cvx_tiny_vision_{abs(hash(text)) % 10**12}.json"
    if not path.exists():
        path.write_text(text, encoding="utf-8")
    return path


def write_tiny_clip_vision(path: Path | str, *, config: dict, seed: int = 0) -> Path:
    """Write a tiny image encoder (``config``'s ``model_type``: clip_vision_model or dinov2) in ComfyUI's
    key layout, with ``config`` in the ``cvx_clip_vision_config`` metadata entry."""
    import tempfile

    import comfy.clip_vision

    model = comfy.clip_vision.ClipVisionModel(str(_config_file(config, Path(tempfile.gettempdir()))))
    tensors = _fill_random(model.get_sd(), seed=seed)
    metadata = {CLIP_VISION_CONFIG_KEY: json.dumps(config), "cvx_tiny_model": config["model_type"]}
    return _save(path, tensors, metadata)


def load_tiny_clip_vision(path: Path | str):
    """The ``comfy.clip_vision.ClipVisionModel`` of a file written by :func:`write_tiny_clip_vision`."""
    import tempfile

    import comfy.clip_vision
    import safetensors

    with safetensors.safe_open(str(path), framework="pt") as handle:
        config = json.loads(handle.metadata()[CLIP_VISION_CONFIG_KEY])
        state_dict = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    model = comfy.clip_vision.ClipVisionModel(str(_config_file(config, Path(tempfile.gettempdir()))))
    missing, _unexpected = model.load_sd(state_dict)
    if missing:
        raise RuntimeError(f"tiny clip vision {path} lacks weights {missing}")
    return model


def build_tiny_clip_text(*, seed: int = 0, config: dict = TINY_CLIP_TEXT_CONFIG):
    """A ``comfy.sd.CLIP`` holding an SD1-type CLIP text model (ComfyUI's classes, real CLIP tokenizer)
    of ``config``'s size, with seeded random weights. Like SD1's CLIP-L it returns the *unprojected*
    pooled feature by default."""
    import functools
    import types

    import comfy.sd
    import comfy.sd1_clip

    text_model = functools.partial(
        comfy.sd1_clip.SDClipModel, textmodel_json_config=dict(config), return_projected_pooled=False
    )
    target = types.SimpleNamespace(
        params={},
        clip=functools.partial(comfy.sd1_clip.SD1ClipModel, clip_model=text_model),
        tokenizer=comfy.sd1_clip.SD1Tokenizer,
    )
    template = comfy.sd1_clip.SDClipModel(textmodel_json_config=dict(config)).transformer.state_dict()
    weights = _fill_random(template, seed=seed)
    return comfy.sd.CLIP(target=target, state_dict=[weights])
