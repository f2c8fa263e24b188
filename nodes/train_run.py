"""The training machinery behind CustomVideoXTrainAdapter (``nodes/train_node.py``): settings, the
model call, the training run on a fresh copy of the model, and the trained adapter on the output MODEL.

How one training step sees the model (the choices this module makes). The bullets describe the ``joint``
reference layout; the ``cached`` layout (``LAYOUT_TRAINING``) differs where it says so.

- **Same token sequence as inference.** The DiT is called through the pack's own ``ReferenceWrapper``
  (``nodes/patch.py``), the ``DIFFUSION_MODEL`` wrapper inference uses: it appends the clean reference
  latent frames after the noisy video frames (CogVideoX 1.5: pads the video circularly and repeats each
  reference frame ``patch_size_t`` times), runs the DiT, and strips the reference frames' prediction.
  The TAB bias is 0 during training (``constant`` schedule, peak 0) and every row sees the reference, so
  attention is the plain joint attention over ``[text | video | reference]``. *Cached layout:* the DiT
  is called through Stand-In's wrapper (``nodes/standin_patch.py``) with the reference branch recomputed
  with autograd at every step (:func:`cached_model_fn`).
- **Loss on the video frames only.** ``customvideox_core.training.denoising_loss`` noises the video and
  calls the model function with (noisy video, clean reference, timestep); the model function hands the
  reference to the wrapper (as inference does) and returns the video's prediction, which the wrapper has
  already stripped of the reference frames. Nothing is sliced, appended or padded here.
- **Noise convention.** CogVideoX: DDPM v-prediction with ComfyUI's own schedule (checked against the
  model's ``model_sampling`` before training); the DiT gets ``x_t`` and the DDPM timestep, which is what
  ComfyUI's ``V_PREDICTION_DDPM`` ``calculate_input`` / ``calculate_denoised`` assume. Wan: flow matching
  with the model's shift.
- **The input MODEL is never modified.** ComfyUI loads weights under ``torch.inference_mode``, and such
  tensors cannot take part in autograd, so training runs on a fresh copy loaded again from the model's
  file (``clone(force_deepcopy=True)``, as ComfyUI's own LoRA trainer does). The peft LoRA is injected
  into that copy only and removed afterwards (*cached layout:* a ``ReferenceBranchLoRA`` module of its
  own, the copy's weights frozen). The output MODEL is a clone of the input with the trained adapter on
  it exactly as ``LoadCustomVideoX`` applies a saved file (:func:`model_with_adapter`).
- **Files.** ``models/customvideox/<adapter_name>.safetensors``. The node refuses an existing file before
  any data is encoded unless ``overwrite`` is on. Saves every ``save_every`` steps write that same file (this
  run's own file) and the last step is always saved.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.utils
import folder_paths
import torch
from torch import Tensor, nn

from ..customvideox_core import LAYOUT_VERSION
from ..customvideox_core.adapter_file import (
    AdapterMetadata,
    check_adapter_host,
    load_adapter,
    save_adapter,
)
from ..customvideox_core.constants import ADAPTER_SUFFIX, MODEL_FOLDER, SEED_MAX
from ..customvideox_core.finite import check_finite_number
from ..customvideox_core.host_signature import HostSignature
from ..customvideox_core.host_specs import check_branch_dit
from ..customvideox_core.reference_layouts import DEFAULT_LAYOUT, reference_layout
from ..customvideox_core.safe_paths import plain_file_name
from ..customvideox_core.standin.branch import reference_grid
from ..customvideox_core.standin.lora_file import parse_standin_state_dict
from ..customvideox_core.tab import TABSchedule
from ..customvideox_core.training import (
    DenoisingObjective,
    LatentCacheEntry,
    LoraTrainConfig,
    ModelFn,
    PeftAdapter,
    ReferenceBranchLoRA,
    TrainableAdapter,
    TrainConfig,
    TrainStep,
    inject_lora,
    load_lora_state_dict,
    remove_lora,
    train,
)
from . import standin_patch
from .load_node import apply_adapter
from .patch import SETTINGS_KEY, WRAPPER_KEY, ReferencePatch, ReferenceWrapper
from .train_data import PreparedDataset, TrainDataSettings

logger = logging.getLogger(__name__)

NO_RESUME = "none"
TRAINING_TAB = TABSchedule(shape="constant", peak=0.0)
"""Training adds no attention bias: the LoRA learns to read the reference from plain attention."""
SCHEDULE_TOLERANCE = 1e-4


# ---------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------
# The model call
# ---------------------------------------------------------------------------------------------------


def _flow_matching_objective(sampling) -> DenoisingObjective:
    multiplier = float(getattr(sampling, "multiplier", 1000.0))
    if not math.isclose(multiplier, 1000.0):
        raise ValueError(f"this model maps sigma to timestep × {multiplier}, the trainer assumes × 1000")
    return DenoisingObjective("flow_matching", flow_shift=float(getattr(sampling, "shift", 1.0)))


def _v_prediction_objective(sampling) -> DenoisingObjective:
    objective = DenoisingObjective("v_prediction")
    host_alphas = 1.0 / (1.0 + sampling.sigmas.detach().to("cpu", torch.float64) ** 2)
    core_alphas = objective.alphas_cumprod()
    if host_alphas.shape != core_alphas.shape:
        raise ValueError(
            f"this model's noise schedule has {host_alphas.shape[0]} steps, the trainer assumes "
            f"{core_alphas.shape[0]} (CogVideoX's 1000-step DDPM)"
        )
    # The last step differs by construction (ComfyUI keeps a tiny ᾱ to stay finite; the core uses 0).
    deviation = float((host_alphas[:-1] - core_alphas[:-1]).abs().max())
    if deviation > SCHEDULE_TOLERANCE:
        raise ValueError(
            f"this model's noise schedule differs from CogVideoX's (max |Δᾱ| = {deviation:.2e}); "
            "training would not match how ComfyUI samples it"
        )
    return objective


_OBJECTIVES = {"flow_matching": _flow_matching_objective, "v_prediction": _v_prediction_objective}
"""Host spec ``objective`` → builder of the core objective, checked against ComfyUI's ``model_sampling``."""


