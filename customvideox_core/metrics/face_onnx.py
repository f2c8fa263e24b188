"""The insightface ONNX files run with onnxruntime: the one module that imports it (optional dependency).

A model pack is a folder of ``.onnx`` files as insightface lays them out (``models/insightface/models/
buffalo_l``, ``…/antelopev2``): the detector and the recogniser are found by their signatures —

- detector (SCRFD): one input ``[1, 3, ?, ?]`` and 9 (or 15) outputs (:data:`.face_detect.DETECTOR_LAYOUTS`);
- recogniser (ArcFace): one input ``[?, 3, 112, 112]`` and one output ``[?, D]``.

The pack's other files (landmarks ``1k3d68``/``2d106det``, ``genderage``) are not needed and not loaded.
Nothing is downloaded: a missing folder or file is an error saying where the files go.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .face import FaceModel
from .face_align import ALIGNED_SIZE
from .face_detect import DETECTOR_LAYOUTS

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "FaceSim needs onnxruntime in ComfyUI's Python: run `python -m pip install onnxruntime` (or "
    "`onnxruntime-gpu` for CUDA) with the Python that runs ComfyUI, or `pip install -r "
    "requirements-face.txt` in this pack's folder, then restart ComfyUI."
)
NOT_NEEDED = frozenset({"1k3d68.onnx", "2d106det.onnx", "genderage.onnx"})
"""Files of insightface's packs that FaceSim does not use (landmarks, age/gender): never loaded."""
PROVIDERS = {"cpu": ("CPUExecutionProvider",), "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider")}
"""Device choice → onnxruntime execution providers, in order of preference."""


def import_onnxruntime():
    """``onnxruntime``, or an ``ImportError`` saying how to install it."""
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return onnxruntime


def _is_detector(session) -> bool:
    inputs = session.get_inputs()
    return len(inputs) == 1 and len(inputs[0].shape) == 4 and len(session.get_outputs()) in DETECTOR_LAYOUTS


def _is_recogniser(session) -> bool:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    return (
        len(inputs) == 1
        and list(inputs[0].shape[1:]) == [3, ALIGNED_SIZE, ALIGNED_SIZE]
        and len(outputs) == 1
        and len(outputs[0].shape) == 2
    )


def _single(found: list[tuple[Path, object]], what: str, folder: Path, signature: str):
    if len(found) != 1:
        listed = ", ".join(path.name for path, _ in found) or "none"
        raise ValueError(
            f"the face model folder {folder.name} must hold exactly one {what} ({signature}); found "
            f"{listed}. Use insightface's buffalo_l or antelopev2 folder as published."
        )
    return found[0]


def _session(onnxruntime, path: Path, options, providers: list[str]):
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=providers)
    except Exception as error:  # onnxruntime's own error types (InvalidProtobuf, Fail, …) share no base
        raise ValueError(
            f"{path.name} in the face model folder is not a model onnxruntime can read ({error}); "
            "replace it with the file from insightface's pack, or remove it."
        ) from error


def load_face_model(folder: Path, *, device: str = "cpu", det_size: int = 640) -> FaceModel:
    """A :class:`FaceModel` running ``folder``'s SCRFD detector and ArcFace recogniser with onnxruntime."""
    onnxruntime = import_onnxruntime()
    if device not in PROVIDERS:
        raise ValueError(f"device {device!r} is unknown; expected one of {', '.join(PROVIDERS)}.")
    files = sorted(path for path in Path(folder).glob("*.onnx") if path.name not in NOT_NEEDED)
    if not files:
        raise FileNotFoundError(
            f"the face model folder {Path(folder).name} holds no .onnx file; put insightface's buffalo_l or "
            "antelopev2 files in ComfyUI/models/insightface/models/<name>/ (nothing is downloaded)."
        )
    available = set(onnxruntime.get_available_providers())
    providers = [name for name in PROVIDERS[device] if name in available]
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        logger.warning(
            "onnxruntime has no CUDA provider here (install onnxruntime-gpu); FaceSim runs on the CPU"
        )
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    sessions = [(path, _session(onnxruntime, path, options, providers)) for path in files]
    detector_path, detector = _single(
        [(p, s) for p, s in sessions if _is_detector(s)], "SCRFD detector", Path(folder), "9 outputs"
    )
    recogniser_path, recogniser = _single(
        [(p, s) for p, s in sessions if _is_recogniser(s)],
        "ArcFace recogniser",
        Path(folder),
        "input [N, 3, 112, 112] → [N, D]",
    )
    logger.info(
        "FaceSim: detector %s, recogniser %s (%s)", detector_path.name, recogniser_path.name, providers[0]
    )
    detector_input = detector.get_inputs()[0].name
    recogniser_input = recogniser.get_inputs()[0].name

    def detect(blob: np.ndarray) -> list[np.ndarray]:
        return detector.run(None, {detector_input: blob.astype(np.float32)})

    def embed(faces: np.ndarray) -> np.ndarray:
        # Exports with a fixed batch of 1 exist; one face at a time works for every export.
        rows = [
            recogniser.run(None, {recogniser_input: faces[i : i + 1].astype(np.float32)})[0]
            for i in range(len(faces))
        ]
        return np.concatenate(rows, axis=0)

    return FaceModel(detect=detect, embed=embed, name=Path(folder).name, det_size=det_size)
