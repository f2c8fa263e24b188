"""Inject, read, load and remove a peft LoRA on any torch module (ComfyUI's diffusion model included).

The LoRA goes on the attention projections named by :func:`~customvideox_core.host_signature.attention_targets`
(``blocks.{i}.q``...), which in ComfyUI are subclasses of ``nn.Linear`` with their own ``forward``; peft
wraps them and calls that ``forward`` for the frozen path. :func:`remove_lora` puts the very same module
objects back and restores every parameter's ``requires_grad``, so the host model is left as it was.

peft is imported on first use, not at import time: it pulls in transformers (seconds), which ComfyUI's
start-up should not pay for a pack whose training node may never run.
"""

from __future__ import annotations

import importlib
import logging
import re
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from ..host_signature import HostFamily, attention_targets, block_modules_regex

logger = logging.getLogger(__name__)

ADAPTER_NAME = "default"
COMFY_PREFIX = "diffusion_model."
AdapterDtype = Literal["float32", "bfloat16", "float16", "base"]

_ADAPTER_DTYPES = get_args(AdapterDtype)
_SNAPSHOT_ATTRIBUTE = "_customvideox_lora_snapshot"


@dataclass(frozen=True)
class LoraTrainConfig:
    """LoRA shape for training. ``targets`` are module suffixes after ``blocks.{i}.``.

    ``adapter_dtype``: dtype of the LoRA weights (``"base"``: that of the wrapped layer; float32 keeps
    AdamW updates exact when the host runs in bf16). ``init_seed``: seed of the random ``lora_A`` init
    (drawn on a forked CPU generator, so the global RNG is untouched); ``None`` draws from the global RNG.
    """

    rank: int = 64
    alpha: float = 64.0
    dropout: float = 0.0
    targets: tuple[str, ...] = attention_targets("cogvideox")
    adapter_dtype: AdapterDtype = "float32"
    init_seed: int | None = 0

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoraTrainConfig.rank must be a positive integer, got {self.rank!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or self.alpha <= 0:
            raise ValueError(f"LoraTrainConfig.alpha must be a positive number, got {self.alpha!r}")
        object.__setattr__(self, "alpha", float(self.alpha))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoraTrainConfig.dropout must be in [0, 1), got {self.dropout!r}")
        targets = tuple(self.targets)
        if not targets or not all(isinstance(target, str) and target for target in targets):
            raise ValueError(
                f"LoraTrainConfig.targets must be non-empty module suffixes, got {self.targets!r}"
            )
        object.__setattr__(self, "targets", targets)
        if self.adapter_dtype not in _ADAPTER_DTYPES:
            raise ValueError(
                f"LoraTrainConfig.adapter_dtype must be one of {', '.join(_ADAPTER_DTYPES)}, "
                f"got {self.adapter_dtype!r}"
            )

    @classmethod
    def for_family(cls, family: HostFamily, **overrides: object) -> LoraTrainConfig:
        """Config targeting ``family``'s self-attention projections (``overrides`` as keyword fields)."""
        return cls(**{"targets": attention_targets(family), **overrides})  # type: ignore[arg-type]


@dataclass(frozen=True)
class _LoraSnapshot:
    """What :func:`inject_lora` changed on the host, to undo it exactly."""

    requires_grad: dict[str, bool]
    had_peft_config: bool


def _lora_layer_class() -> type:
    return importlib.import_module("peft.tuners.lora").LoraLayer


def lora_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` for every peft ``LoraLayer`` inside ``module``, in module order."""
    layer_class = _lora_layer_class()
    return [(name, layer) for name, layer in module.named_modules() if isinstance(layer, layer_class)]


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The trainable LoRA weights (``lora_A`` / ``lora_B``) inside ``module``."""
    parameters: list[nn.Parameter] = []
    for _, layer in lora_layers(module):
        parameters.extend(layer.lora_A[ADAPTER_NAME].parameters())
        parameters.extend(layer.lora_B[ADAPTER_NAME].parameters())
    return parameters


def target_module_names(module: nn.Module, targets: tuple[str, ...]) -> list[str]:
    """Names of the modules of ``module`` that a LoRA with ``targets`` would wrap."""
    pattern = re.compile(block_modules_regex(targets))
    return [name for name, _ in module.named_modules() if pattern.fullmatch(name)]


def inject_lora(module: nn.Module, config: LoraTrainConfig) -> nn.Module:
    """Wrap ``module``'s target Linear layers with fresh peft LoRA layers, in place; returns ``module``.

    ``lora_B`` starts at zero, so outputs are unchanged until training. Only LoRA weights are left
    trainable (every other parameter gets ``requires_grad=False`` until :func:`remove_lora`).
    """
    if lora_layers(module) or hasattr(module, _SNAPSHOT_ATTRIBUTE):
        raise ValueError(
            "this model already carries a LoRA; call remove_lora(model) before injecting another"
        )
    names = target_module_names(module, config.targets)
    if not names:
        raise ValueError(
            f"no module of this {type(module).__name__} matches the LoRA targets blocks.{{i}}."
            f"{{{'|'.join(config.targets)}}}; is it a supported host model, and do the targets match its family?"
        )
    modules = dict(module.named_modules())
    not_linear = [name for name in names if not isinstance(modules[name], nn.Linear)]
    if not_linear:
        raise ValueError(f"LoRA targets must be Linear layers; these are not: {not_linear[:5]}")
    snapshot = _LoraSnapshot(
        requires_grad={name: parameter.requires_grad for name, parameter in module.named_parameters()},
        had_peft_config=hasattr(module, "peft_config"),
    )
    peft = importlib.import_module("peft")
    peft_config = peft.LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=block_modules_regex(config.targets),
        bias="none",
        init_lora_weights=True,
    )
    if config.init_seed is None:
        peft.inject_adapter_in_model(peft_config, module, adapter_name=ADAPTER_NAME)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.init_seed)
            peft.inject_adapter_in_model(peft_config, module, adapter_name=ADAPTER_NAME)
    if config.adapter_dtype != "base":
        dtype = getattr(torch, config.adapter_dtype)
        for _, layer in lora_layers(module):
            layer.lora_A[ADAPTER_NAME].to(dtype=dtype)
            layer.lora_B[ADAPTER_NAME].to(dtype=dtype)
    setattr(module, _SNAPSHOT_ATTRIBUTE, snapshot)
    logger.info("injected rank-%d LoRA into %d modules", config.rank, len(names))
    return module


def _comfy_key(name: str) -> str:
    return name if name.startswith(COMFY_PREFIX) else f"{COMFY_PREFIX}{name}"


def lora_state_dict(module: nn.Module) -> dict[str, Tensor]:
    """LoRA weights in ComfyUI's generic form: ``diffusion_model.<path>.lora_A.weight`` ``[rank, in]``,
    ``.lora_B.weight`` ``[out, rank]`` and ``.alpha`` (0-dim float32, ``alpha / rank`` = peft's scaling).
    Detached copies.
    """
    state: dict[str, Tensor] = {}
    for name, layer in lora_layers(module):
        key = _comfy_key(name)
        rank = layer.r[ADAPTER_NAME]
        state[f"{key}.lora_A.weight"] = layer.lora_A[ADAPTER_NAME].weight.detach().clone()
        state[f"{key}.lora_B.weight"] = layer.lora_B[ADAPTER_NAME].weight.detach().clone()
        state[f"{key}.alpha"] = torch.tensor(float(layer.scaling[ADAPTER_NAME]) * rank, dtype=torch.float32)
    if not state:
        raise ValueError("this model carries no LoRA; call inject_lora(model, config) first")
    return state


def load_lora_state_dict(module: nn.Module, state_dict: dict[str, Tensor]) -> None:
    """Copy comfy-form LoRA weights (as from :func:`lora_state_dict`) into an injected LoRA, e.g. to resume.

    Every LoRA layer must be covered and every key used; shapes must match. ``.alpha`` (optional) sets
    the layer's scale to ``alpha / rank``. Raises ``ValueError`` listing what did not fit.
    """
    layers = {_comfy_key(name): layer for name, layer in lora_layers(module)}
    if not layers:
        raise ValueError("this model carries no LoRA; call inject_lora(model, config) before loading weights")
    expected = {f"{key}.lora_{part}.weight" for key in layers for part in ("A", "B")}
    optional = {f"{key}.alpha" for key in layers}
    normalised = {_comfy_key(key): tensor for key, tensor in state_dict.items()}
    missing = sorted(expected - set(normalised))
    unexpected = sorted(set(normalised) - expected - optional)
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys (first: {missing[:3]})")
    if unexpected:
        problems.append(f"{len(unexpected)} keys match no LoRA layer (first: {unexpected[:3]})")
    for key in sorted(expected & set(normalised)):
        module_key, part = key.rsplit(".lora_", 1)
        layer = layers[module_key]
        target = (layer.lora_A if part.startswith("A") else layer.lora_B)[ADAPTER_NAME].weight
        if tuple(normalised[key].shape) != tuple(target.shape):
            problems.append(f"{key} has shape {tuple(normalised[key].shape)}, expected {tuple(target.shape)}")
    if problems:
        raise ValueError(
            "cannot load these LoRA weights: " + "; ".join(problems) + ". Was the adapter trained with the "
            "same rank and targets?"
        )
    with torch.no_grad():
        for key, layer in layers.items():
            layer.lora_A[ADAPTER_NAME].weight.copy_(normalised[f"{key}.lora_A.weight"])
            layer.lora_B[ADAPTER_NAME].weight.copy_(normalised[f"{key}.lora_B.weight"])
            if f"{key}.alpha" in normalised:
                alpha = float(normalised[f"{key}.alpha"].reshape(()).item())
                layer.scaling[ADAPTER_NAME] = alpha / layer.r[ADAPTER_NAME]


def remove_lora(module: nn.Module) -> nn.Module:
    """Undo :func:`inject_lora`: put the original Linear modules back and restore ``requires_grad``.

    The restored modules are the very objects that were wrapped, with their parameters untouched.
    Returns ``module``; a model without a LoRA is returned as is.
    """
    for name, layer in lora_layers(module):
        parent_name, _, child_name = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child_name, layer.get_base_layer())
    snapshot = module.__dict__.pop(_SNAPSHOT_ATTRIBUTE, None)
    if snapshot is None:
        return module
    for name, parameter in module.named_parameters():
        if name in snapshot.requires_grad:
            parameter.requires_grad_(snapshot.requires_grad[name])
    if not snapshot.had_peft_config and "peft_config" in module.__dict__:
        del module.__dict__["peft_config"]
    return module
