"""CustomVideoXTrainAdapter: train the reference LoRA inside ComfyUI and save it for LoadCustomVideoX.

This module is the node (its schema, its inputs read from disk, progress and the loss report); how a
training step sees the model and how the run is done is ``nodes/train_run.py``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import comfy.model_management
import comfy.utils
import folder_paths
from comfy_api.latest import io, ui
from torch import Tensor

from ..customvideox_core.constants import ADAPTER_SUFFIX, DATASET_FOLDER, MODEL_FOLDER
from ..customvideox_core.reference_layouts import DEFAULT_LAYOUT, LAYOUT_NAMES, REFERENCE_LAYOUTS
from ..customvideox_core.safe_paths import AllowedRoot, confined_folder
from ..customvideox_core.training import TrainStep
from .finite_inputs import finite_float_inputs
from .host_model import host_signature
from .plots import plot_curve
from .train_data import PreparedDataset, TrainDataSettings, prepare_dataset
from .train_run import TrainingOutcome, model_with_adapter, train_adapter
from .train_settings import (
    NO_RESUME,
    TrainAdapterSettings,
    TrainSettings,
    load_resume,
    normalise_adapter_name,
)
from .train_settings_node import DEPRECATED_NOTE, training_inputs
from .types import TrainSettingsType
from .widgets import length_input, model_input, size_inputs

logger = logging.getLogger(__name__)

_LOG_EVERY_FRACTION = 20
LAYOUT_TOOLTIP = (
    "How the adapter reads the reference. "
    + " ".join(f"{layout.name}: {layout.summary}." for layout in REFERENCE_LAYOUTS.values())
    + " The cached layout runs on Wan and samples at about the base model's speed. Recorded in the "
    "adapter's metadata; Load CustomVideoX follows it."
)


# ---------------------------------------------------------------------------------------------------
# Files and inputs
# ---------------------------------------------------------------------------------------------------


def adapter_folder() -> Path:
    """``models/customvideox`` (the first folder registered for it, else the default under models/)."""
    registered = folder_paths.folder_names_and_paths.get(MODEL_FOLDER)
    if registered and registered[0]:
        return Path(registered[0][0])
    return Path(folder_paths.models_dir) / MODEL_FOLDER


def adapter_output_path(adapter_name: str) -> Path:
    return adapter_folder() / f"{normalise_adapter_name(adapter_name)}{ADAPTER_SUFFIX}"


def resume_choices() -> list[str]:
    """``none`` plus the safetensors adapters in models/customvideox."""
    try:
        listed = folder_paths.get_filename_list(MODEL_FOLDER)
    except KeyError:
        listed = []
    return [NO_RESUME, *(name for name in listed if name.lower().endswith(ADAPTER_SUFFIX))]


def dataset_roots() -> list[AllowedRoot]:
    """The folders a dataset may live in: ComfyUI's input folder, then every ``customvideox_datasets``
    folder (``models/customvideox_datasets`` and any ``extra_model_paths.yaml`` adds)."""
    roots = [AllowedRoot("ComfyUI's input folder", Path(folder_paths.get_input_directory()))]
    try:
        registered = folder_paths.get_folder_paths(DATASET_FOLDER)
    except KeyError:
        registered = []
    roots.extend(AllowedRoot(f"a {DATASET_FOLDER} folder", Path(path)) for path in registered)
    return roots


def resolve_dataset_path(dataset_path: str) -> Path:
    """The dataset folder ``dataset_path`` names inside :func:`dataset_roots` (rules:
    ``customvideox_core.safe_paths.confined_folder``); refuses anything else without touching it."""
    return confined_folder(dataset_path, dataset_roots(), what="dataset_path")


def dataset_signature(dataset_path: str) -> str:
    """Hash of the dataset folder's listing (names, sizes, modification times), hidden files excluded.

    A path the rules refuse is never listed: its signature is the text itself (``execute`` then refuses
    it with the reason)."""
    try:
        folder = resolve_dataset_path(dataset_path)
    except (ValueError, OSError):
        return f"refused:{dataset_path}"
    digest = hashlib.sha256()
    for root, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in sorted(files):
            stat = os.stat(os.path.join(root, name))
            digest.update(
                f"{os.path.relpath(os.path.join(root, name), folder)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode()
            )
    return digest.hexdigest()


def conditioning_context(positive) -> Tensor:
    """The text embeddings ``[1, L, D]`` of a CONDITIONING (its first entry; used for every item)."""
    if not positive:
        raise ValueError("positive conditioning is empty; connect a CLIPTextEncode of the subject's prompt")
    if len(positive) > 1:
        logger.warning("positive conditioning has %d entries; training uses the first", len(positive))
    embeddings = positive[0][0]
    if not isinstance(embeddings, Tensor) or embeddings.ndim != 3 or embeddings.shape[0] != 1:
        shape = tuple(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings).__name__
        raise ValueError(f"positive conditioning holds {shape}, expected text embeddings [1, tokens, dim]")
    return embeddings


# ---------------------------------------------------------------------------------------------------
# Progress and report
# ---------------------------------------------------------------------------------------------------


def _progress_logger(total: int, bar) -> Callable[[TrainStep], None]:
    every = max(1, total // _LOG_EVERY_FRACTION)

    def on_step(step: TrainStep) -> None:
        bar.update_absolute(step.step, step.total_steps)
        if step.step == 1 or step.step % every == 0 or step.step == step.total_steps:
            logger.info(
                "CustomVideoX training step %d/%d: loss %.5f (lr %.2e)",
                step.step,
                step.total_steps,
                step.loss,
                step.learning_rate,
            )
        comfy.model_management.throw_exception_if_processing_interrupted()

    return on_step


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Mean of each value and up to ``window - 1`` before it (single-step losses are noisy)."""
    averaged, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        averaged.append(total / min(index + 1, window))
    return averaged