def objective_for(base_model, host: HostSignature) -> DenoisingObjective:
    """The host's denoising objective (its spec's), checked against its ComfyUI ``model_sampling``."""
    return _OBJECTIVES[host.spec.objective](base_model.model_sampling)


def training_reference_patch(reference_latents: Tensor) -> ReferencePatch:
    """The inference patch for one reference ``[1, C, R, h, w]`` (model space), with no bias. The
    reference carries no subject mask at training time (the bias is 0): every token weighs 1, as
    ReferenceEncode's all-ones mask of an image without a mask gives."""
    return ReferencePatch(
        model_latents=reference_latents,
        tab=TRAINING_TAB,
        erae=None,
        uncond_sees_reference=True,
    )


def reference_call_options(host: HostSignature, reference_latents: Tensor) -> dict:
    """``transformer_options`` that route a DiT call through the pack's reference wrapper."""
    wrappers = {comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL: {WRAPPER_KEY: [ReferenceWrapper(host)]}}
    return {"wrappers": wrappers, SETTINGS_KEY: training_reference_patch(reference_latents)}


def _dit_call(
    dit: nn.Module, video: Tensor, timestep: Tensor, context: Tensor, options: dict, dtype: torch.dtype
) -> Tensor:
    """One DiT call on ``video`` ``[B, C, T, h, w]`` with ``context`` ``[1, L, D]`` for every row."""
    return dit(
        video.to(dtype),
        timestep.to(video.device, torch.float32),
        context.to(device=video.device, dtype=dtype).expand(video.shape[0], -1, -1),
        transformer_options=options,
    )


