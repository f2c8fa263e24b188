"""What each reference layout trains and how it reads the reference: :data:`LAYOUT_TRAINING` (see
``nodes/train_run.py``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..customvideox_core.host_signature import HostSignature
from ..customvideox_core.host_specs import check_branch_dit
from ..customvideox_core.standin.lora_file import parse_standin_state_dict
from ..customvideox_core.training import (
    LoraTrainConfig,
    ModelFn,
    PeftAdapter,
    ReferenceBranchLoRA,
    TrainableAdapter,
    inject_lora,
    load_lora_state_dict,
    remove_lora,
)
from .train_model_call import cached_model_fn, video_model_fn

if TYPE_CHECKING:
    from .train_settings import TrainAdapterSettings


@dataclass(frozen=True)
class TrainingSession:
    """One run's trainable adapter on the DiT, the model function that reads it, and how to undo it."""

    adapter: TrainableAdapter
    model_fn: ModelFn
    close: Callable[[], None]


@dataclass(frozen=True)
class LayoutTraining:
    """How a reference layout trains: its LoRA shape and the session on a loaded training copy.

    ``start(dit, host, lora, resume, context, dtype)``.
    """

    lora_config: Callable[[TrainAdapterSettings, HostSignature], LoraTrainConfig]
    start: Callable[..., TrainingSession]


def _joint_lora(settings: TrainAdapterSettings, host: HostSignature) -> LoraTrainConfig:
    return LoraTrainConfig.for_family(
        host.family,
        rank=settings.rank,
        alpha=settings.alpha,
        dropout=settings.dropout,
        init_seed=settings.seed % 2**63,
    )


def _start_joint(dit, host, lora, resume, context, dtype) -> TrainingSession:
    """peft LoRA injected into the DiT's attention projections; the reference frames join the tokens."""
    inject_lora(dit, lora)
    try:
        if resume is not None:
            load_lora_state_dict(dit, dict(resume.state_dict))
    except BaseException:
        remove_lora(dit)
        raise
    return TrainingSession(
        adapter=PeftAdapter(dit),
        model_fn=video_model_fn(dit, host, context, dtype),
        close=lambda: remove_lora(dit),
    )


def _cached_lora(settings: TrainAdapterSettings, host: HostSignature) -> LoraTrainConfig:
    if settings.dropout != 0.0:
        raise ValueError(
            f"dropout is {settings.dropout:g}, but the cached layout's LoRA has no dropout; set it to 0"
        )
    return LoraTrainConfig(
        rank=settings.rank,
        alpha=settings.alpha,
        targets=ReferenceBranchLoRA.TARGETS,
        init_seed=settings.seed % 2**63,
    )


def _start_cached(dit, host, lora, resume, context, dtype) -> TrainingSession:
    """A reference-only LoRA module of its own; the DiT's modules are not touched."""
    del host  # the branch does not need the host's spec
    check_branch_dit(dit)
    adapter = ReferenceBranchLoRA(
        num_blocks=len(dit.blocks),
        dim=int(dit.dim),
        rank=lora.rank,
        alpha=lora.alpha,
        init_seed=lora.init_seed or 0,
        device=next(dit.parameters()).device,
    )
    if resume is not None:
        adapter.load_standin(parse_standin_state_dict(resume.state_dict, source=resume.name))
    trainable = {parameter: parameter.requires_grad for parameter in dit.parameters()}
    dit.requires_grad_(False)  # only the adapter trains (older ComfyUI copies come back trainable)

    def close() -> None:
        for parameter, flag in trainable.items():
            parameter.requires_grad_(flag)

    return TrainingSession(
        adapter=adapter, model_fn=cached_model_fn(dit, adapter, context, dtype), close=close
    )


LAYOUT_TRAINING = {
    "joint": LayoutTraining(lora_config=_joint_lora, start=_start_joint),
    "cached": LayoutTraining(lora_config=_cached_lora, start=_start_cached),
}
"""Reference layout (``customvideox_core.reference_layouts``) → how it trains."""
