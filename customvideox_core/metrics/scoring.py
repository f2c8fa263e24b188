"""Score a video against its reference image(s) with the user's encoders: CLIP-I, DINO-I, T.Cons, CLIP-T.

Host-free: the encoders come in as functions ``[N, H, W, 3] → [N, D]`` (the node wraps ComfyUI's
CLIP-vision objects), the text embedding as a ``[D]`` tensor. See ``docs/METRICS.md``.

What is encoded:

- CLIP-I / DINO-I: the references and the scored frames, each cut to ``options.region`` (whole image,
  inside the mask, or a crop around it) — so with a mask, changes outside it cannot move these scores;
- T.Cons and CLIP-T: the whole scored frames (smoothness and prompt fidelity are about the whole scene);
- FaceSim (with a face model, :mod:`.face`): one face per image, chosen inside the mask with ``mask``/``crop``;
- motion (always, :mod:`.motion`): the scored frames, and the blocks inside their mask for the subject.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..score_summary import METRICS, SUMMARY_LABELS
from .averages import mean_or_none
from .face import FaceModel, FaceScores, _score_faces
from .motion import MotionOptions, MotionScores, _score_motion
from .regions import REGION_MODES, RegionMode, check_images, select_region
from .sampling import frame_indices
from .similarity import identity_per_reference, temporal_consistency, text_per_frame

ImageEncoder = Callable[[Tensor], Tensor]
"""``[N, H, W, 3]`` images in ``[0, 1]`` → ``[N, D]`` embeddings."""


@dataclass(frozen=True)
class ScoreOptions:
    """How a video is scored. ``stride``: score frames ``0, stride, 2·stride, …``; ``region``: see
    :mod:`.regions`; ``crop_size``: side of the ``crop`` region's square; ``batch_size``: images per
    encoder call (memory bound)."""

    stride: int = 1
    region: RegionMode = "full"
    crop_size: int = 224
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise ValueError(f"frame stride is {self.stride}; it must be >= 1 (1 = every frame).")
        if self.region not in REGION_MODES:
            raise ValueError(f"region {self.region!r} is unknown; expected one of {', '.join(REGION_MODES)}.")
        if self.crop_size < 8:
            raise ValueError(f"crop_size is {self.crop_size}; it must be at least 8 pixels.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size is {self.batch_size}; it must be >= 1.")


@dataclass(frozen=True)
class VideoScores:
    """Per-frame scores of one video (cosines in [−1, 1]; ``None`` = not measured).

    ``frames``: indices of the scored frames in the input video; ``clip_i``/``dino_i``/``clip_t``: one
    value per scored frame; ``clip_i_per_reference``/``dino_i_per_reference``: one row per reference;
    ``t_cons``: one value per pair of consecutive scored frames (empty for one frame). The per-frame
    fields are named as the metric table (:data:`~customvideox_core.score_summary.METRICS`) names them.
    ``face``: FaceSim (``None`` without a face model); ``motion``: the motion score.
    """

    frames: tuple[int, ...]
    region: str
    references: int
    clip_i: tuple[float, ...]
    clip_i_per_reference: tuple[tuple[float, ...], ...]
    t_cons: tuple[float, ...]
    dino_i: tuple[float, ...] | None = None
    dino_i_per_reference: tuple[tuple[float, ...], ...] | None = None
    clip_t: tuple[float, ...] | None = None
    face: FaceScores | None = None
    motion: MotionScores | None = None

    @property
    def means(self) -> dict[str, float | None]:
        """The video's score per measure: the mean over scored frames (over pairs for T.Cons)."""
        return {metric: mean_or_none(getattr(self, metric)) for metric in METRICS}

    @property
    def numbers(self) -> dict[str, float | None]:
        """Every summary number (:data:`~customvideox_core.score_summary.SUMMARY_METRICS`): the means,
        FaceSim's mean, minimum and share of frames with a face, and the motion (``None``: not measured)."""
        face, motion = self.face, self.motion
        return {
            **self.means,
            "face_sim": None if face is None else face.mean,
            "face_sim_min": None if face is None else face.minimum,
            "face_detected": None if face is None else face.detected,
            "motion": None if motion is None else motion.mean,
            "motion_subject": None if motion is None else motion.subject_mean,
        }

    def to_json(self) -> dict:
        """A JSON-ready summary: the means, the per-frame curves and how they were measured."""
        return {
            **self.numbers,
            "frames": list(self.frames),
            "region": self.region,
            "references": self.references,
            "per_frame": {
                metric: None if (values := getattr(self, metric)) is None else list(values)
                for metric in METRICS
            },
            "per_reference": {
                "clip_i": [mean_or_none(row) for row in self.clip_i_per_reference],
                "dino_i": None
                if self.dino_i_per_reference is None
                else [mean_or_none(row) for row in self.dino_i_per_reference],
            },
            "face": None if self.face is None else self.face.to_json(),
            "motion_per_pair": None
            if self.motion is None
            else {"overall": list(self.motion.overall), "subject": self.motion.subject},
        }

    def summary_text(self) -> str:
        """One line per measure, e.g. ``CLIP-I 0.8123`` (``n/a`` when not measured)."""
        lines = []
        numbers = self.numbers
        for key, label in SUMMARY_LABELS.items():
            value = numbers[key]
            lines.append(f"{label} {'n/a' if value is None else f'{value:.4f}'}")
        lines.append(f"{len(self.frames)} frame(s) scored ({self.region}), {self.references} reference(s)")
        return "\n".join(lines)