def predict_video(
    dit: nn.Module,
    host: HostSignature,
    video: Tensor,
    timestep: Tensor,
    context: Tensor,
    reference_latents: Tensor,
    *,
    dtype: torch.dtype,
) -> Tensor:
    """The DiT's prediction for the video frames with the reference appended, as at inference.

    video ``[B, C, T, h, w]`` (noisy, model space), timestep ``[B]`` (the DiT's own units), context
    ``[1, L, D]``, reference_latents ``[1 or B, C, R, h, w]`` (clean, model space; one reference for the
    batch) → ``[B, C, T, h, w]``.
    """
    options = reference_call_options(host, reference_latents[:1].to(device=video.device, dtype=dtype))
    return _dit_call(dit, video, timestep, context, options, dtype)


def video_model_fn(dit: nn.Module, host: HostSignature, context: Tensor, dtype: torch.dtype) -> ModelFn:
    """For the core loop: ``model_fn(video [B, C, T, h, w], reference [B, C, R, h, w], t [B])`` → the
    video's prediction ``[B, C, T, h, w]`` (see :func:`predict_video`)."""

    def model_fn(video: Tensor, reference: Tensor, timestep: Tensor) -> Tensor:
        prediction = predict_video(dit, host, video, timestep, context, reference, dtype=dtype)
        return prediction.to(video.dtype)

    return model_fn


def cached_model_fn(
    dit: nn.Module, adapter: ReferenceBranchLoRA, context: Tensor, dtype: torch.dtype
) -> ModelFn:
    """The cached layout's model function: the reference branch (``adapter``'s LoRA on the reference
    tokens, timestep 0, recomputed with autograd at every call) and the video over ``[video | reference]``
    keys, through the very wrapper and attention override sampling uses (``nodes/standin_patch.py``).

    ``model_fn(video [B, C, T, h, w], reference [B, C, 1, h, w], t [B])`` → ``[B, C, T, h, w]``.
    """
    wrappers = {
        comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL: {
            standin_patch.WRAPPER_KEY: [standin_patch.StandInWrapper()]
        }
    }

    def model_fn(video: Tensor, reference: Tensor, timestep: Tensor) -> Tensor:
        latent = reference[:1]
        rows, cols = reference_grid(latent, tuple(dit.patch_size))
        patch = standin_patch.StandInPatch(
            lora=adapter.as_standin_lora(),
            strength=1.0,
            reference_latent=latent,
            reference_weights=torch.ones(rows * cols, device=latent.device),
            tab=None,
            erae=None,
            uncond_sees_reference=True,
            cache=None,
        )
        options = {"wrappers": wrappers, standin_patch.SETTINGS_KEY: patch}
        return _dit_call(dit, video, timestep, context, options, dtype).to(video.dtype)

    return model_fn


# ---------------------------------------------------------------------------------------------------
# Reference layouts: what each one trains and how it reads the reference
# ---------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingOutcome:
    """What a run produced: the LoRA in ComfyUI keys (CPU, float32), one loss per optimizer step, the
    total steps the adapter has now (resumed ones included) and where it was saved."""

    state_dict: Mapping[str, Tensor]
    losses: tuple[float, ...]
    total_steps: int
    path: Path
    saves: int


class _AdapterWriter:
    """Saves to ``path``: the first write honours ``overwrite``; later writes replace this run's own file."""

    def __init__(self, path: Path, metadata: Callable[[int], AdapterMetadata], overwrite: bool) -> None:
        self.path = path
        self.metadata = metadata
        self.overwrite = overwrite
        self.saves = 0
        self.last_saved_step = -1

    def __call__(self, total_steps: int, state_dict: Mapping[str, Tensor]) -> None:
        save_adapter(
            self.path, state_dict, self.metadata(total_steps), overwrite=self.overwrite or self.saves > 0
        )
        self.saves += 1
        self.last_saved_step = total_steps
        logger.info("CustomVideoX adapter saved at step %d: %s", total_steps, self.path)


