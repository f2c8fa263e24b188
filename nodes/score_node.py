"""Score: the paper's fidelity measures of a generated video, with the user's own encoders.

CLIP-I and T.Cons from a CLIP vision model, DINO-I from a DINOv2 (both through core's Load CLIP
Vision), CLIP-T from a matching CLIP text model, FaceSim from insightface's ArcFace (Load Face Model), and
the motion score (block matching, no model). The math is ``customvideox_core.metrics``; the
definitions and what the numbers mean are in ``docs/METRICS.md``.
"""

from __future__ import annotations

import json
import logging
import math

import torch
from comfy_api.latest import io, ui

from ..customvideox_core.metrics import REGION_MODES, ScoreOptions, score_video
from ..customvideox_core.score_summary import (
    METRICS,
    MOTION_LABELS,
    SCORE_UI_KEY,
    SUMMARY_LABELS,
    SUMMARY_METRICS,
)
from .face_model_node import FaceModelType
from .finite_inputs import finite_float_inputs
from .plots import plot_series
from .score_encoders import check_family, image_embedding_width, image_encoder, text_embedding

logger = logging.getLogger(__name__)


@finite_float_inputs
class CustomVideoXScore(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CustomVideoXScore",
            display_name="CustomVideoX Score",
            category="CustomVideoX",
            description=(
                "Scores a decoded video against the reference image(s): CLIP-I and DINO-I (cosine of "
                "reference and frame embeddings), T.Cons (cosine of consecutive frames), CLIP-T (cosine "
                "of prompt and frame), FaceSim (ArcFace cosine of the reference's and each frame's face, "
                "with a face model) and motion (how far the picture moves, % of the short side per frame "
                "step). Means over the scored frames; the per-frame curves are drawn on the node and the "
                "summary is in the API's history (key cvx_scores). Cosines in [−1, 1]; the paper reports "
                "them × 100."
            ),
            inputs=[
                io.Image.Input(
                    "frames", tooltip="The decoded video (VAE Decode output), one image per frame."
                ),
                io.Image.Input(
                    "reference",
                    tooltip="The subject's reference image(s); several are scored separately and averaged.",
                ),
                io.ClipVision.Input(
                    "clip_vision",
                    tooltip="A CLIP or SigLIP vision model from Load CLIP Vision (e.g. clip_vision_l, "
                    "clip_vision_g, siglip): CLIP-I, T.Cons and CLIP-T.",
                ),
                io.Combo.Input(
                    "region",
                    options=list(REGION_MODES),
                    default="full",
                    tooltip="full: whole frames; mask: the subject inside its mask, white outside; crop: "
                    "a square crop around the mask. CLIP-I and DINO-I only (T.Cons/CLIP-T use whole frames).",
                ),
                io.Int.Input(
                    "frame_stride",
                    default=1,
                    min=1,
                    max=1024,
                    tooltip="Score frames 0, stride, 2·stride, …; T.Cons then compares frames stride apart.",
                ),
                io.Boolean.Input(
                    "center_crop",
                    default=True,
                    tooltip="How the encoder sees a non-square image: on = center square crop (ComfyUI's "
                    "default), off = squeezed to a square.",
                ),
                io.Mask.Input(
                    "mask",
                    optional=True,
                    tooltip="Subject mask of the video (1 = subject): one for all frames or one per frame.",
                ),
                io.Mask.Input(
                    "reference_mask",
                    optional=True,
                    tooltip="Subject mask of the reference(s); without it the references are used whole.",
                ),
                io.ClipVision.Input(
                    "dino_vision",
                    optional=True,
                    tooltip="A DINOv2 model from Load CLIP Vision, for DINO-I (the paper used DINO v1).",
                ),
                io.Clip.Input(
                    "clip",
                    optional=True,
                    tooltip="The text model of the same CLIP as clip_vision (e.g. SDXL's clip_g with "
                    "clip_vision_g), for CLIP-T. T5/umT5 cannot give CLIP-T.",
                ),
                io.String.Input(
                    "prompt",
                    multiline=True,
                    default="",
                    optional=True,
                    tooltip="The video's prompt, for CLIP-T (needs clip).",
                ),
                FaceModelType.Input(
                    "face_model",
                    optional=True,
                    tooltip="From Load Face Model (insightface buffalo_l / antelopev2): FaceSim, the ArcFace "
                    "cosine of the reference's face and each frame's face (largest face; with region "
                    "mask/crop, the face inside the mask).",
                ),
            ],
            outputs=[
                io.Float.Output("clip_i", tooltip="Mean CLIP-I over scored frames."),
                io.Float.Output("dino_i", tooltip="Mean DINO-I (NaN without dino_vision)."),
                io.Float.Output(
                    "t_cons", tooltip="Mean T.Cons over consecutive scored frames (NaN for one frame)."
                ),
                io.Float.Output("clip_t", tooltip="Mean CLIP-T (NaN without clip)."),
                io.String.Output("summary", tooltip="The scores as JSON (the same as in the history)."),
                io.Float.Output(
                    "face_sim", tooltip="Mean FaceSim over the frames with a face (NaN without face_model)."
                ),
                io.Float.Output("face_sim_min", tooltip="Lowest per-frame FaceSim: the worst drift."),
                io.Float.Output(
                    "face_detected", tooltip="Share of scored frames in which a face was found (0–1)."
                ),
                io.Float.Output(
                    "motion", tooltip="Mean block displacement, % of the short side per scored frame step."
                ),
                io.Float.Output(
                    "motion_subject", tooltip="The same inside the subject mask (NaN without mask)."
                ),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(
        cls,
        frames,
        reference,
        clip_vision,
        region: str,
        frame_stride: int,
        center_crop: bool,
        mask=None,
        reference_mask=None,
        dino_vision=None,
        clip=None,
        prompt: str = "",
        face_model=None,
    ) -> io.NodeOutput:
        check_family(clip_vision, "clip_vision")
        if dino_vision is not None:
            check_family(dino_vision, "dino_vision")
        options = ScoreOptions(stride=frame_stride, region=region)  # type: ignore[arg-type]
        text = None
        if clip is not None:
            text = text_embedding(clip, prompt or "", image_embedding_width(clip_vision))
        elif prompt and prompt.strip():
            logger.info("CustomVideoX Score: a prompt was given without clip; CLIP-T is not measured")
        scores = score_video(
            frames,
            reference,
            image_encoder(clip_vision, center_crop=center_crop),
            dino_encoder=None if dino_vision is None else image_encoder(dino_vision, center_crop=center_crop),
            text_embedding=text,
            frame_masks=mask,
            reference_masks=reference_mask,
            face_model=face_model,
            options=options,
        )
        summary = scores.to_json()
        curves = {
            SUMMARY_LABELS[key]: values
            for key, values in summary["per_frame"].items()
            if values  # absent measures (None) and T.Cons of one frame (empty) are not drawn
        }
        if scores.face is not None and scores.face.found:
            curves[SUMMARY_LABELS["face_sim"]] = list(scores.face.per_frame)  # gaps: frames without a face
        frames = list(scores.frames)
        pictures = [
            plot_series(curves, x_values=frames, title="CustomVideoX scores per frame", x_label="frame")
        ]
        motion = summary["motion_per_pair"]
        if motion is not None and motion["overall"]:
            lines = {MOTION_LABELS["motion"]: motion["overall"]}
            if motion["subject"] is not None and any(v is not None for v in motion["subject"]):
                lines[MOTION_LABELS["motion_subject"]] = motion["subject"]
            pictures.append(
                plot_series(
                    lines, x_values=frames, title="motion per step (% of short side)", x_label="frame"
                )
            )
        preview = ui.PreviewImage(torch.cat(pictures), cls=cls).as_dict()
        numbers = scores.numbers
        floats = [math.nan if numbers[key] is None else numbers[key] for key in SUMMARY_METRICS]
        text_summary = json.dumps(summary)
        paper = len(METRICS)  # outputs: the paper's four, the summary, then FaceSim and motion (appended)
        return io.NodeOutput(
            *floats[:paper],
            text_summary,
            *floats[paper:],
            ui={**preview, SCORE_UI_KEY: [summary], "text": (scores.summary_text(),)},
        )