def encode_in_batches(encoder: ImageEncoder, images: Tensor, batch_size: int, label: str) -> Tensor:
    """Run ``encoder`` over ``images`` ``[N, H, W, 3]`` ``batch_size`` at a time → ``[N, D]``."""
    chunks = []
    for start in range(0, images.shape[0], batch_size):
        embeds = encoder(images[start : start + batch_size])
        if embeds.ndim != 2 or embeds.shape[0] != min(batch_size, images.shape[0] - start):
            raise ValueError(
                f"the {label} encoder returned shape {tuple(embeds.shape)} for "
                f"{min(batch_size, images.shape[0] - start)} images; expected (N, D)."
            )
        chunks.append(embeds.detach().to(device="cpu", dtype=torch.float64))
    return torch.cat(chunks)


def _rows_as_tuples(matrix: Tensor) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in matrix)


def score_video(
    frames: Tensor,
    references: Tensor,
    clip_encoder: ImageEncoder,
    *,
    dino_encoder: ImageEncoder | None = None,
    text_embedding: Tensor | None = None,
    frame_masks: Tensor | None = None,
    reference_masks: Tensor | None = None,
    face_model: FaceModel | None = None,
    options: ScoreOptions = ScoreOptions(),
) -> VideoScores:
    """Score ``frames`` ``[F, H, W, 3]`` against ``references`` ``[R, H', W', 3]``.

    ``frame_masks``: ``[1 | F, H, W]`` subject masks of the video (all frames, before striding);
    ``reference_masks``: ``[1 | R, H', W']``. With ``options.region`` ``mask``/``crop`` the frames need a
    mask; references without one are used whole. ``text_embedding``: ``[D]`` in the CLIP encoder's
    space, for CLIP-T. ``face_model``: for FaceSim (:func:`.face.score_faces`).
    """
    check_images(frames, "frames")
    check_images(references, "reference")
    indices = frame_indices(frames.shape[0], options.stride)
    scored = frames[list(indices)]
    if frame_masks is not None and frame_masks.ndim == 3 and frame_masks.shape[0] != 1:
        if frame_masks.shape[0] != frames.shape[0]:
            raise ValueError(
                f"the mask of frames holds {frame_masks.shape[0]} masks for {frames.shape[0]} frames; give "
                f"one mask for every frame or one per frame ({frames.shape[0]})."
            )
        frame_masks = frame_masks[list(indices)]
    region = options.region
    frame_region = select_region(scored, frame_masks, region, size=options.crop_size, label="frames")
    reference_mode: RegionMode = region if reference_masks is not None else "full"
    reference_region = select_region(
        references, reference_masks, reference_mode, size=options.crop_size, label="reference"
    )
    face = None
    if face_model is not None:
        face = _score_faces(scored, indices, references, face_model, frame_masks, reference_masks, region)
    motion = _score_motion(scored, indices, frame_masks, MotionOptions())

    def encode(encoder: ImageEncoder, images: Tensor, label: str) -> Tensor:
        return encode_in_batches(encoder, images, options.batch_size, label)

    clip_refs = encode(clip_encoder, reference_region, "CLIP vision")
    clip_region_frames = encode(clip_encoder, frame_region, "CLIP vision")
    clip_whole_frames = (
        clip_region_frames if region == "full" else encode(clip_encoder, scored[..., :3], "CLIP vision")
    )
    clip_rows = identity_per_reference(clip_refs, clip_region_frames)
    dino_rows = None
    if dino_encoder is not None:
        dino_rows = identity_per_reference(
            encode(dino_encoder, reference_region, "DINO"), encode(dino_encoder, frame_region, "DINO")
        )
    clip_t = None
    if text_embedding is not None:
        clip_t = tuple(float(v) for v in text_per_frame(text_embedding, clip_whole_frames))
    return VideoScores(
        frames=indices,
        region=region,
        references=int(references.shape[0]),
        clip_i=tuple(float(v) for v in clip_rows.mean(dim=0)),
        clip_i_per_reference=_rows_as_tuples(clip_rows),
        t_cons=tuple(float(v) for v in temporal_consistency(clip_whole_frames)),
        dino_i=None if dino_rows is None else tuple(float(v) for v in dino_rows.mean(dim=0)),
        dino_i_per_reference=None if dino_rows is None else _rows_as_tuples(dino_rows),
        clip_t=clip_t,
        face=face,
        motion=motion,
    )
