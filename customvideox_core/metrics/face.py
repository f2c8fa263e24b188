"""FaceSim: the cosine of ArcFace embeddings between the reference's face and each frame's face.

For the reference(s) and every scored frame: detect the faces (SCRFD, :mod:`.face_detect`), take one
(the largest; with a subject mask, the largest whose box centre lies inside the mask — ``mask`` region —
or inside the mask's bounding box — ``crop`` region), align it onto ArcFace's 112×112 template
(:mod:`.face_align`) and embed it with the recogniser. A frame's FaceSim is the mean over references of
``cos(reference face, frame face)``; a frame without a face has none and counts in ``detected`` as a miss.

The networks come in as plain functions (:class:`FaceModel`); :mod:`.face_onnx` makes them from the
insightface ONNX files with onnxruntime, the only place that imports it. Definitions: ``docs/METRICS.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .averages import mean_or_none
from .face_align import align_face
from .face_detect import DetectorRun, Face, detect_faces
from .regions import MASK_THRESHOLD, REGION_MODES, RegionMode, check_images, mask_box, masks_for
from .sampling import frame_indices
from .similarity import identity_per_frame, identity_per_reference

RecognizerRun = Callable[[np.ndarray], np.ndarray]
"""The recogniser network: aligned faces ``[N, 3, 112, 112]`` float32 (RGB, ``(pixel − 127.5) / 127.5``)
→ embeddings ``[N, D]``."""


@dataclass(frozen=True)
class FaceModel:
    """A face detector and recogniser as functions, and how detection is run.

    ``det_size``: the detector's square input side (a multiple of 32; insightface's default 640);
    ``threshold``: the detection score a face needs; ``nms_threshold``: the IoU above which a weaker
    overlapping box is dropped; ``name``: the model pack, for the summary.
    """

    detect: DetectorRun
    embed: RecognizerRun
    name: str = "face model"
    det_size: int = 640
    threshold: float = 0.5
    nms_threshold: float = 0.4

    def __post_init__(self) -> None:
        if self.det_size < 32 or self.det_size % 32:
            raise ValueError(f"det_size is {self.det_size}; it must be a positive multiple of 32 (e.g. 640).")
        for name in ("threshold", "nms_threshold"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 < value <= 1.0):
                raise ValueError(f"{name} is {value!r}; it must be a number in (0, 1].")


def recognizer_input(faces: Tensor) -> np.ndarray:
    """Aligned faces ``[N, 112, 112, 3]`` in ``[0, 1]`` → the recogniser's ``[N, 3, 112, 112]`` float32."""
    pixels = faces[..., :3].to(torch.float32).permute(0, 3, 1, 2) * 255.0
    return ((pixels - 127.5) / 127.5).contiguous().numpy()


def pick_face(faces: list[Face], mask: Tensor | None, region: RegionMode) -> Face | None:
    """The face scored in one image: the largest, among those inside the subject ``mask`` ``[H, W]``
    when ``region`` is ``mask`` (box centre on a mask pixel above 0.5) or ``crop`` (box centre inside
    the bounding box of those pixels). ``None`` when there is none."""
    candidates = faces
    if region != "full" and mask is not None:
        inside = mask > MASK_THRESHOLD
        height, width = inside.shape
        box = mask_box(mask)

        def contains(face: Face) -> bool:
            x, y = face.centre
            column, row = min(max(round(x), 0), width - 1), min(max(round(y), 0), height - 1)
            if region == "mask":
                return bool(inside[row, column])
            return box is not None and box[0] <= row < box[1] and box[2] <= column < box[3]

        candidates = [face for face in faces if contains(face)]
    return max(candidates, key=lambda face: face.area, default=None)


def embed_faces(
    images: Tensor, model: FaceModel, masks: Tensor | None, region: RegionMode, label: str
) -> tuple[list[Face | None], Tensor | None, list[int]]:
    """Detect, pick, align and embed one face per image of ``images`` ``[N, H, W, C]``.

    Returns the face picked in each image (``None`` where none), the ``[M, D]`` float64 embeddings of
    the ``M`` images that have one, and those images' indices.
    """
    count, height, width = images.shape[:3]
    weights = None if masks is None else masks_for(masks, count, height, width, f"the mask of {label}")
    picked: list[Face | None] = []
    crops = []
    for index in range(count):
        image = images[index, ..., :3].to(torch.float32)
        faces = detect_faces(
            image,
            model.detect,
            det_size=model.det_size,
            threshold=model.threshold,
            nms_threshold=model.nms_threshold,
        )
        face = pick_face(faces, None if weights is None else weights[index], region)
        picked.append(face)
        if face is not None:
            crops.append(align_face(image, face.points))
    found = [index for index, face in enumerate(picked) if face is not None]
    if not crops:
        return picked, None, found
    embeddings = np.asarray(model.embed(recognizer_input(torch.stack(crops))), dtype=np.float64)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(crops):
        raise ValueError(
            f"the face recogniser returned shape {embeddings.shape} for {len(crops)} faces; expected (N, D). "
            "Is this an ArcFace recogniser (insightface's w600k_r50 / glintr100)?"
        )
    return picked, torch.from_numpy(embeddings), found