@contextlib.contextmanager
def _host_training_mode(host: HostSignature) -> Iterator[None]:
    """ComfyUI's own "training now" switch, for the hosts that read it, set for the run and restored.

    ``comfy.model_management.in_training`` is the flag ComfyUI's LoRA trainer sets; models read it to
    take autograd-capable paths (Wan's RoPE otherwise calls a fused kernel with no backward). CogVideoX
    never reads it, so CogVideoX training leaves all host state alone; for Wan it is the one piece of
    host state this node changes, and only while it trains.
    """
    if not host.spec.sets_in_training:
        yield
        return
    previous = comfy.model_management.in_training
    comfy.model_management.in_training = True
    try:
        yield
    finally:
        comfy.model_management.in_training = previous


def _training_copy(model):
    """A patcher over a fresh, autograd-capable copy of the model's weights.

    ComfyUI >= 0.2x reloads the weights from the model's file (``clone(force_deepcopy=True)``, as its own
    trainer does). Older releases have no such hook: there every loaded model is unloaded first (so no
    patched weights are copied), the module is deep-copied and its inference-mode tensors are cloned into
    normal ones. Either way the input MODEL's module is never trained.
    """
    try:
        return model.clone(force_deepcopy=True)
    except TypeError:
        return _copied_patcher(model)
    except RuntimeError as error:
        raise RuntimeError(
            "cannot make a trainable copy of this MODEL: it was not loaded from a file by a ComfyUI "
            f"loader ({error}). Load it with Load Diffusion Model (UNETLoader) or Load Checkpoint."
        ) from error


def _copied_patcher(model):
    """``model`` rebuilt from its own config with a cloned copy of its weights (plain, trainable tensors)."""
    comfy.model_management.unload_all_models()  # restores any weights another patcher had patched
    base = model.model
    weights = {name: tensor.detach().clone() for name, tensor in base.diffusion_model.state_dict().items()}
    rebuilt = base.model_config.get_model(weights, "")
    rebuilt.load_model_weights(weights, "")
    copied = comfy.model_patcher.ModelPatcher(
        rebuilt, load_device=model.load_device, offload_device=model.offload_device
    )
    copied.model_options = comfy.utils.deepcopy_list_dict(model.model_options)
    return copied


