"""SAT CogVideoX state dict → ComfyUI's native CogVideoX layout (``comfy/ldm/cogvideo/model.py``).

Concat-ID (ML-GSAI) published its CogVideoX-5B model as a full fine-tune in SwissArmyTransformer (SAT)
format: the ``DiffusionTransformer`` of ``dit_video_concat.py`` under the engine prefix
``model.diffusion_model.``, the stock CogVideoX-5B architecture (42 layers, 48 heads of 64, rotary 3D
positions, qk LayerNorm, text width 4096) with **no extra parameters** — the reference frames are plain
extra latent frames appended after the video, so the weights are CogVideoX-5B-shaped. Its RoPE table
is built for 13 + 5 latent frames (``compressed_num_frames + 5``), which ComfyUI computes on the fly.

SAT names → ComfyUI names (one rule each; ``{i}`` the layer, ``{p}`` weight or bias):

=====================================================  =============================================
SAT (after ``model.diffusion_model.``)                 ComfyUI
=====================================================  =============================================
``transformer.layers.{i}.input_layernorm.{p}``         ``blocks.{i}.norm1.norm.{p}``
``transformer.layers.{i}.attention.query_key_value``   ``blocks.{i}.q`` / ``k`` / ``v`` (rows split in 3)
``transformer.layers.{i}.attention.dense``             ``blocks.{i}.attn_out``
``transformer.layers.{i}.post_attention_layernorm``    ``blocks.{i}.norm2.norm``
``transformer.layers.{i}.mlp.dense_h_to_4h``           ``blocks.{i}.ff_proj``
``transformer.layers.{i}.mlp.dense_4h_to_h``           ``blocks.{i}.ff_out``
``mixins.adaln_layer.adaLN_modulations.{i}.1``         ``blocks.{i}.norm1.linear`` + ``norm2.linear``
``mixins.adaln_layer.query_layernorm_list.{i}``        ``blocks.{i}.norm_q``
``mixins.adaln_layer.key_layernorm_list.{i}``          ``blocks.{i}.norm_k``
``transformer.final_layernorm``                        ``norm_final``
``mixins.patch_embed.proj`` / ``.text_proj``           ``patch_embed.proj`` / ``.text_proj``
``time_embed.0`` / ``time_embed.2``                    ``time_embedding_linear_1`` / ``_2``
``mixins.final_layer.norm_final``                      ``norm_out.norm``
``mixins.final_layer.linear``                          ``proj_out``
``mixins.final_layer.adaLN_modulation.1``              ``norm_out.linear``
=====================================================  =============================================

The per-layer AdaLN of SAT's ``AdaLNMixin`` emits 12 chunks in the order
``shift/scale/gate_msa, shift/scale/gate_mlp, text_shift/scale/gate_msa, text_shift/scale/gate_mlp``;
ComfyUI's ``CogVideoXLayerNormZero`` emits 6 (``shift, scale, gate, enc_shift, enc_scale, enc_gate``),
so ``norm1.linear`` takes chunks 0-2 and 6-8 and ``norm2.linear`` chunks 3-5 and 9-11.

Computed tables that SAT may carry (``freqs_sin``/``freqs_cos``, the unused ``word_embeddings`` /
``position_embeddings`` placeholders) are dropped; keys outside the DiT (VAE ``first_stage_model.``, text
encoder ``conditioner.``, ``denoiser.``/``loss_fn.`` buffers) are left out. Anything else is an error
that lists the keys, and a required ComfyUI key that nothing produced is an error too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

CONVERTER_ID = "customvideox_core.convert.sat_cogvideox/1"
SAT_DIT_PREFIX = "model.diffusion_model."
NON_DIT_PREFIXES = ("first_stage_model.", "conditioner.", "denoiser.", "loss_fn.", "model_ema.")
PARAMS = ("weight", "bias")
_LAYER = r"(?P<layer>\d+)"
_PARAM = r"(?P<param>weight|bias)"

Split = Callable[[Tensor, str], tuple[Tensor, ...]]


class ConversionError(ValueError):
    """The state dict is not a SAT CogVideoX (unknown keys, missing keys, or shapes that do not split)."""


def keep_whole(tensor: Tensor, key: str) -> tuple[Tensor, ...]:
    return (tensor,)


def split_query_key_value(tensor: Tensor, key: str) -> tuple[Tensor, ...]:
    """SAT's fused ``query_key_value`` ``[3·D, D]`` (bias ``[3·D]``) → q, k, v rows, in that order."""
    if tensor.shape[0] % 3:
        raise ConversionError(f"{key} has {tensor.shape[0]} rows, expected a multiple of 3 (fused q, k, v)")
    return tuple(tensor.chunk(3, dim=0))


