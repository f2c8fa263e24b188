"""Convert LoRA state dicts to the generic key form ComfyUI's ``load_lora`` accepts for any model.

Output keys: ``diffusion_model.<module path>.lora_A.weight`` ``[rank, in]``,
``diffusion_model.<module path>.lora_B.weight`` ``[out, rank]`` and optionally
``diffusion_model.<module path>.alpha`` (0-dim float32; ComfyUI scales by ``alpha / rank``), where
``<module path>`` is ComfyUI's own path, e.g. ``blocks.3.attn_out`` (CogVideoX) or
``blocks.3.self_attn.q`` (Wan).

Accepted inputs, per key:

- ComfyUI-native paths, bare or prefixed with ``diffusion_model.``, ``base_model.model.``,
  ``transformer.`` or ``model.`` (peft's saved names);
- diffusers names: CogVideoX ``transformer_blocks.{i}.attn1.to_q|to_k|to_v|to_out.0`` and Wan
  ``blocks.{i}.attn1.*`` (self-attention) / ``blocks.{i}.attn2.*`` (cross-attention, incl.
  ``add_k_proj``/``add_v_proj`` → ``k_img``/``v_img``);
- kohya-style flattened names (``lora_unet_blocks_0_self_attn_q``, ``lora_transformer_...``);
- tensor suffixes ``.lora_A[.<adapter>].weight`` / ``.lora_B[.<adapter>].weight`` (peft),
  ``.lora_down.weight`` / ``.lora_up.weight`` (kohya), ``.lora.down.weight`` / ``.lora.up.weight``,
  ``.lora_linear_layer.down.weight`` / ``.up.weight`` and ``.alpha``.

Anything else (non-tensors, other modules, unknown suffixes, half pairs) is reported, never raised.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from .host_signature import HostFamily, attention_module_regex, check_family
from .host_specs import spec_for

logger = logging.getLogger(__name__)

COMFY_PREFIX = "diffusion_model."

TensorRole = Literal["A", "B", "alpha"]

# (regex on the end of the key, role). Longest/most specific first.
_TENSOR_SUFFIXES: tuple[tuple[re.Pattern[str], TensorRole], ...] = (
    (re.compile(r"\.lora_A(?:\.[A-Za-z0-9_-]+)?\.weight$"), "A"),
    (re.compile(r"\.lora_B(?:\.[A-Za-z0-9_-]+)?\.weight$"), "B"),
    (re.compile(r"\.lora_down\.weight$"), "A"),
    (re.compile(r"\.lora_up\.weight$"), "B"),
    (re.compile(r"\.lora\.down\.weight$"), "A"),
    (re.compile(r"\.lora\.up\.weight$"), "B"),
    (re.compile(r"\.lora_linear_layer\.down\.weight$"), "A"),
    (re.compile(r"\.lora_linear_layer\.up\.weight$"), "B"),
    (re.compile(r"\.alpha$"), "alpha"),
)

_DOTTED_PREFIXES = ("diffusion_model.", "base_model.model.", "transformer.", "model.", "unet.")
_FLAT_PREFIXES = ("lora_unet_", "lora_transformer_", "lycoris_")


@dataclass(frozen=True)
class ConvertedAdapter:
    """Result of :func:`to_comfy_lora`.

    ``state_dict``: comfy-form keys → tensors. ``unmatched``: input keys that do not name a LoRA tensor of
    an attention module we know (or of one absent from ``known_modules``). ``mismatched``: input keys of
    a known module whose shapes disagree with each other or with ``known_shapes``; ``mismatch_details``:
    one line per such module, ``"<module>: lora_A (r, in) and lora_B (out, r), the layer is (out, in)"``
    (the layer's shape when ``known_shapes`` has it).
    """

    state_dict: dict[str, Tensor]
    unmatched: tuple[str, ...]
    mismatched: tuple[str, ...] = field(default=())
    mismatch_details: tuple[str, ...] = field(default=())

    @property
    def modules(self) -> tuple[str, ...]:
        """ComfyUI module paths (without ``diffusion_model.``) that received a LoRA, sorted."""
        suffix = ".lora_A.weight"
        return tuple(
            sorted(key[len(COMFY_PREFIX) : -len(suffix)] for key in self.state_dict if key.endswith(suffix))
        )


def split_tensor_suffix(key: str) -> tuple[str, TensorRole] | None:
    """``"x.blocks.0.q.lora_down.weight"`` → ``("x.blocks.0.q", "A")``; ``None`` for non-LoRA keys."""
    for pattern, role in _TENSOR_SUFFIXES:
        match = pattern.search(key)
        if match is not None and match.start() > 0:
            return key[: match.start()], role
    return None


def strip_module_prefixes(module_path: str) -> str:
    """Remove wrapper prefixes (``diffusion_model.``, ``base_model.model.``, ``transformer.``...)."""
    changed = True
    while changed:
        changed = False
        for prefix in _DOTTED_PREFIXES:
            if module_path.startswith(prefix):
                module_path = module_path[len(prefix) :]
                changed = True
    return module_path


def _unflatten(module_name: str, family: HostFamily) -> str | None:
    for prefix in _FLAT_PREFIXES:
        if module_name.startswith(prefix):
            flat = module_name[len(prefix) :]
            break
    else:
        return None
    for prefix in ("transformer_", "diffusion_model_"):
        # lora_transformer_transformer_blocks_0 (diffusers) keeps its own "transformer_blocks".
        if flat.startswith(prefix) and not flat.startswith("transformer_blocks_"):
            flat = flat[len(prefix) :]
    for pattern, replacement in spec_for(family).lora_aliases:
        if pattern.fullmatch(flat):
            return pattern.sub(replacement, flat).replace(".to_out_0", ".to_out.0")
    return None


def comfy_module_path(module_name: str, family: HostFamily) -> str | None:
    """ComfyUI's module path for a LoRA module name in any accepted form, or ``None`` if not an attention
    projection of ``family``. ``"transformer.transformer_blocks.2.attn1.to_out.0"`` → ``"blocks.2.attn_out"``.
    """
    family = check_family(family)
    dotted = _unflatten(module_name, family) if "." not in module_name else strip_module_prefixes(module_name)
    if dotted is None:
        return None
    if re.fullmatch(attention_module_regex(family, allow_prefix=False), dotted):
        return dotted
    return spec_for(family).diffusers_module_path(dotted)


def _strip_comfy_prefix(path: str) -> str:
    return path[len(COMFY_PREFIX) :] if path.startswith(COMFY_PREFIX) else path


def to_comfy_lora(
    state_dict: Mapping[str, object],
    family: HostFamily,
    *,
    known_modules: Collection[str] | None = None,
    known_shapes: Mapping[str, tuple[int, int]] | None = None,
) -> ConvertedAdapter:
    """Convert an adapter state dict to ComfyUI's generic LoRA keys (see module docstring).

    ``known_modules``: the host's module paths (e.g. from ``named_modules()``, with or without
    ``diffusion_model.``); keys of modules outside it are reported as unmatched. ``known_shapes``: module
    path → ``(out_features, in_features)``; pairs whose ``lora_A [rank, in]`` / ``lora_B [out, rank]``
    disagree are reported as mismatched. Never raises on bad keys or values.
    """
    family = check_family(family)
    known = None if known_modules is None else {_strip_comfy_prefix(path) for path in known_modules}
    shapes = None
    if known_shapes is not None:
        shapes = {_strip_comfy_prefix(path): tuple(shape) for path, shape in known_shapes.items()}
    unmatched: list[str] = []
    # module path -> role -> (input key, tensor)
    grouped: dict[str, dict[TensorRole, tuple[str, Tensor]]] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            unmatched.append(str(key))
            continue
        split = split_tensor_suffix(key)
        module = None if split is None else comfy_module_path(split[0], family)
        if split is None or module is None or (known is not None and module not in known):
            unmatched.append(key)
            continue
        role = split[1]
        slot = grouped.setdefault(module, {})
        if role in slot:
            logger.warning("LoRA keys %r and %r name the same tensor; keeping the first", slot[role][0], key)
            unmatched.append(key)
            continue
        slot[role] = (key, value)

    converted: dict[str, Tensor] = {}
    mismatched: list[str] = []
    details: list[str] = []
    for module, slot in sorted(grouped.items()):
        keys = [key for key, _ in slot.values()]
        if "A" not in slot or "B" not in slot:
            unmatched.extend(keys)
            continue
        down, up = slot["A"][1], slot["B"][1]
        alpha = slot["alpha"][1] if "alpha" in slot else None
        expected = None if shapes is None else shapes.get(module)
        if not _shapes_agree(down, up, alpha, expected):
            mismatched.extend(keys)
            layer = "" if expected is None else f", the layer is {tuple(expected)}"
            details.append(
                f"{module}: lora_A {tuple(down.shape)} and lora_B {tuple(up.shape)}"
                f"{'' if alpha is None else f', alpha of {alpha.numel()} values'}{layer}"
            )
            continue
        converted[f"{COMFY_PREFIX}{module}.lora_A.weight"] = down
        converted[f"{COMFY_PREFIX}{module}.lora_B.weight"] = up
        if alpha is not None:
            converted[f"{COMFY_PREFIX}{module}.alpha"] = alpha.detach().reshape(()).to(torch.float32)
    if unmatched or mismatched:
        logger.info(
            "LoRA conversion for %s: %d tensors kept, %d unmatched, %d mismatched",
            family,
            len(converted),
            len(unmatched),
            len(mismatched),
        )
    return ConvertedAdapter(
        state_dict=converted,
        unmatched=tuple(unmatched),
        mismatched=tuple(mismatched),
        mismatch_details=tuple(details),
    )


def _shapes_agree(down: Tensor, up: Tensor, alpha: Tensor | None, expected: tuple[int, int] | None) -> bool:
    """``down [rank, in]``, ``up [out, rank]``, ``alpha`` one element, and ``(out, in)`` if given."""
    if down.ndim != 2 or up.ndim != 2 or down.shape[0] != up.shape[1]:
        return False
    if alpha is not None and alpha.numel() != 1:
        return False
    return expected is None or (up.shape[0], down.shape[1]) == tuple(expected)
