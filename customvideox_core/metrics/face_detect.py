"""SCRFD face detection around a network run: the input it takes, and its outputs read as faces.

This is what insightface's ``SCRFD.detect`` does with the detector of ``buffalo_l`` (``det_10g.onnx``) and
``antelopev2`` (``scrfd_10g_bnkps.onnx``), written out so that the network is the only part run by
onnxruntime:

- **input**: the RGB image scaled to fit ``det_size × det_size`` (aspect kept, top-left, black padding),
  as ``(pixel − 127.5) / 128`` in ``[1, 3, det_size, det_size]``;
- **outputs**: for each stride ``s`` (a table by output count: 9 = strides 8/16/32 with 2 anchors per
  cell), a score ``[N, 1]``, box distances ``[N, 4]`` and five-point offsets ``[N, 10]`` (optionally with
  a leading batch axis), ``N = (det_size / s)² · anchors``, cells in row-major order, anchors innermost;
  distances and offsets are in units of the stride from the cell's corner ``(x·s, y·s)``;
- **decoding**: cells with score ``>= threshold`` give boxes ``(cx − l, cy − t, cx + r, cy + b)`` and
  points ``(cx + dx, cy + dy)``, scaled back to the image; overlapping boxes are merged by greedy
  non-maximum suppression (IoU above ``nms_threshold``, insightface's +1 pixel area convention).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor


@dataclass(frozen=True)
class DetectorLayout:
    """Strides and anchors per cell of a SCRFD export, found by its number of outputs."""

    strides: tuple[int, ...]
    anchors: int


DETECTOR_LAYOUTS: dict[int, DetectorLayout] = {
    9: DetectorLayout(strides=(8, 16, 32), anchors=2),
    15: DetectorLayout(strides=(8, 16, 32, 64, 128), anchors=1),
}
"""Output count → layout (SCRFD with keypoints; insightface's ``fmc`` 3 and 5)."""

DetectorRun = Callable[[np.ndarray], Sequence[np.ndarray]]
"""The detector network: ``[1, 3, S, S]`` float32 → its raw outputs (scores, boxes, points per stride)."""


@dataclass(frozen=True)
class Face:
    """One detected face in image pixel coordinates: ``box`` ``(x1, y1, x2, y2)``, ``score`` in [0, 1],
    ``points`` ``[5, 2]`` (eyes, nose, mouth corners as (x, y))."""

    box: tuple[float, float, float, float]
    score: float
    points: np.ndarray

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(x2 - x1, 0.0) * max(y2 - y1, 0.0)

    @property
    def centre(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2.0, (y1 + y2) / 2.0


def detector_input(image: Tensor, det_size: int) -> tuple[np.ndarray, float]:
    """``image`` ``[H, W, 3]`` in ``[0, 1]`` → the detector's blob ``[1, 3, S, S]`` and the scale applied.

    Bilinear resize without antialiasing (OpenCV's ``INTER_LINEAR``), the image in the top-left corner.
    """
    height, width = int(image.shape[0]), int(image.shape[1])
    if height / width > 1.0:
        new_height, new_width = det_size, max(int(det_size * width / height), 1)
    else:
        new_width, new_height = det_size, max(int(det_size * height / width), 1)
    scale = new_height / height
    planes = rearrange(image[..., :3].to(torch.float32) * 255.0, "h w c -> 1 c h w")
    resized = F.interpolate(planes, size=(new_height, new_width), mode="bilinear", align_corners=False)
    canvas = torch.zeros(1, 3, det_size, det_size)
    canvas[:, :, :new_height, :new_width] = resized.round().clamp(0.0, 255.0)
    blob = (canvas - 127.5) / 128.0
    return blob.numpy(), scale


def _per_stride(output: np.ndarray, rows: int, width: int, label: str) -> np.ndarray:
    array = np.asarray(output, dtype=np.float64)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.shape != (rows, width):
        raise ValueError(
            f"the face detector's {label} output has shape {tuple(np.asarray(output).shape)}, expected "
            f"({rows}, {width}); is this a SCRFD detector (insightface's det_10g / scrfd_10g_bnkps)?"
        )
    return array


def decode_detections(
    outputs: Sequence[np.ndarray],
    det_size: int,
    *,
    threshold: float = 0.5,
    nms_threshold: float = 0.4,
) -> list[Face]:
    """The detector's raw ``outputs`` for a ``det_size²`` input → faces in input pixels, best first."""
    layout = DETECTOR_LAYOUTS.get(len(outputs))
    if layout is None:
        raise ValueError(
            f"the face detector gives {len(outputs)} outputs; a SCRFD detector with five points gives "
            f"{' or '.join(map(str, DETECTOR_LAYOUTS))} (scores, boxes and points per stride)."
        )
    count = len(layout.strides)
    boxes, scores, points = [], [], []
    for index, stride in enumerate(layout.strides):
        cells = det_size // stride
        rows = cells * cells * layout.anchors
        score = _per_stride(outputs[index], rows, 1, f"score (stride {stride})")[:, 0]
        distance = _per_stride(outputs[index + count], rows, 4, f"box (stride {stride})") * stride
        offset = _per_stride(outputs[index + 2 * count], rows, 10, f"points (stride {stride})") * stride
        ys, xs = np.mgrid[:cells, :cells]
        centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float64) * stride
        centres = np.repeat(centres, layout.anchors, axis=0)
        keep = score >= threshold
        centre = centres[keep]
        boxes.append(np.concatenate([centre - distance[keep, :2], centre + distance[keep, 2:]], axis=1))
        scores.append(score[keep])
        points.append(centre[:, None, :] + offset[keep].reshape(-1, 5, 2))
    all_boxes, all_scores = np.concatenate(boxes), np.concatenate(scores)
    all_points = np.concatenate(points)
    kept = non_maximum_suppression(all_boxes, all_scores, nms_threshold)
    return [
        Face(box=tuple(float(v) for v in all_boxes[i]), score=float(all_scores[i]), points=all_points[i])
        for i in kept
    ]


def non_maximum_suppression(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Indices of the boxes ``[N, 4]`` kept, best score first: each drops the lower-scored boxes whose
    IoU with it is above ``threshold`` (areas as ``(x2 − x1 + 1)(y2 − y1 + 1)``, as insightface)."""
    order = list(np.argsort(-scores, kind="stable"))
    areas = (boxes[:, 2] - boxes[:, 0] + 1.0) * (boxes[:, 3] - boxes[:, 1] + 1.0)
    kept: list[int] = []
    while order:
        best, rest = order[0], np.array(order[1:], dtype=np.int64)
        kept.append(int(best))
        if rest.size == 0:
            break
        width = np.maximum(
            0.0, np.minimum(boxes[best, 2], boxes[rest, 2]) - np.maximum(boxes[best, 0], boxes[rest, 0]) + 1
        )
        height = np.maximum(
            0.0, np.minimum(boxes[best, 3], boxes[rest, 3]) - np.maximum(boxes[best, 1], boxes[rest, 1]) + 1
        )
        overlap = width * height
        iou = overlap / (areas[best] + areas[rest] - overlap)
        order = [int(i) for i in rest[iou <= threshold]]
    return kept


def detect_faces(
    image: Tensor,
    run: DetectorRun,
    *,
    det_size: int = 640,
    threshold: float = 0.5,
    nms_threshold: float = 0.4,
) -> list[Face]:
    """Faces in ``image`` ``[H, W, 3]`` (``[0, 1]``) in its own pixel coordinates, best score first."""
    blob, scale = detector_input(image, det_size)
    faces = decode_detections(run(blob), det_size, threshold=threshold, nms_threshold=nms_threshold)
    return [
        Face(box=tuple(v / scale for v in face.box), score=face.score, points=face.points / scale)
        for face in faces
    ]