def split_adaln_modulation(tensor: Tensor, key: str) -> tuple[Tensor, ...]:
    """SAT's 12-chunk layer AdaLN ``[12·D, E]`` → (``norm1.linear`` ``[6·D, E]``, ``norm2.linear``)."""
    if tensor.shape[0] % 12:
        raise ConversionError(
            f"{key} has {tensor.shape[0]} rows, expected a multiple of 12 (SAT's 12 AdaLN chunks)"
        )
    chunks = tensor.chunk(12, dim=0)
    attention = torch.cat(chunks[0:3] + chunks[6:9], dim=0)  # video shift/scale/gate, text shift/scale/gate
    feed_forward = torch.cat(chunks[3:6] + chunks[9:12], dim=0)
    return attention, feed_forward


@dataclass(frozen=True)
class KeyRule:
    """One SAT key pattern and the ComfyUI key(s) its tensor becomes (``split`` gives one per target)."""

    source: re.Pattern[str]
    targets: tuple[str, ...]
    split: Split = keep_whole

    @property
    def per_layer(self) -> bool:
        return "layer" in self.source.groupindex

    def target_keys(self, layer: int | None, param: str) -> tuple[str, ...]:
        return tuple(target.format(layer=layer, param=param) for target in self.targets)


def _rule(pattern: str, *targets: str, split: Split = keep_whole) -> KeyRule:
    return KeyRule(source=re.compile(pattern), targets=targets, split=split)


_BLOCK = rf"transformer\.layers\.{_LAYER}"
_ADALN = r"mixins\.adaln_layer"

SAT_COGVIDEOX_RULES: tuple[KeyRule, ...] = (
    _rule(rf"{_BLOCK}\.input_layernorm\.{_PARAM}", "blocks.{layer}.norm1.norm.{param}"),
    _rule(
        rf"{_BLOCK}\.attention\.query_key_value\.{_PARAM}",
        "blocks.{layer}.q.{param}",
        "blocks.{layer}.k.{param}",
        "blocks.{layer}.v.{param}",
        split=split_query_key_value,
    ),
    _rule(rf"{_BLOCK}\.attention\.dense\.{_PARAM}", "blocks.{layer}.attn_out.{param}"),
    _rule(rf"{_BLOCK}\.post_attention_layernorm\.{_PARAM}", "blocks.{layer}.norm2.norm.{param}"),
    _rule(rf"{_BLOCK}\.mlp\.dense_h_to_4h\.{_PARAM}", "blocks.{layer}.ff_proj.{param}"),
    _rule(rf"{_BLOCK}\.mlp\.dense_4h_to_h\.{_PARAM}", "blocks.{layer}.ff_out.{param}"),
    _rule(
        rf"{_ADALN}\.adaLN_modulations\.{_LAYER}\.1\.{_PARAM}",
        "blocks.{layer}.norm1.linear.{param}",
        "blocks.{layer}.norm2.linear.{param}",
        split=split_adaln_modulation,
    ),
    _rule(rf"{_ADALN}\.query_layernorm_list\.{_LAYER}\.{_PARAM}", "blocks.{layer}.norm_q.{param}"),
    _rule(rf"{_ADALN}\.key_layernorm_list\.{_LAYER}\.{_PARAM}", "blocks.{layer}.norm_k.{param}"),
    _rule(rf"transformer\.final_layernorm\.{_PARAM}", "norm_final.{param}"),
    _rule(rf"mixins\.patch_embed\.proj\.{_PARAM}", "patch_embed.proj.{param}"),
    _rule(rf"mixins\.patch_embed\.text_proj\.{_PARAM}", "patch_embed.text_proj.{param}"),
    _rule(rf"time_embed\.0\.{_PARAM}", "time_embedding_linear_1.{param}"),
    _rule(rf"time_embed\.2\.{_PARAM}", "time_embedding_linear_2.{param}"),
    _rule(rf"mixins\.final_layer\.norm_final\.{_PARAM}", "norm_out.norm.{param}"),
    _rule(rf"mixins\.final_layer\.linear\.{_PARAM}", "proj_out.{param}"),
    _rule(rf"mixins\.final_layer\.adaLN_modulation\.1\.{_PARAM}", "norm_out.linear.{param}"),
)
"""Every SAT CogVideoX-5B DiT weight, and where it goes in ComfyUI's layout."""

