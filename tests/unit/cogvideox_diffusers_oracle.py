"""Independent oracle for the SAT → ComfyUI CogVideoX conversion (test-only; imports nothing of ours).

Part 1 is a transcription of diffusers' ``scripts/convert_cogvideox_to_diffusers.py`` (huggingface/diffusers):
its ``TRANSFORMER_KEYS_RENAME_DICT`` (applied in order as plain substring replacements), its special-key
handlers (fused qkv split, qk-norm rename, 12-chunk AdaLN regrouping, removed keys) and the loop of
``convert_transformer`` — SAT names to diffusers' ``CogVideoXTransformer3DModel`` names.

Part 2 is the naming difference between diffusers' ``CogVideoXTransformer3DModel`` and ComfyUI's port of
it (``comfy/ldm/cogvideo/model.py``: ``blocks.N.q`` for ``transformer_blocks.N.attn1.to_q`` etc.).

Part 3 inverts both, to build a SAT state dict from a ComfyUI-layout model; ``sat_to_diffusers`` of the
result is checked against the diffusers-layout input, so the inverse is itself held to the transcription.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

# ---- Part 1: diffusers' SAT → diffusers conversion, transcribed ---------------------------------------

SAT_PREFIX_KEY = "model.diffusion_model."

TRANSFORMER_KEYS_RENAME_DICT = {
    "transformer.final_layernorm": "norm_final",
    "transformer": "transformer_blocks",
    "attention": "attn1",
    "mlp": "ff.net",
    "dense_h_to_4h": "0.proj",
    "dense_4h_to_h": "2",
    ".layers": "",
    "dense": "to_out.0",
    "input_layernorm": "norm1.norm",
    "post_attn1_layernorm": "norm2.norm",
    "time_embed.0": "time_embedding.linear_1",
    "time_embed.2": "time_embedding.linear_2",
    "mixins.patch_embed": "patch_embed",
    "mixins.final_layer.norm_final": "norm_out.norm",
    "mixins.final_layer.linear": "proj_out",
    "mixins.final_layer.adaLN_modulation.1": "norm_out.linear",
}


def reassign_query_key_value_inplace(key: str, state_dict: dict) -> None:
    to_q_key = key.replace("query_key_value", "to_q")
    to_k_key = key.replace("query_key_value", "to_k")
    to_v_key = key.replace("query_key_value", "to_v")
    to_q, to_k, to_v = torch.chunk(state_dict[key], chunks=3, dim=0)
    state_dict[to_q_key] = to_q
    state_dict[to_k_key] = to_k
    state_dict[to_v_key] = to_v
    state_dict.pop(key)


def reassign_query_key_layernorm_inplace(key: str, state_dict: dict) -> None:
    layer_id, weight_or_bias = key.split(".")[-2:]
    if "query" in key:
        new_key = f"transformer_blocks.{layer_id}.attn1.norm_q.{weight_or_bias}"
    elif "key" in key:
        new_key = f"transformer_blocks.{layer_id}.attn1.norm_k.{weight_or_bias}"
    state_dict[new_key] = state_dict.pop(key)


def reassign_adaln_norm_inplace(key: str, state_dict: dict) -> None:
    layer_id, _, weight_or_bias = key.split(".")[-3:]
    weights_or_biases = state_dict[key].chunk(12, dim=0)
    norm1_weights_or_biases = torch.cat(weights_or_biases[0:3] + weights_or_biases[6:9])
    norm2_weights_or_biases = torch.cat(weights_or_biases[3:6] + weights_or_biases[9:12])
    state_dict[f"transformer_blocks.{layer_id}.norm1.linear.{weight_or_bias}"] = norm1_weights_or_biases
    state_dict[f"transformer_blocks.{layer_id}.norm2.linear.{weight_or_bias}"] = norm2_weights_or_biases
    state_dict.pop(key)


def remove_keys_inplace(key: str, state_dict: dict) -> None:
    state_dict.pop(key)


TRANSFORMER_SPECIAL_KEYS_REMAP = {
    "query_key_value": reassign_query_key_value_inplace,
    "query_layernorm_list": reassign_query_key_layernorm_inplace,
    "key_layernorm_list": reassign_query_key_layernorm_inplace,
    "adaln_layer.adaLN_modulations": reassign_adaln_norm_inplace,
    "embed_tokens": remove_keys_inplace,
    "freqs_sin": remove_keys_inplace,
    "freqs_cos": remove_keys_inplace,
    "position_embedding": remove_keys_inplace,
}


def sat_to_diffusers(sat_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``convert_transformer``'s loop, on engine-prefixed SAT keys, without building the model."""
    state_dict = dict(sat_state)
    for key in list(state_dict.keys()):
        new_key = key[len(SAT_PREFIX_KEY) :]
        for replace_key, rename_key in TRANSFORMER_KEYS_RENAME_DICT.items():
            new_key = new_key.replace(replace_key, rename_key)
        state_dict[new_key] = state_dict.pop(key)
    for key in list(state_dict.keys()):
        for special_key, handler_fn_inplace in TRANSFORMER_SPECIAL_KEYS_REMAP.items():
            if special_key not in key:
                continue
            handler_fn_inplace(key, state_dict)
    return state_dict


