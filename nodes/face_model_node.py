"""Load Face Model: insightface's ONNX pack (``models/insightface/models/<pack>``) for FaceSim.

The same files PuLID, InstantID and IPAdapter FaceID read (``buffalo_l``, ``antelopev2``). onnxruntime is
an optional dependency, imported only when this node runs (``customvideox_core/metrics/face_onnx.py``).
"""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io, ui

from ..customvideox_core.metrics.face_onnx import PROVIDERS, load_face_model
from .model_folders import register_folder

FACE_FOLDER = "insightface"
"""``models/insightface``, the folder the insightface-based packs share; packs sit in its ``models/``."""
FaceModelType = io.Custom("CVX_FACE_MODEL")


def register_face_folder() -> None:
    """Register ``models/insightface`` (``.onnx``) unless another pack did; keeps user-added paths."""
    register_folder(FACE_FOLDER, (".onnx",))


def face_pack_folders() -> dict[str, str]:
    """Pack name → folder, for every ``<insightface folder>/models/<pack>`` holding ``.onnx`` files."""
    try:
        roots = folder_paths.get_folder_paths(FACE_FOLDER)
    except KeyError:
        return {}
    packs: dict[str, str] = {}
    for root in roots:
        models = os.path.join(root, "models")
        if not os.path.isdir(models):
            continue
        for name in sorted(os.listdir(models)):
            folder = os.path.join(models, name)
            if os.path.isdir(folder) and any(f.endswith(".onnx") for f in os.listdir(folder)):
                packs.setdefault(name, folder)
    return packs


class CustomVideoXLoadFaceModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CustomVideoXLoadFaceModel",
            display_name="Load Face Model (insightface)",
            category="CustomVideoX",
            description=(
                "Loads insightface's face detector (SCRFD) and recogniser (ArcFace) from "
                "models/insightface/models/<pack> — buffalo_l or antelopev2, the files PuLID, InstantID and "
                "IPAdapter FaceID use — for FaceSim in CustomVideoX Score. Needs onnxruntime; nothing is "
                "downloaded."
            ),
            inputs=[
                io.Combo.Input(
                    "pack",
                    options=list(face_pack_folders()),
                    tooltip="A folder of models/insightface/models: buffalo_l (det_10g + w600k_r50) or "
                    "antelopev2 (scrfd_10g_bnkps + glintr100).",
                ),
                io.Combo.Input(
                    "device",
                    options=list(PROVIDERS),
                    default="cpu",
                    tooltip="cpu, or cuda (needs onnxruntime-gpu; falls back to the CPU with a warning).",
                ),
                io.Int.Input(
                    "det_size",
                    default=640,
                    min=64,
                    max=1280,
                    step=32,
                    tooltip="Side of the detector's input (insightface's default 640); a larger one "
                    "finds smaller faces, slower.",
                ),
            ],
            outputs=[FaceModelType.Output("face_model", tooltip="For CustomVideoX Score's face_model.")],
        )

    @classmethod
    def execute(cls, pack: str, device: str, det_size: int) -> io.NodeOutput:
        folders = face_pack_folders()
        if pack not in folders:
            raise FileNotFoundError(
                f"face model pack '{pack}' is not in models/insightface/models; put the buffalo_l or "
                "antelopev2 folder there and refresh (press R)."
            )
        model = load_face_model(folders[pack], device=device, det_size=det_size)
        return io.NodeOutput(model, ui=ui.PreviewText(f"{pack}: SCRFD detector + ArcFace recogniser"))