DROPPED_KEYS: tuple[re.Pattern[str], ...] = (
    re.compile(r"mixins\.pos_embed\.freqs_(sin|cos)"),
    re.compile(r"transformer\.(word_embeddings|position_embeddings)\.weight"),
)
"""Computed RoPE tables and SAT's unused token/position placeholders: not weights, ComfyUI recomputes."""

_UNKNOWN_KEY_HINTS: tuple[tuple[str, str], ...] = (
    (
        "pos_embed.pos_embedding",
        "a positional-embedding table: this is a CogVideoX-2B-style or learned-position model, while the "
        "converter handles the rotary CogVideoX-5B that Concat-ID fine-tuned",
    ),
    ("matrix_A", "LoRA mixin weights: merge the LoRA into the model in SAT first, then convert"),
    ("matrix_B", "LoRA mixin weights: merge the LoRA into the model in SAT first, then convert"),
    ("label_emb", "a class/ofs embedding: not part of CogVideoX-5B T2V"),
    ("blocks.0.norm1.linear", "already ComfyUI's CogVideoX layout: load it with Load Diffusion Model as is"),
    ("transformer_blocks.", "a diffusers layout, not SAT: this converter reads SAT checkpoints"),
)


@dataclass(frozen=True)
class ConversionResult:
    """ComfyUI-layout tensors and what was left out. ``skipped``: non-DiT keys; ``dropped``: computed."""

    tensors: dict[str, Tensor]
    num_layers: int
    skipped: tuple[str, ...]
    dropped: tuple[str, ...]


def expected_comfy_keys(num_layers: int) -> frozenset[str]:
    """Every key ComfyUI's CogVideoX-5B-style (rotary, Conv2d patch) transformer of ``num_layers`` has."""
    keys: set[str] = set()
    for rule in SAT_COGVIDEOX_RULES:
        layers = range(num_layers) if rule.per_layer else (None,)
        for layer in layers:
            for param in PARAMS:
                keys.update(rule.target_keys(layer, param))
    return frozenset(keys)


def convert_sat_cogvideox(state_dict: Mapping[str, Tensor]) -> ConversionResult:
    """Map a SAT CogVideoX-5B state dict (engine-prefixed or bare network keys) to ComfyUI's layout.

    Raises :class:`ConversionError` listing unknown keys (with a hint where the key says what the file
    is), missing ComfyUI keys, non-contiguous layer numbers, or fused tensors that do not split.
    """
    network, skipped = _select_network(state_dict)
    converted: dict[str, Tensor] = {}
    layers: set[int] = set()
    unknown: list[str] = []
    dropped: list[str] = []
    for key in sorted(network):
        if any(pattern.fullmatch(key) for pattern in DROPPED_KEYS):
            dropped.append(key)
            continue
        rule, match = _matching_rule(key)
        if rule is None:
            unknown.append(key)
            continue
        groups = match.groupdict()
        layer = int(groups["layer"]) if rule.per_layer else None
        if layer is not None:
            layers.add(layer)
        parts = rule.split(network[key], key)
        for target, part in zip(rule.target_keys(layer, groups["param"]), parts, strict=True):
            converted[target] = part
    if unknown:
        raise ConversionError(_unknown_keys_message(unknown, prefixed=len(network) != len(state_dict)))
    num_layers = _layer_count(layers)
    missing = sorted(expected_comfy_keys(num_layers) - converted.keys())
    if missing:
        raise ConversionError(
            f"the checkpoint lacks {len(missing)} weight(s) a CogVideoX-5B with {num_layers} layers needs "
            f"(ComfyUI names): {_listing(missing)}. The file is incomplete or not a SAT CogVideoX."
        )
    return ConversionResult(
        tensors=converted, num_layers=num_layers, skipped=tuple(skipped), dropped=tuple(dropped)
    )


