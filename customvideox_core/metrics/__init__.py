"""Fidelity measures of a generated video, after the paper's CLIP-I, DINO-I, T.Cons and CLIP-T.

Host-free (torch only); the score node feeds it ComfyUI's encoders. Definitions: ``docs/METRICS.md``.
"""

from .regions import REGION_MODES, RegionMode, select_region
from .sampling import frame_indices
from .scoring import ImageEncoder, ScoreOptions, VideoScores, encode_in_batches, score_video
from .similarity import (
    cosine_matrix,
    identity_per_frame,
    identity_per_reference,
    temporal_consistency,
    text_per_frame,
)

__all__ = [
    "REGION_MODES",
    "ImageEncoder",
    "RegionMode",
    "ScoreOptions",
    "VideoScores",
    "cosine_matrix",
    "encode_in_batches",
    "frame_indices",
    "identity_per_frame",
    "identity_per_reference",
    "score_video",
    "select_region",
    "temporal_consistency",
    "text_per_frame",
]
