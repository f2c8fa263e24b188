"""FaceSim's math without any network: the alignment, SCRFD decoding, NMS and which face is scored.

Oracles: a known similarity transform, the exact bilinear interpolation of a linear image, hand-made
detector outputs with known boxes, and hand-computed overlaps. The whole chain with ONNX models runs in
the host tier (``tests/host/test_face_score.py``), where onnxruntime is installed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from customvideox_core.metrics.face import FaceModel, pick_face, recognizer_input
from customvideox_core.metrics.face_align import ARCFACE_POINTS, align_face, similarity_transform, warp_affine
from customvideox_core.metrics.face_detect import (
    DETECTOR_LAYOUTS,
    Face,
    decode_detections,
    detect_faces,
    detector_input,
    non_maximum_suppression,
)


def known_transform(scale: float, angle: float, shift: tuple[float, float]) -> np.ndarray:
    cos, sin = math.cos(angle), math.sin(angle)
    return np.array([[scale * cos, -scale * sin, shift[0]], [scale * sin, scale * cos, shift[1]]])


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


@pytest.mark.parametrize("scale, angle, shift", [(1.7, 0.3, (12.0, -5.0)), (0.25, -2.5, (-40.0, 3.5))])
def test_the_similarity_transform_recovers_a_known_one(scale, angle, shift) -> None:
    source = np.random.default_rng(0).uniform(0, 300, size=(5, 2))
    matrix = known_transform(scale, angle, shift)
    estimated = similarity_transform(source, apply(matrix, source))
    np.testing.assert_allclose(estimated, matrix, atol=1e-9)


def test_the_similarity_transform_never_reflects_and_is_least_squares() -> None:
    source = ARCFACE_POINTS * 3.0 + 20.0
    mirrored = source * np.array([-1.0, 1.0])
    estimated = similarity_transform(source, mirrored)
    assert np.linalg.det(estimated[:, :2]) > 0

    # Least squares: no small change of the answer lowers the residual.
    def residual(m: np.ndarray) -> float:
        return float(((apply(m, source) - mirrored) ** 2).sum())

    base = residual(estimated)
    for delta in np.vstack([np.eye(4), -np.eye(4)]) * 1e-4:  # scale, angle, shift x, shift y; both ways
        scale, angle = math.hypot(*estimated[:, 0]), math.atan2(estimated[1, 0], estimated[0, 0])
        nudged = known_transform(scale + delta[0], angle + delta[1], tuple(estimated[:, 2] + delta[2:4]))
        assert residual(nudged) >= base - 1e-9


def test_coinciding_points_are_refused() -> None:
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), ARCFACE_POINTS)


def test_the_warp_samples_a_linear_image_exactly() -> None:
    height, width = 90, 120
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij"
    )
    image = torch.stack([0.1 + 0.003 * xs, 0.2 + 0.004 * ys, 0.5 + 0.001 * (xs - ys)], dim=-1)
    matrix = known_transform(1.3, 0.2, (-30.0, -10.0))
    crop = warp_affine(image, matrix, 40)
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    for v, u in [(0, 0), (5, 7), (20, 33), (39, 39)]:
        x, y = inverse @ np.array([u, v, 1.0])
        inside = 0 <= x <= width - 1 and 0 <= y <= height - 1
        expected = [0.1 + 0.003 * x, 0.2 + 0.004 * y, 0.5 + 0.001 * (x - y)] if inside else [0.0] * 3
        np.testing.assert_allclose(crop[v, u].numpy(), expected, atol=1e-9)


def test_alignment_puts_the_five_points_on_the_template() -> None:
    points_in_image = apply(known_transform(2.0, 0.4, (60.0, 20.0)), ARCFACE_POINTS)  # tilted, twice as big
    image = torch.zeros(300, 300, 3, dtype=torch.float64)
    for x, y in points_in_image:  # a bright 5×5 dot on each point
        image[round(y) - 2 : round(y) + 3, round(x) - 2 : round(x) + 3] = 1.0
    crop = align_face(image, points_in_image)
    assert crop.shape == (112, 112, 3)
    for x, y in ARCFACE_POINTS:
        assert float(crop[round(y), round(x), 0]) > 0.9
    assert float(crop.mean()) < 0.15


def raw_outputs(det_size: int, cells: dict[tuple[int, int, int], tuple[float, list[float], list[float]]]):
    """SCRFD outputs (9, strides 8/16/32, 2 anchors) with the given ``(stride, row, anchor)`` cells set."""
    layout = DETECTOR_LAYOUTS[9]
    scores, boxes, points = [], [], []
    for stride in layout.strides:
        rows = (det_size // stride) ** 2 * layout.anchors
        scores.append(np.zeros((rows, 1), np.float32))
        boxes.append(np.zeros((1, rows, 4), np.float32))  # with the batch axis, as some exports give
        points.append(np.zeros((rows, 10), np.float32))
    for (stride, row, anchor), (score, box, kps) in cells.items():
        index = layout.strides.index(stride)
        scores[index][row * 2 + anchor, 0] = score
        boxes[index][0, row * 2 + anchor] = box
        points[index][row * 2 + anchor] = kps
    return [*scores, *boxes, *points]


def test_decoding_places_boxes_and_points_on_their_cell() -> None:
    det_size = 64
    cell_row = 2 * (64 // 16) + 3  # stride 16: cell x = 3, y = 2 → corner (48, 32)
    kps = [0.5, 0.5, 1.5, 0.5, 1.0, 1.0, 0.5, 1.5, 1.5, 1.5]
    outputs = raw_outputs(det_size, {(16, cell_row, 1): (0.9, [1.0, 0.5, 2.0, 1.5], kps)})
    (face,) = decode_detections(outputs, det_size)
    assert face.box == pytest.approx((48 - 16, 32 - 8, 48 + 32, 32 + 24))
    assert face.score == pytest.approx(0.9)
    np.testing.assert_allclose(face.points, np.array(kps).reshape(5, 2) * 16 + [48, 32])
    assert decode_detections(raw_outputs(det_size, {(16, cell_row, 1): (0.4, [1] * 4, kps)}), det_size) == []


def test_decoding_refuses_a_model_that_is_no_scrfd() -> None:
    with pytest.raises(ValueError, match="9 or 15"):
        decode_detections([np.zeros((10, 1))] * 4, 64)
    outputs = raw_outputs(64, {})
    outputs[4] = np.zeros((7, 4))
    with pytest.raises(ValueError, match=r"box \(stride 16\).*SCRFD"):
        decode_detections(outputs, 64)


def test_nms_keeps_the_best_of_overlapping_boxes_only() -> None:
    boxes = np.array([[0, 0, 9, 9], [1, 0, 10, 9], [20, 20, 29, 29], [6, 0, 15, 9]], dtype=np.float64)
    scores = np.array([0.6, 0.9, 0.7, 0.8])
    # +1 areas: IoU(1, 0) = 90 / 110 > 0.4; IoU(1, 3) = 50 / 150 = 1/3 <= 0.4; box 2 touches none.
    assert non_maximum_suppression(boxes, scores, 0.4) == [1, 3, 2]
    assert non_maximum_suppression(boxes, scores, 0.3) == [1, 2]


def test_detections_come_back_in_the_images_pixels() -> None:
    image = torch.rand(320, 160, 3)  # tall: scaled by 64/320 = 0.2 into the 64² input
    blob, scale = detector_input(image, 64)
    assert blob.shape == (1, 3, 64, 64) and scale == pytest.approx(0.2)
    assert np.all(blob[0, :, :, 32:] == pytest.approx(-127.5 / 128))  # the padding is black
    kps = [0.0] * 10
    outputs = raw_outputs(64, {(16, 0, 0): (0.8, [0.0, 0.0, 1.0, 2.0], kps)})
    (face,) = detect_faces(image, lambda b: outputs, det_size=64)
    assert face.box == pytest.approx((0.0, 0.0, 16 / 0.2, 32 / 0.2))


def test_the_largest_face_or_the_one_in_the_mask_is_scored() -> None:
    small = Face(box=(10, 10, 20, 20), score=0.99, points=np.zeros((5, 2)))
    large = Face(box=(40, 40, 80, 80), score=0.6, points=np.zeros((5, 2)))
    assert pick_face([small, large], None, "full") is large
    mask = torch.zeros(100, 100)
    mask[12:18, 12:18] = 1.0
    assert pick_face([small, large], mask, "full") is large  # full ignores the mask
    assert pick_face([small, large], mask, "mask") is small
    ring = torch.zeros(100, 100)
    ring[0:2, 0:30] = 1.0
    ring[28:30, 0:30] = 1.0  # a mask whose bounding box holds the small face's centre, not its pixels
    assert pick_face([small, large], ring, "mask") is None
    assert pick_face([small, large], ring, "crop") is small
    assert pick_face([], None, "full") is None


def test_recogniser_input_is_rgb_scaled_to_unit_range() -> None:
    faces = torch.zeros(2, 112, 112, 3)
    faces[0, ..., 0] = 1.0
    blob = recognizer_input(faces)
    assert blob.shape == (2, 3, 112, 112) and blob.dtype == np.float32
    assert blob[0, 0].min() == 1.0 and blob[0, 1].max() == -1.0 and blob[1].max() == -1.0


def test_face_model_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        FaceModel(detect=lambda b: [], embed=lambda f: f, det_size=100)
    with pytest.raises(ValueError, match="threshold"):
        FaceModel(detect=lambda b: [], embed=lambda f: f, threshold=0.0)
