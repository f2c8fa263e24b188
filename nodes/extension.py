"""The pack's V3 extension: the node list and the model folder it registers."""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from ..customvideox_core.constants import ADAPTER_EXTENSIONS, MODEL_FOLDER
from .apply_node import CustomVideoXApply
from .concat_id_node import CustomVideoXLoadConcatID
from .concat_id_wan import CustomVideoXLoadConcatIDWan
from .conditioning_node import CustomVideoXReferenceConditioning
from .erae_node import CustomVideoXERAEMask
from .load_node import LoadCustomVideoX
from .reference_guider import CustomVideoXReferenceGuider
from .reference_node import CustomVideoXReferenceEncode
from .sample_node import CustomVideoXSample
from .score_node import CustomVideoXScore
from .standin_nodes import CustomVideoXApplyStandIn, CustomVideoXLoadStandIn
from .tab_node import CustomVideoXTimeAwareBias
from .train_node import CustomVideoXTrainAdapter
from .train_settings_node import CustomVideoXTrainSettings


def register_model_folders() -> None:
    """Register ``models/customvideox`` (safetensors adapters); idempotent, keeps user-added paths."""
    default = os.path.join(folder_paths.models_dir, MODEL_FOLDER)
    if MODEL_FOLDER in folder_paths.folder_names_and_paths:
        paths, extensions = folder_paths.folder_names_and_paths[MODEL_FOLDER]
        if default not in paths:
            paths.append(default)
        if isinstance(extensions, set):
            extensions.update(ADAPTER_EXTENSIONS)
        return
    folder_paths.folder_names_and_paths[MODEL_FOLDER] = ([default], set(ADAPTER_EXTENSIONS))


NODES: list[type[io.ComfyNode]] = [
    LoadCustomVideoX,
    CustomVideoXReferenceEncode,
    CustomVideoXTimeAwareBias,
    CustomVideoXERAEMask,
    CustomVideoXSample,
    CustomVideoXApply,
    CustomVideoXTrainAdapter,
    CustomVideoXReferenceConditioning,
    CustomVideoXLoadConcatID,
    CustomVideoXLoadConcatIDWan,
    CustomVideoXTrainSettings,
    CustomVideoXScore,
    CustomVideoXLoadStandIn,
    CustomVideoXApplyStandIn,
    CustomVideoXReferenceGuider,
]


class CustomVideoXExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> CustomVideoXExtension:
    return CustomVideoXExtension()
