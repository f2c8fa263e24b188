"""Five-point face alignment: the similarity transform onto ArcFace's 112×112 template, and the warp.

The recognisers of insightface's packs (``buffalo_l``'s ``w600k_r50``, ``antelopev2``'s ``glintr100``) were
trained on faces aligned this way (insightface's ``face_align.norm_crop``): the detector's five points
(eye centres, nose tip, mouth corners, in the image's pixel coordinates, pixel centres at whole numbers)
are mapped onto :data:`ARCFACE_POINTS` by the least-squares similarity transform (Umeyama 1991, with
scale), and the crop is sampled bilinearly through that transform, black outside the image (OpenCV's
``warpAffine`` with its defaults).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

ALIGNED_SIZE = 112
"""Side of the aligned face crop the ArcFace recognisers take."""

ARCFACE_POINTS = np.array(
    [
        [38.2946, 51.6963],  # left eye (the image's left)
        [73.5318, 51.5014],  # right eye
        [56.0252, 71.7366],  # nose tip
        [41.5493, 92.3655],  # left mouth corner
        [70.7299, 92.2041],  # right mouth corner
    ],
    dtype=np.float64,
)
"""insightface's ``arcface_dst``: where the five points land in the 112×112 crop (x, y)."""


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The ``2×3`` matrix ``[s·R | t]`` that maps ``source`` points ``[N, 2]`` onto ``target`` ``[N, 2]``
    best in the least-squares sense (rotation, uniform scale and translation; no reflection).

    Umeyama's closed form (the estimator of scikit-image's ``SimilarityTransform``, which insightface uses).
    Raises ``ValueError`` when the source points do not span a direction (all equal).
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2 or source.shape[0] < 2:
        raise ValueError(
            f"similarity_transform takes two (N, 2) point sets of the same shape, N >= 2; got "
            f"{source.shape} and {target.shape}."
        )
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centred, target_centred = source - source_mean, target - target_mean
    source_variance = float((source_centred**2).sum(axis=1).mean())
    if source_variance <= 1e-12:
        raise ValueError("the face's five points coincide, so no alignment can be estimated.")
    covariance = target_centred.T @ source_centred / source.shape[0]
    u, singular, vt = np.linalg.svd(covariance)
    signs = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        signs[-1] = -1.0
    rotation = u @ np.diag(signs) @ vt
    scale = float(singular @ signs) / source_variance
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = target_mean - scale * rotation @ source_mean
    return matrix


def warp_affine(image: Tensor, matrix: np.ndarray, size: int) -> Tensor:
    """``image`` ``[H, W, C]`` seen through ``matrix`` (image → crop coordinates) → ``[size, size, C]``.

    Each crop pixel ``(x, y)`` takes the bilinear sample of the image at ``matrix⁻¹ · (x, y, 1)``; pixels
    that fall outside the image are 0 (as ``cv2.warpAffine`` with its default constant border).
    """
    if image.ndim != 3:
        raise ValueError(f"warp_affine takes one image (H, W, C), got shape {tuple(image.shape)}.")
    height, width = image.shape[:2]
    full = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(full)[:2]
    ys, xs = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij")
    crop_points = np.stack([xs.ravel(), ys.ravel(), np.ones(size * size)])
    source_x, source_y = inverse @ crop_points
    # grid_sample with align_corners=True puts pixel centre i at -1 + 2 i / (n - 1).
    grid_x = 2.0 * source_x / max(width - 1, 1) - 1.0
    grid_y = 2.0 * source_y / max(height - 1, 1) - 1.0
    grid = torch.from_numpy(np.stack([grid_x, grid_y], axis=-1).reshape(1, size, size, 2))
    planes = rearrange(image.to(torch.float64), "h w c -> 1 c h w")
    sampled = F.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return rearrange(sampled, "1 c h w -> h w c").to(image.dtype)


def align_face(image: Tensor, points: np.ndarray, size: int = ALIGNED_SIZE) -> Tensor:
    """The ArcFace crop ``[size, size, C]`` of the face whose five points are ``points`` ``[5, 2]``."""
    template = ARCFACE_POINTS * (size / ALIGNED_SIZE)
    return warp_affine(image, similarity_transform(points, template), size)
