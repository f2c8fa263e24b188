"""Train Adapter's settings, the adapter name rule and resuming a run (see ``nodes/train_run.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import folder_paths
from torch import Tensor

from ..customvideox_core.adapter_file import (
    AdapterMetadata,
    check_adapter_host,
    load_adapter,
)
from ..customvideox_core.constants import ADAPTER_SUFFIX, MODEL_FOLDER, SEED_MAX
from ..customvideox_core.finite import check_finite_number
from ..customvideox_core.host_signature import HostSignature
from ..customvideox_core.reference_layouts import DEFAULT_LAYOUT, reference_layout
from ..customvideox_core.safe_paths import plain_file_name
from ..customvideox_core.training import (
    DenoisingObjective,
    LoraTrainConfig,
    TrainConfig,
)
from .train_data import TrainDataSettings
from .train_layouts import LAYOUT_TRAINING

NO_RESUME = "none"


def normalise_adapter_name(name: str) -> str:
    """``"my subject.safetensors"`` → ``"my subject"``; a plain file name by the pack's allow-list
    (``customvideox_core.safe_paths.plain_file_name``), on every OS."""
    stripped = name.strip() if isinstance(name, str) else name
    if isinstance(stripped, str) and stripped.lower().endswith(ADAPTER_SUFFIX):
        stripped = stripped[: -len(ADAPTER_SUFFIX)]
    return plain_file_name(stripped, what="adapter_name", where=f"models/{MODEL_FOLDER}")


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """The LoRA shape, optimiser, schedule and memory settings of a run: what the Train Settings node
    outputs (and Train Adapter's own, deprecated widgets say). ``batch_size`` samples are accumulated
    per optimizer step (one after another, so memory stays that of one sample)."""

    rank: int = 64
    alpha: float = 64.0
    dropout: float = 0.0
    steps: int = 1000
    learning_rate: float = 1e-4
    warmup_steps: int = 50
    batch_size: int = 1
    seed: int = 0
    save_every: int = 250
    gradient_checkpointing: bool = True
    bf16: bool = True

    def __post_init__(self) -> None:
        for name, low in (("steps", 1), ("batch_size", 1), ("save_every", 0), ("warmup_steps", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer of at least {low}, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= SEED_MAX:
            raise ValueError(f"seed must be an integer in [0, 2^64), got {self.seed!r}")
        for name in ("alpha", "dropout", "learning_rate"):  # NaN would only show as a NaN loss, steps later
            check_finite_number(getattr(self, name), name, owner="CustomVideoX training settings")

    def values(self) -> dict[str, object]:
        """``{field: value}`` of these settings only (to build a :class:`TrainAdapterSettings`)."""
        return {item.name: getattr(self, item.name) for item in fields(TrainSettings)}


@dataclass(frozen=True, kw_only=True)
class TrainAdapterSettings(TrainSettings):
    """Everything one Train Adapter run uses: the :class:`TrainSettings` plus the name, data size,
    overwrite and resume choices."""

    adapter_name: str
    data: TrainDataSettings
    overwrite: bool = False
    resume_from: str = NO_RESUME
    reference_layout: str = DEFAULT_LAYOUT

    def __post_init__(self) -> None:
        object.__setattr__(self, "adapter_name", normalise_adapter_name(self.adapter_name))
        reference_layout(self.reference_layout)
        super().__post_init__()

    def lora_config(self, host: HostSignature) -> LoraTrainConfig:
        """The LoRA shape on ``host`` in this run's reference layout (validates rank, alpha, dropout,
        and that the host can run the layout)."""
        host.spec.check_layout(self.reference_layout, host.variant)
        return LAYOUT_TRAINING[self.reference_layout].lora_config(self, host)

    def train_config(self, objective: DenoisingObjective, start_step: int) -> TrainConfig:
        """Optimizer settings; a resumed run draws new noise (seed offset by the steps already trained)."""
        return TrainConfig(
            steps=self.steps,
            objective=objective,
            learning_rate=self.learning_rate,
            warmup_steps=self.warmup_steps,
            grad_accumulation=self.batch_size,
            seed=(self.seed + start_step) % 2**63,
            bf16_autocast=self.bf16,
            gradient_checkpointing=self.gradient_checkpointing,
            save_every=self.save_every,
        )


@dataclass(frozen=True)
class ResumeState:
    """A saved adapter to continue from: its LoRA weights and metadata (``steps`` trained so far)."""

    name: str
    state_dict: Mapping[str, Tensor]
    metadata: AdapterMetadata


def load_resume(
    settings: TrainAdapterSettings, host: HostSignature, lora: LoraTrainConfig
) -> ResumeState | None:
    """Read ``settings.resume_from`` and check it fits this host and LoRA shape; ``None`` for ``none``."""
    if settings.resume_from == NO_RESUME:
        return None
    path = folder_paths.get_full_path(MODEL_FOLDER, settings.resume_from)
    if path is None:
        raise FileNotFoundError(
            f"resume_from {settings.resume_from!r} is not in models/customvideox; refresh the node list (R)"
        )
    state_dict, metadata = load_adapter(path)
    if metadata is None:
        raise ValueError(
            f"{settings.resume_from} has no CustomVideoX metadata, so its step count and LoRA shape are "
            "unknown; resume only from a file this node saved"
        )
    check_adapter_host(metadata, host)
    if metadata.reference_layout != settings.reference_layout:
        raise ValueError(
            f"{settings.resume_from} was trained in the {metadata.reference_layout!r} reference layout; "
            f"this run is set to {settings.reference_layout!r}. Set reference_layout to the file's to resume it."
        )
    if (metadata.rank, metadata.alpha, metadata.targets) != (lora.rank, lora.alpha, lora.targets):
        raise ValueError(
            f"{settings.resume_from} was trained with rank {metadata.rank}, alpha {metadata.alpha:g} on "
            f"{','.join(metadata.targets)}; this node is set to rank {lora.rank}, alpha {lora.alpha:g} on "
            f"{','.join(lora.targets)}. Set rank and alpha to the file's values to resume it."
        )
    return ResumeState(name=settings.resume_from, state_dict=state_dict, metadata=metadata)