# ---- Part 2: diffusers names ↔ ComfyUI names -------------------------------------------------------

DIFFUSERS_TO_COMFY = (
    ("transformer_blocks.", "blocks."),
    (".attn1.to_q.", ".q."),
    (".attn1.to_k.", ".k."),
    (".attn1.to_v.", ".v."),
    (".attn1.to_out.0.", ".attn_out."),
    (".attn1.norm_q.", ".norm_q."),
    (".attn1.norm_k.", ".norm_k."),
    (".ff.net.0.proj.", ".ff_proj."),
    (".ff.net.2.", ".ff_out."),
    ("time_embedding.linear_", "time_embedding_linear_"),
)
"""Substring replacements, in order; every other name (norm1/norm2, patch_embed, norm_final, norm_out,
proj_out) is the same in both."""


def _renamed(state_dict: dict[str, Tensor], replacements) -> dict[str, Tensor]:
    """``state_dict`` with the substring replacements ``(old, new)`` applied to every key, in order."""
    renamed = {}
    for key, tensor in state_dict.items():
        new_key = key
        for old, new in replacements:
            new_key = new_key.replace(old, new)
        renamed[new_key] = tensor
    return renamed


def diffusers_to_comfy(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    return _renamed(state_dict, DIFFUSERS_TO_COMFY)


def comfy_to_diffusers(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    return _renamed(state_dict, [(new, old) for old, new in reversed(DIFFUSERS_TO_COMFY)])


# ---- Part 3: the inverse, diffusers → SAT --------------------------------------------------------------

_BLOCK_TO_SAT = {
    "norm1.norm": "input_layernorm",
    "norm2.norm": "post_attention_layernorm",
    "attn1.to_out.0": "attention.dense",
    "ff.net.0.proj": "mlp.dense_h_to_4h",
    "ff.net.2": "mlp.dense_4h_to_h",
}
"""A block's plain modules: diffusers name → SAT name (fused and split ones are handled in the code)."""
_GLOBAL_TO_SAT = (
    ("norm_final.", "transformer.final_layernorm."),
    ("time_embedding.linear_1.", "time_embed.0."),
    ("time_embedding.linear_2.", "time_embed.2."),
    ("patch_embed.", "mixins.patch_embed."),
    ("norm_out.norm.", "mixins.final_layer.norm_final."),
    ("proj_out.", "mixins.final_layer.linear."),
    ("norm_out.linear.", "mixins.final_layer.adaLN_modulation.1."),
)
_BLOCK_KEY = re.compile(r"transformer_blocks\.(\d+)\.(.+)\.(weight|bias)")


def diffusers_to_sat(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Engine-prefixed SAT keys for a diffusers-layout CogVideoX (fused qkv, 12-chunk AdaLN)."""
    sat: dict[str, Tensor] = {}
    for key, tensor in state_dict.items():
        match = _BLOCK_KEY.fullmatch(key)
        if match is None:
            for old, new in _GLOBAL_TO_SAT:
                if key.startswith(old):
                    sat[new + key[len(old) :]] = tensor
                    break
            else:
                raise KeyError(f"no SAT name for {key}")
            continue
        layer, module, param = match.groups()
        base = f"transformer.layers.{layer}"
        if module in ("attn1.to_k", "attn1.to_v", "norm2.linear"):
            continue  # consumed with their partners below
        if module == "attn1.to_q":
            parts = [state_dict[f"transformer_blocks.{layer}.attn1.to_{x}.{param}"] for x in "qkv"]
            sat[f"{base}.attention.query_key_value.{param}"] = torch.cat(parts, dim=0)
        elif module == "norm1.linear":
            attention = state_dict[key].chunk(6, dim=0)
            feed_forward = state_dict[f"transformer_blocks.{layer}.norm2.linear.{param}"].chunk(6, dim=0)
            twelve = attention[0:3] + feed_forward[0:3] + attention[3:6] + feed_forward[3:6]
            sat[f"mixins.adaln_layer.adaLN_modulations.{layer}.1.{param}"] = torch.cat(twelve, dim=0)
        elif module in ("attn1.norm_q", "attn1.norm_k"):
            which = "query" if module.endswith("q") else "key"
            sat[f"mixins.adaln_layer.{which}_layernorm_list.{layer}.{param}"] = tensor
        else:
            sat_module = _BLOCK_TO_SAT[module]
            sat[f"{base}.{sat_module}.{param}"] = tensor
    return {SAT_PREFIX_KEY + key: tensor for key, tensor in sat.items()}


def comfy_to_sat(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    return diffusers_to_sat(comfy_to_diffusers(state_dict))