def train_adapter(
    model,
    host: HostSignature,
    dataset: PreparedDataset,
    context: Tensor,
    settings: TrainAdapterSettings,
    *,
    lora: LoraTrainConfig,
    output_path: Path,
    resume: ResumeState | None = None,
    on_step: Callable[[TrainStep], None] | None = None,
    on_trained: Callable[[nn.Module, Sequence[LatentCacheEntry]], None] | None = None,
) -> TrainingOutcome:
    """Train the LoRA on a fresh copy of ``model``'s weights and save it to ``output_path``.

    ``lora``: ``settings.lora_config(host)``, computed once by the caller (which checks ``resume`` against
    it before the data is prepared). ``context`` ``[1, L, D]`` conditions every item.
    ``on_trained(dit, entries)`` (tests, tools) runs after the last step while the LoRA is still
    injected; ``entries`` are in model space on the device.
    """
    start_step = resume.metadata.steps if resume is not None else 0
    summary = dataset.summary()

    history: list[float] = []

    def metadata(total_steps: int) -> AdapterMetadata:
        window = max(1, len(history) // 10)
        return AdapterMetadata(
            host=host,
            rank=lora.rank,
            alpha=lora.alpha,
            targets=lora.targets,
            layout_version=LAYOUT_VERSION,
            steps=total_steps,
            data_summary=summary,
            reference_layout=settings.reference_layout,
            extra={
                "trained_steps_this_run": str(settings.steps),
                "resumed_from": resume.name if resume is not None else "",
                "learning_rate": repr(settings.learning_rate),
                "batch_size": str(settings.batch_size),
                "seed": str(settings.seed),
                "dropout": repr(settings.dropout),
                "size": f"{settings.data.width}x{settings.data.height}x{settings.data.length}",
                "loss_start": f"{sum(history[:window]) / window:.6f}" if history else "",
                "loss_end": f"{sum(history[-window:]) / window:.6f}" if history else "",
            },
        )

    writer = _AdapterWriter(output_path, metadata, settings.overwrite)

    def record(step: TrainStep) -> None:
        history.append(step.loss)
        if on_step is not None:
            on_step(step)

    with torch.inference_mode(False), _host_training_mode(host):
        training = _training_copy(model)
        try:
            losses, state_dict = _train_copy(
                training,
                host,
                dataset,
                context,
                lora,
                settings,
                start_step=start_step,
                resume=resume,
                on_step=record,
                on_save=lambda step, state: writer(start_step + step, _to_cpu(state)),
                on_trained=on_trained,
            )
        finally:
            training.detach()  # the copy leaves the GPU now, not when the garbage collector finds it
            comfy.model_management.soft_empty_cache()
    total_steps = start_step + settings.steps
    if writer.last_saved_step != total_steps:
        writer(total_steps, state_dict)
    return TrainingOutcome(
        state_dict=state_dict,
        losses=tuple(losses),
        total_steps=total_steps,
        path=output_path,
        saves=writer.saves,
    )


def _train_copy(
    training,
    host: HostSignature,
    dataset: PreparedDataset,
    context: Tensor,
    lora: LoraTrainConfig,
    settings: TrainAdapterSettings,
    *,
    start_step: int,
    resume: ResumeState | None,
    on_step: Callable[[TrainStep], None],
    on_save: Callable[[int, Mapping[str, Tensor]], None],
    on_trained: Callable[[nn.Module, Sequence[LatentCacheEntry]], None] | None,
) -> tuple[list[float], dict[str, Tensor]]:
    """Load the training copy, start the layout's session (its LoRA), run the core loop, and close it."""
    comfy.model_management.load_models_gpu([training], memory_required=1e20, force_full_load=True)
    base = training.model
    dit = base.diffusion_model
    config = settings.train_config(objective_for(base, host), start_step)
    device = next(dit.parameters()).device
    dtype = base.get_dtype_inference()
    entries = [
        LatentCacheEntry(
            video_latents=base.process_latent_in(entry.video_latents.clone()).to(device),
            reference_latents=base.process_latent_in(entry.reference_latents.clone()).to(device),
            meta=entry.meta,
        )
        for entry in dataset.entries
    ]
    session = LAYOUT_TRAINING[settings.reference_layout].start(
        dit,
        host,
        lora,
        resume,
        context.clone().to(device),
        dtype,
    )
    try:
        losses = train(
            dit,
            entries,
            config,
            model_fn=session.model_fn,
            on_step=on_step,
            on_save=on_save,
            adapter=session.adapter,
        )
        state_dict = _to_cpu(session.adapter.adapter_state_dict())
        if on_trained is not None:
            on_trained(dit, entries)
    finally:
        session.close()
    return losses, state_dict


def _to_cpu(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {key: tensor.detach().to("cpu", torch.float32).contiguous() for key, tensor in state_dict.items()}


def model_with_adapter(
    model,
    host: HostSignature,
    state_dict: Mapping[str, Tensor],
    strength: float = 1.0,
    *,
    layout: str = DEFAULT_LAYOUT,
):
    """A clone of ``model`` with the adapter on it exactly as LoadCustomVideoX applies a saved file."""
    applied = apply_adapter(model, host, state_dict, strength, layout=layout, source="the trained adapter")
    if applied.unmatched or not applied.layers:
        raise RuntimeError(
            f"the trained LoRA does not map onto this {host.variant}: {applied.layers} layers matched, "
            f"unmatched keys {list(applied.unmatched)[:3]}; please report this"
        )
    return applied.model