def _loss_report(outcome: TrainingOutcome, settings: TrainAdapterSettings, dataset: PreparedDataset):
    """The loss curve (IMAGE, moving average) and a one-line report for the node."""
    losses = list(outcome.losses)
    window = max(1, len(losses) // 50)
    tenth = max(1, len(losses) // 10)
    curve = plot_curve(
        moving_average(losses, window),
        title=f"{settings.adapter_name}: loss, mean of {window} steps ({outcome.total_steps} steps in all)",
        x_label="training step",
    )
    report = (
        f"saved {outcome.path.name} ({outcome.total_steps} steps); mean loss {sum(losses[:tenth]) / tenth:.4f} "
        f"over the first tenth of this run, {sum(losses[-tenth:]) / tenth:.4f} over the last. "
        f"Data: {dataset.summary()}"
    )
    return curve, report


# ---------------------------------------------------------------------------------------------------
# The node
# ---------------------------------------------------------------------------------------------------


@finite_float_inputs
class CustomVideoXTrainAdapter(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CustomVideoXTrainAdapter",
            display_name="CustomVideoX Train Adapter",
            category="CustomVideoX",
            description=(
                "Trains the CustomVideoX adapter (a LoRA on the attention projections that teaches the model "
                "to read the reference frames) on a folder of clips and subject images, and saves it to "
                "models/customvideox for Load CustomVideoX. See docs/TRAINING.md."
            ),
            is_output_node=True,
            inputs=[
                model_input("The CogVideoX or Wan model to train for (it is not modified)."),
                io.Vae.Input("vae", tooltip="The model's video VAE; clips and subjects are encoded with it."),
                io.Conditioning.Input(
                    "positive",
                    tooltip="Text conditioning used for every item (per-item captions are not used yet).",
                ),
                io.String.Input(
                    "dataset_path",
                    default="customvideox_dataset",
                    tooltip="Folder of <name>.mp4 (or <name>/ frame folder) + <name>.png subject + optional "
                    "<name>_mask.png, inside ComfyUI's input folder or a customvideox_datasets folder: its "
                    "name relative to that folder (an absolute path only inside them; '..' and '~' are "
                    "refused).",
                ),
                io.String.Input(
                    "adapter_name",
                    default="my_subject",
                    tooltip="Saved as models/customvideox/<adapter_name>.safetensors; a plain file name of "
                    "letters, digits, spaces, '-', '_' and '.'.",
                ),
                *size_inputs(max_size=4096, noun="Training"),
                length_input(
                    max_frames=1025,
                    tooltip="Frames per clip (1 + 4k); the first frames of each clip are used.",
                ),
                *training_inputs(DEPRECATED_NOTE),
                io.Boolean.Input(
                    "overwrite",
                    default=False,
                    tooltip="Allow replacing an existing models/customvideox/<adapter_name>.safetensors.",
                ),
                io.Combo.Input(
                    "resume_from",
                    options=resume_choices(),
                    default=NO_RESUME,
                    tooltip="Continue training a saved adapter (same rank and alpha); its step count carries on.",
                ),
                TrainSettingsType.Input(
                    "settings",
                    optional=True,
                    tooltip="From CustomVideoX Train Settings: LoRA shape, optimiser, schedule and memory "
                    "settings. When connected it overrides rank … bf16 on this node.",
                ),
                io.Combo.Input(
                    "reference_layout",
                    options=list(LAYOUT_NAMES),
                    default=DEFAULT_LAYOUT,
                    optional=True,
                    tooltip=LAYOUT_TOOLTIP,
                ),
            ],
            outputs=[
                io.Model.Output(
                    tooltip="The input model with the trained adapter applied, ready for Sample."
                ),
                io.String.Output("adapter_path", tooltip="Where the adapter was saved."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, dataset_path: str, **kwargs) -> str:
        """Re-run when the dataset's files change, not only when the widgets do."""
        return dataset_signature(dataset_path)

    @classmethod
    def execute(
        cls,
        model,
        vae,
        positive,
        dataset_path: str,
        adapter_name: str,
        width: int,
        height: int,
        length: int,
        overwrite: bool,
        resume_from: str,
        settings: TrainSettings | None = None,
        reference_layout: str = DEFAULT_LAYOUT,
        **widgets,
    ) -> io.NodeOutput:
        """``widgets``: this node's deprecated rank … bf16 widgets, used when ``settings`` is not connected
        (graphs saved before the Train Settings node)."""
        if settings is None:
            settings = TrainSettings(**widgets)
        settings = TrainAdapterSettings(
            **settings.values(),
            adapter_name=adapter_name,
            data=TrainDataSettings(width=width, height=height, length=length),
            overwrite=overwrite,
            resume_from=resume_from,
            reference_layout=reference_layout,
        )
        folder = resolve_dataset_path(dataset_path)
        host = host_signature(model)
        output_path = adapter_output_path(settings.adapter_name)
        if output_path.exists() and not settings.overwrite:
            raise FileExistsError(
                f"models/{MODEL_FOLDER}/{output_path.name} already exists and overwrite is off; choose another "
                "adapter_name, or turn overwrite on to replace it (to continue training it, also pick it in "
                "resume_from)"
            )
        lora = settings.lora_config(host)
        resume = load_resume(settings, host, lora)
        if model.patches:
            logger.warning(
                "the input MODEL carries weight patches on %d tensors (a LoRA?); the adapter is trained on "
                "top of them, and the output MODEL keeps them",
                len(model.patches),
            )
        context = conditioning_context(positive)

        prepare_bar = comfy.utils.ProgressBar(1)
        dataset = prepare_dataset(
            vae, folder, settings.data, on_item=lambda done, total: prepare_bar.update_absolute(done, total)
        )
        if not dataset.entries:
            reasons = dataset.summary().partition("; skipped ")[2] or "the folder holds no items"
            raise ValueError(
                f"no usable training items in dataset_path {dataset_path.strip()!r} ({reasons}); see docs/TRAINING.md"
            )
        logger.info(
            "CustomVideoX training data: %s (%d encoded, %d from cache)",
            dataset.summary(),
            dataset.encoded,
            dataset.from_cache,
        )

        bar = comfy.utils.ProgressBar(settings.steps)
        outcome = train_adapter(
            model,
            host,
            dataset,
            context,
            settings,
            lora=lora,
            output_path=output_path,
            resume=resume,
            on_step=_progress_logger(settings.steps, bar),
        )
        trained = model_with_adapter(model, host, outcome.state_dict, layout=settings.reference_layout)
        curve, report = _loss_report(outcome, settings, dataset)
        preview = ui.PreviewImage(curve, cls=cls).as_dict()
        return io.NodeOutput(trained, str(outcome.path), ui={**preview, "text": (report,)})
