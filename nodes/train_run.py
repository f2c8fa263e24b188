"""The training run behind CustomVideoXTrainAdapter (``nodes/train_node.py``): the run on a fresh copy of
the model and the trained adapter on the output MODEL. Its parts live by concept: the settings and
resuming in ``nodes/train_settings.py``, the model call in ``nodes/train_model_call.py``, what each
reference layout trains in ``nodes/train_layouts.py`` (their names used by callers stay importable here).

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.utils
import torch
from torch import Tensor, nn

from ..customvideox_core import LAYOUT_VERSION
from ..customvideox_core.adapter_file import (
    AdapterMetadata,
    save_adapter,
)
from ..customvideox_core.host_signature import HostSignature
from ..customvideox_core.reference_layouts import DEFAULT_LAYOUT
from ..customvideox_core.training import (
    LatentCacheEntry,
    LoraTrainConfig,
    TrainStep,
    train,
)
from .load_node import apply_adapter
from .train_data import PreparedDataset
from .train_layouts import LAYOUT_TRAINING
from .train_model_call import objective_for, predict_video
from .train_settings import (
    NO_RESUME,
    ResumeState,
    TrainAdapterSettings,
    TrainSettings,
    load_resume,
    normalise_adapter_name,
)

logger = logging.getLogger(__name__)


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


__all__ = [
    "LAYOUT_TRAINING",
    "NO_RESUME",
    "ResumeState",
    "TrainAdapterSettings",
    "TrainSettings",
    "TrainingOutcome",
    "load_resume",
    "model_with_adapter",
    "normalise_adapter_name",
    "predict_video",
    "train_adapter",
]