@dataclass(frozen=True)
class FaceScores:
    """FaceSim of one video. ``frames``: the scored frames; ``per_frame``: the mean over references of
    the cosine, ``None`` where the frame has no face; ``per_reference``: one such row per reference;
    ``boxes``: the face scored in each frame ``(x1, y1, x2, y2)`` or ``None``; ``model``: the pack."""

    frames: tuple[int, ...]
    per_frame: tuple[float | None, ...]
    per_reference: tuple[tuple[float | None, ...], ...]
    boxes: tuple[tuple[float, float, float, float] | None, ...]
    model: str

    @property
    def found(self) -> list[float]:
        return [value for value in self.per_frame if value is not None]

    @property
    def mean(self) -> float | None:
        """FaceSim: the mean over the frames that have a face (``None`` when no frame has one)."""
        return mean_or_none(self.found)

    @property
    def minimum(self) -> float | None:
        """The lowest per-frame FaceSim (the worst drift), ``None`` when no frame has a face."""
        return min(self.found, default=None)

    @property
    def detected(self) -> float:
        """The share of scored frames in which a face was found, in ``[0, 1]``."""
        return len(self.found) / len(self.frames)

    def to_json(self) -> dict:
        return {
            "per_frame": list(self.per_frame),
            "per_reference": [
                mean_or_none([value for value in row if value is not None]) for row in self.per_reference
            ],
            "boxes": [None if box is None else [round(v, 2) for v in box] for box in self.boxes],
            "model": self.model,
        }


def score_faces(
    frames: Tensor,
    references: Tensor,
    model: FaceModel,
    *,
    frame_masks: Tensor | None = None,
    reference_masks: Tensor | None = None,
    region: RegionMode = "full",
    stride: int = 1,
) -> FaceScores:
    """FaceSim of ``frames`` ``[F, H, W, C]`` against ``references`` ``[R, H', W', C]`` (see the module doc).

    ``frame_masks`` ``[1 | F, H, W]`` (all frames, before striding) and ``reference_masks``
    ``[1 | R, H', W']`` choose the face with ``region`` ``mask`` / ``crop``. Raises ``ValueError`` when a
    reference has no face (FaceSim is then undefined).
    """
    if region not in REGION_MODES:
        raise ValueError(f"region {region!r} is unknown; expected one of {', '.join(REGION_MODES)}.")
    check_images(frames, "frames")
    check_images(references, "reference")
    indices = frame_indices(frames.shape[0], stride)
    if frame_masks is not None and frame_masks.ndim == 3 and frame_masks.shape[0] == frames.shape[0]:
        frame_masks = frame_masks[list(indices)]
    return _score_faces(
        frames[list(indices)], indices, references, model, frame_masks, reference_masks, region
    )


def _score_faces(
    scored: Tensor,
    indices: tuple[int, ...],
    references: Tensor,
    model: FaceModel,
    frame_masks: Tensor | None,
    reference_masks: Tensor | None,
    region: RegionMode,
) -> FaceScores:
    """:func:`score_faces` of frames already checked and selected: ``scored`` ``[len(indices), H, W, C]``
    are the frames ``indices`` of the video, ``frame_masks`` ``[1 | len(indices), H, W]`` their masks;
    ``references`` are checked too (``region`` is known)."""
    reference_faces, reference_embeds, _ = embed_faces(
        references, model, reference_masks, region if reference_masks is not None else "full", "reference"
    )
    missing = [index for index, face in enumerate(reference_faces) if face is None]
    if missing:
        raise ValueError(
            f"no face was found in reference image(s) {missing} (detection score >= {model.threshold}); "
            "FaceSim needs a visible face in every reference: use a clear, frontal face picture, or "
            "disconnect face_model."
        )
    frame_faces, frame_embeds, found = embed_faces(scored, model, frame_masks, region, "frames")
    rows: list[list[float | None]] = [[None] * len(indices) for _ in range(references.shape[0])]
    per_frame: list[float | None] = [None] * len(indices)
    if frame_embeds is not None:
        cosines = identity_per_reference(reference_embeds, frame_embeds)  # type: ignore[arg-type]
        means = identity_per_frame(reference_embeds, frame_embeds)  # type: ignore[arg-type]
        for column, frame in enumerate(found):
            per_frame[frame] = float(means[column])
            for reference in range(references.shape[0]):
                rows[reference][frame] = float(cosines[reference, column])
    return FaceScores(
        frames=indices,
        per_frame=tuple(per_frame),
        per_reference=tuple(tuple(row) for row in rows),
        boxes=tuple(None if face is None else face.box for face in frame_faces),
        model=model.name,
    )
