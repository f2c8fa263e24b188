"""Host-free LoRA training: peft injection, the denoising objective, dataset scanning and the loop.

The ComfyUI node that drives training passes in the host's own diffusion model, decoders and VAE; this
package needs torch, peft and safetensors only.
"""

from .data import (
    DatasetItem,
    DatasetItemError,
    DatasetScan,
    DecodedSample,
    Decoders,
    LatentCacheEntry,
    decode_item,
    iter_decoded,
    load_latent_cache,
    save_latent_cache,
    scan_dataset,
)
from .loop import (
    PeftAdapter,
    TrainableAdapter,
    TrainConfig,
    TrainStep,
    checkpoint_modules,
    train,
    warmup_factor,
)
from .objective import DenoisingObjective, ModelFn, ObjectiveKind, denoising_loss
from .peft_lora import (
    LoraTrainConfig,
    inject_lora,
    load_lora_state_dict,
    lora_layers,
    lora_parameters,
    lora_state_dict,
    remove_lora,
    target_module_names,
)
from .reference_lora import ReferenceBranchLoRA

__all__ = [
    "DatasetItem",
    "DatasetItemError",
    "DatasetScan",
    "DecodedSample",
    "Decoders",
    "DenoisingObjective",
    "LatentCacheEntry",
    "LoraTrainConfig",
    "ModelFn",
    "ObjectiveKind",
    "PeftAdapter",
    "ReferenceBranchLoRA",
    "TrainConfig",
    "TrainStep",
    "TrainableAdapter",
    "checkpoint_modules",
    "decode_item",
    "denoising_loss",
    "inject_lora",
    "iter_decoded",
    "load_latent_cache",
    "load_lora_state_dict",
    "lora_layers",
    "lora_parameters",
    "lora_state_dict",
    "remove_lora",
    "save_latent_cache",
    "scan_dataset",
    "target_module_names",
    "train",
    "warmup_factor",
]
