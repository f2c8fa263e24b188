"""A small, generic LoRA training loop over cached latents.

AdamW over the LoRA weights only, linear warmup, seeded noise and order, gradient clipping, optional
bf16 autocast and block gradient checkpointing. Where files go is the caller's business: the loop hands
the LoRA state dict to ``on_save`` whenever ``should_save(step)`` says so.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .data import LatentCacheEntry
from .objective import DenoisingObjective, ModelFn, ObjectiveKind, denoising_loss
from .peft_lora import lora_parameters, lora_state_dict

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. ``steps`` counts optimizer steps; each accumulates ``grad_accumulation``
    samples. ``save_every`` (0: never) is the default ``should_save`` rule. ``max_grad_norm`` 0 disables
    clipping."""

    steps: int
    objective: DenoisingObjective | ObjectiveKind = "v_prediction"
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    grad_accumulation: int = 1
    seed: int = 0
    bf16_autocast: bool = False
    gradient_checkpointing: bool = False
    save_every: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "objective", DenoisingObjective.coerce(self.objective))
        for name in ("steps", "grad_accumulation"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "save_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be non-negative, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"TrainConfig.learning_rate must be positive, got {self.learning_rate}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError("TrainConfig.weight_decay and max_grad_norm must be non-negative")

    def should_save(self, step: int) -> bool:
        """The save-every rule: after every ``save_every``-th optimizer step (``step`` counts from 1)."""
        return self.save_every > 0 and step % self.save_every == 0


class TrainableAdapter(Protocol):
    """What the loop trains: its parameters, and the tensors a save writes."""

    def trainable_parameters(self) -> list[Tensor]: ...

    def adapter_state_dict(self) -> dict[str, Tensor]: ...


@dataclass(frozen=True)
class PeftAdapter:
    """The peft LoRA injected into ``model`` (the ``joint`` layout), in ComfyUI's key form."""

    model: nn.Module

    def trainable_parameters(self) -> list[Tensor]:
        return list(lora_parameters(self.model))

    def adapter_state_dict(self) -> dict[str, Tensor]:
        return lora_state_dict(self.model)


@dataclass(frozen=True)
class TrainStep:
    """Progress report after one optimizer step (``step`` counts from 1)."""

    step: int
    total_steps: int
    loss: float
    learning_rate: float


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Learning-rate multiplier for optimizer step ``step`` (0-based): linear ramp, then 1."""
    return 1.0 if warmup_steps == 0 else min(1.0, (step + 1) / warmup_steps)


def _snapshot(value: object) -> object:
    """A shallow copy of a dict argument, anything else as it is."""
    return dict(value) if isinstance(value, dict) else value


def checkpoint_modules(modules: Iterable[nn.Module]) -> Callable[[], None]:
    """Recompute each module's activations in backward (``torch.utils.checkpoint``); returns an undo
    function that restores the original ``forward`` attributes.

    Dict arguments are passed as shallow copies taken at the call, so that the recomputation in backward
    sees what the forward saw: hosts mutate one options dict between blocks (ComfyUI's
    ``transformer_options["block_index"]``), and a recomputed block would otherwise read the last
    block's values. The objects inside the dicts are shared, not copied.
    """
    undo: list[tuple[nn.Module, object]] = []
    for module in modules:
        previous = module.__dict__.get("forward")
        original = module.forward

        def checkpointed(
            *args: object, _forward: Callable[..., object] = original, **kwargs: object
        ) -> object:
            args = tuple(_snapshot(value) for value in args)
            kwargs = {name: _snapshot(value) for name, value in kwargs.items()}
            return checkpoint(_forward, *args, use_reentrant=False, **kwargs)

        module.forward = functools.wraps(original)(checkpointed)
        undo.append((module, previous))

    def restore() -> None:
        for module, previous in reversed(undo):
            if previous is None:
                del module.forward
            else:
                module.forward = previous

    return restore


def _default_blocks(model: nn.Module) -> list[nn.Module]:
    return [
        block
        for name, child in model.named_modules()
        if isinstance(child, nn.ModuleList) and (name == "blocks" or name.endswith(".blocks"))
        for block in child
    ]


def train(
    model: nn.Module,
    cache_items: Sequence[LatentCacheEntry],
    config: TrainConfig,
    *,
    model_fn: ModelFn,
    on_step: Callable[[TrainStep], None] | None = None,
    should_save: Callable[[int], bool] | None = None,
    on_save: Callable[[int, dict[str, Tensor]], None] | None = None,
    checkpoint_blocks: Sequence[nn.Module] | None = None,
    adapter: TrainableAdapter | None = None,
) -> list[float]:
    """Train ``adapter`` (default: the peft LoRA injected in ``model``); returns every step's loss.

    ``model_fn(video, reference, timestep)`` runs ``model`` (see :data:`ModelFn`). Latents are moved to the LoRA's device as float32. ``on_step`` may raise to
    stop training (e.g. on user interrupt); the model's modes and forwards are restored either way.
    ``checkpoint_blocks``: modules to checkpoint when ``config.gradient_checkpointing`` (default: every
    block of each ``blocks`` ModuleList). ``adapter``: what is trained and saved (its parameters may live
    outside ``model``, as the cached layout's :class:`~.reference_lora.ReferenceBranchLoRA` does).
    """
    if not cache_items:
        raise ValueError("no training samples: the latent cache is empty")
    if adapter is None:
        adapter = PeftAdapter(model)
    parameters = adapter.trainable_parameters()
    if not parameters:
        raise ValueError(
            "nothing to train: the adapter has no trainable parameters. Inject the peft LoRA first "
            "(inject_lora(model, config)) or pass an adapter whose parameters require grad "
            "(e.g. ReferenceBranchLoRA)"
        )
    device = parameters[0].device
    objective = DenoisingObjective.coerce(config.objective)
    if should_save is None:
        should_save = config.should_save

    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_factor(step, config.warmup_steps)
    )
    noise_generator = torch.Generator(device=device).manual_seed(config.seed)
    order_generator = torch.Generator().manual_seed(config.seed)
    modes = {module: module.training for module in model.modules()}
    restore_forwards = None
    if config.gradient_checkpointing:
        blocks = _default_blocks(model) if checkpoint_blocks is None else checkpoint_blocks
        restore_forwards = checkpoint_modules(blocks)
    order: list[int] = []
    history: list[float] = []
    try:
        model.train()
        for step in range(1, config.steps + 1):
            optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for _ in range(config.grad_accumulation):
                if not order:
                    order = torch.randperm(len(cache_items), generator=order_generator).tolist()
                entry = cache_items[order.pop()]
                with torch.autocast(
                    device_type=device.type, dtype=torch.bfloat16, enabled=config.bf16_autocast
                ):
                    loss = denoising_loss(
                        model_fn,
                        entry.video_latents.to(device, torch.float32),
                        entry.reference_latents.to(device, torch.float32),
                        objective=objective,
                        generator=noise_generator,
                    )
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"training loss became {loss.item()} at step {step}; lower the learning rate"
                    )
                (loss / config.grad_accumulation).backward()
                step_loss += loss.item() / config.grad_accumulation
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
            learning_rate = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            history.append(step_loss)
            if on_step is not None:
                on_step(TrainStep(step, config.steps, step_loss, learning_rate))
            if on_save is not None and should_save(step):
                on_save(step, adapter.adapter_state_dict())
    finally:
        if restore_forwards is not None:
            restore_forwards()
        for module, was_training in modes.items():
            module.train(was_training)
        optimizer.zero_grad(set_to_none=True)
    logger.info("trained %d steps: loss %.4f -> %.4f", len(history), history[0], history[-1])
    return history