def conversion_metadata(result: ConversionResult, *, source: str) -> dict[str, str]:
    """Safetensors header naming where the converted weights came from."""
    dtypes = sorted({str(tensor.dtype).removeprefix("torch.") for tensor in result.tensors.values()})
    return {
        "format": "pt",
        "cvx_converted_from": "sat-cogvideox",
        "cvx_source": source,
        "cvx_converter": CONVERTER_ID,
        "cvx_num_layers": str(result.num_layers),
        "cvx_dtypes": ",".join(dtypes),
    }


def _select_network(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """The DiT's own keys (engine prefix stripped) and the non-DiT keys left out."""
    if not any(key.startswith(SAT_DIT_PREFIX) for key in state_dict):
        return dict(state_dict), []
    network: dict[str, Tensor] = {}
    skipped: list[str] = []
    foreign: list[str] = []
    for key, tensor in state_dict.items():
        if key.startswith(SAT_DIT_PREFIX):
            network[key[len(SAT_DIT_PREFIX) :]] = tensor
        elif key.startswith(NON_DIT_PREFIXES):
            skipped.append(key)
        else:
            foreign.append(key)
    if foreign:
        raise ConversionError(
            f"{len(foreign)} key(s) are neither the DiT ('{SAT_DIT_PREFIX}…') nor a known non-DiT part "
            f"{NON_DIT_PREFIXES}: {_listing(sorted(foreign))}"
        )
    if skipped:
        logger.info("left out %d non-DiT key(s) (VAE, text encoder, denoiser buffers)", len(skipped))
    return network, sorted(skipped)


def _matching_rule(key: str) -> tuple[KeyRule | None, re.Match[str] | None]:
    for rule in SAT_COGVIDEOX_RULES:
        match = rule.source.fullmatch(key)
        if match is not None:
            return rule, match
    return None, None


def _layer_count(layers: set[int]) -> int:
    if not layers:
        raise ConversionError("the checkpoint has no transformer layers ('transformer.layers.N.…' keys)")
    count = max(layers) + 1
    absent = sorted(set(range(count)) - layers)
    if absent:
        raise ConversionError(
            f"transformer layers are not numbered 0…{count - 1}: layers {absent} are absent"
        )
    return count


def _unknown_keys_message(unknown: list[str], *, prefixed: bool) -> str:
    where = f" (after the '{SAT_DIT_PREFIX}' prefix)" if prefixed else ""
    hints = sorted({hint for fragment, hint in _UNKNOWN_KEY_HINTS for key in unknown if fragment in key})
    hint_text = "".join(f" Hint: {hint}." for hint in hints)
    return (
        f"{len(unknown)} key(s){where} are not part of a SAT CogVideoX-5B DiT: {_listing(unknown)}."
        f"{hint_text} Nothing was written."
    )


def _listing(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" … and {len(keys) - limit} more" if len(keys) > limit else "")


__all__ = [
    "CONVERTER_ID",
    "DROPPED_KEYS",
    "SAT_COGVIDEOX_RULES",
    "SAT_DIT_PREFIX",
    "ConversionError",
    "ConversionResult",
    "KeyRule",
    "conversion_metadata",
    "convert_sat_cogvideox",
    "expected_comfy_keys",
]
