"""The pack's V3 extension: the node list and the model folder it registers."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from ..customvideox_core.constants import ADAPTER_EXTENSIONS, DATASET_FOLDER, MODEL_FOLDER
from .apply_node import CustomVideoXApply
from .concat_id_node import CustomVideoXLoadConcatID
from .concat_id_wan import CustomVideoXLoadConcatIDWan
from .conditioning_node import CustomVideoXReferenceConditioning
from .erae_node import CustomVideoXERAEMask
from .face_model_node import CustomVideoXLoadFaceModel, register_face_folder
from .load_node import LoadCustomVideoX
from .model_folders import register_folder
from .reference_guider import CustomVideoXReferenceGuider
from .reference_node import CustomVideoXReferenceEncode
from .sample_node import CustomVideoXSample
from .score_node import CustomVideoXScore
from .standin_nodes import CustomVideoXApplyStandIn, CustomVideoXLoadStandIn
from .tab_node import CustomVideoXTimeAwareBias
from .train_node import CustomVideoXTrainAdapter
from .train_settings_node import CustomVideoXTrainSettings


def register_model_folders() -> None:
    """Register ``models/customvideox`` (safetensors adapters), ``models/customvideox_datasets``
    (training datasets, besides ComfyUI's input folder) and ``models/insightface`` (face models);
    idempotent, keeps user-added paths (an ``extra_model_paths.yaml`` entry
    ``customvideox_datasets: /data/datasets`` adds a dataset root)."""
    register_face_folder()
    for name, extensions in ((MODEL_FOLDER, ADAPTER_EXTENSIONS), (DATASET_FOLDER, ())):
        register_folder(name, extensions)


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
    CustomVideoXLoadFaceModel,
    CustomVideoXReferenceGuider,
]


class CustomVideoXExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> CustomVideoXExtension:
    return CustomVideoXExtension()
