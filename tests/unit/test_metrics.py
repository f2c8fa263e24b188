"""Fidelity measures (CLIP-I, DINO-I, T.Cons, CLIP-T) against naive Python cosines and known answers.

The encoders here are toy functions (pooled pixels times a fixed random matrix); the oracle is a
plain-Python cosine over their outputs, written independently of ``customvideox_core.metrics``.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from customvideox_core.metrics import (
    ScoreOptions,
    cosine_matrix,
    frame_indices,
    identity_per_frame,
    score_video,
    select_region,
    temporal_consistency,
    text_per_frame,
)

HEIGHT, WIDTH = 24, 32


def toy_encoder(seed: int, width: int = 16):
    """``[N, H, W, 3] → [N, width]``: 4×4 average pooling, then a fixed random projection."""
    projection = torch.randn(48, width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def encode(images: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(images.permute(0, 3, 1, 2).to(torch.float64), (4, 4))
        return pooled.flatten(1) @ projection

    return encode


def naive_cos(a, b) -> float:
    a, b = [float(x) for x in a], [float(x) for x in b]
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b)))


def naive_identity(references, frame) -> float:
    """CLIP-I / DINO-I of one frame: the mean of its naive cosines with each reference."""
    return sum(naive_cos(reference, frame) for reference in references) / len(references)


def images(count: int, seed: int, height: int = HEIGHT, width: int = WIDTH) -> torch.Tensor:
    return torch.rand(count, height, width, 3, generator=torch.Generator().manual_seed(seed))


def test_frame_indices_known_answers() -> None:
    assert frame_indices(1, 1) == (0,)
    assert frame_indices(5, 1) == (0, 1, 2, 3, 4)
    assert frame_indices(5, 2) == (0, 2, 4)
    assert frame_indices(6, 4) == (0, 4)
    assert frame_indices(3, 10) == (0,)
    with pytest.raises(ValueError, match="stride is 0"):
        frame_indices(5, 0)
    with pytest.raises(ValueError, match="0 frames"):
        frame_indices(0, 1)


def test_cosine_matrix_matches_naive_formula() -> None:
    generator = torch.Generator().manual_seed(0)
    first, second = torch.randn(3, 7, generator=generator), torch.randn(4, 7, generator=generator)
    matrix = cosine_matrix(first, second)
    assert matrix.dtype == torch.float64 and matrix.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            assert matrix[i, j].item() == pytest.approx(naive_cos(first[i], second[j]), abs=1e-12)


def test_identity_and_temporal_known_answers() -> None:
    references = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    frames = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, -2.0]])
    # frame 0: (1 + 0) / 2; frame 1: (√½ + √½) / 2; frame 2: (0 − 1) / 2
    expected = [0.5, math.sqrt(0.5), -0.5]
    assert identity_per_frame(references, frames).tolist() == pytest.approx(expected, abs=1e-12)
    # consecutive pairs: cos(f0, f1) = √½, cos(f1, f2) = −√½
    assert temporal_consistency(frames).tolist() == pytest.approx([math.sqrt(0.5), -math.sqrt(0.5)])
    assert temporal_consistency(frames[:1]).numel() == 0
    assert text_per_frame(torch.tensor([0.0, 3.0]), frames).tolist() == pytest.approx(
        [0.0, math.sqrt(0.5), -1.0]
    )


def test_cosine_refuses_mismatched_widths_and_zero_vectors() -> None:
    with pytest.raises(ValueError, match="same encoder"):
        cosine_matrix(torch.ones(1, 3), torch.ones(1, 4))
    with pytest.raises(ValueError, match="all-zero"):
        cosine_matrix(torch.zeros(1, 3), torch.ones(1, 3))
    with pytest.raises(ValueError, match="NaN"):
        cosine_matrix(torch.tensor([[float("nan"), 1.0]]), torch.ones(1, 2))


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(0.01, 100.0), seed=st.integers(0, 10_000))
def test_identity_is_invariant_to_positive_scale(scale: float, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    # float64 inputs: scaling a float32 tensor rounds it, which the cosine then sees at ~1e-8
    references = torch.randn(2, 5, generator=generator, dtype=torch.float64)
    frames = torch.randn(3, 5, generator=generator, dtype=torch.float64)
    plain = identity_per_frame(references, frames)
    scaled = identity_per_frame(references * scale, frames)
    assert torch.allclose(plain, scaled, atol=1e-12)
    assert bool((plain.abs() <= 1 + 1e-12).all())


def test_score_video_matches_naive_cosines_per_frame() -> None:
    clip, dino = toy_encoder(1), toy_encoder(2, width=9)
    frames, references = images(5, seed=3), images(2, seed=4)
    text = torch.randn(16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    scores = score_video(frames, references, clip, dino_encoder=dino, text_embedding=text)
    clip_frames, clip_refs = clip(frames), clip(references)
    dino_frames, dino_refs = dino(frames), dino(references)
    assert scores.frames == (0, 1, 2, 3, 4)
    for f in range(5):
        expected_clip = naive_identity(clip_refs, clip_frames[f])
        expected_dino = naive_identity(dino_refs, dino_frames[f])
        assert scores.clip_i[f] == pytest.approx(expected_clip, abs=1e-10)
        assert scores.dino_i[f] == pytest.approx(expected_dino, abs=1e-10)
        assert scores.clip_t[f] == pytest.approx(naive_cos(text, clip_frames[f]), abs=1e-10)
        assert scores.clip_i_per_reference[1][f] == pytest.approx(
            naive_cos(clip_refs[1], clip_frames[f]), abs=1e-10
        )
    for k in range(4):
        assert scores.t_cons[k] == pytest.approx(naive_cos(clip_frames[k], clip_frames[k + 1]), abs=1e-10)
    means = scores.means
    assert means["clip_i"] == pytest.approx(sum(scores.clip_i) / 5)
    assert means["t_cons"] == pytest.approx(sum(scores.t_cons) / 4)


def test_stride_scores_every_other_frame_and_tcons_spans_the_stride() -> None:
    clip = toy_encoder(1)
    frames, references = images(5, seed=3), images(1, seed=4)
    scores = score_video(frames, references, clip, options=ScoreOptions(stride=2))
    embeds = clip(frames)
    assert scores.frames == (0, 2, 4)
    assert len(scores.clip_i) == 3
    assert scores.t_cons[0] == pytest.approx(naive_cos(embeds[0], embeds[2]), abs=1e-10)
    assert scores.t_cons[1] == pytest.approx(naive_cos(embeds[2], embeds[4]), abs=1e-10)


def test_reference_repeated_scores_one_and_noise_scores_lower() -> None:
    clip, dino = toy_encoder(1), toy_encoder(2)
    reference = images(1, seed=7)
    repeated = reference.expand(6, -1, -1, -1).clone()
    perfect = score_video(repeated, reference, clip, dino_encoder=dino)
    for key in ("clip_i", "dino_i", "t_cons"):
        assert perfect.means[key] == pytest.approx(1.0, abs=1e-12)
    noise = images(6, seed=8)
    noisy = score_video(noise, reference, clip, dino_encoder=dino)
    assert noisy.means["clip_i"] < perfect.means["clip_i"] - 1e-3
    assert noisy.means["dino_i"] < perfect.means["dino_i"] - 1e-3
    assert noisy.means["t_cons"] < perfect.means["t_cons"] - 1e-3


def subject_mask(count: int) -> torch.Tensor:
    mask = torch.zeros(count, HEIGHT, WIDTH)
    mask[:, 6:18, 10:22] = 1.0
    return mask


@pytest.mark.parametrize("region", ["mask", "crop"])
def test_masked_score_ignores_changes_outside_the_mask(region: str) -> None:
    clip, dino = toy_encoder(1), toy_encoder(2)
    frames, reference = images(4, seed=3), images(1, seed=4)
    mask = subject_mask(1)
    options = ScoreOptions(region=region, crop_size=32)
    base = score_video(frames, reference, clip, dino_encoder=dino, frame_masks=mask, options=options)
    outside = frames.clone()
    outside[:, :6] = torch.rand(4, 6, WIDTH, 3, generator=torch.Generator().manual_seed(11))
    changed_outside = score_video(
        outside, reference, clip, dino_encoder=dino, frame_masks=mask, options=options
    )
    assert changed_outside.clip_i == base.clip_i
    assert changed_outside.dino_i == base.dino_i
    inside = frames.clone()
    inside[:, 6:18, 10:22] = 1.0 - inside[:, 6:18, 10:22]
    changed_inside = score_video(
        inside, reference, clip, dino_encoder=dino, frame_masks=mask, options=options
    )
    assert max(abs(a - b) for a, b in zip(changed_inside.clip_i, base.clip_i, strict=True)) > 1e-3
    # Without the mask, the same outside change does move the score.
    full = score_video(frames, reference, clip)
    full_outside = score_video(outside, reference, clip)
    assert max(abs(a - b) for a, b in zip(full.clip_i, full_outside.clip_i, strict=True)) > 1e-3


def test_mask_region_whitens_outside_and_keeps_inside() -> None:
    frames = images(2, seed=3)
    mask = subject_mask(2)
    mask[1, 0, 0] = 0.25  # soft edge: a blend of pixel and white
    region = select_region(frames, mask, "mask")
    assert torch.equal(region[:, 6:18, 10:22], frames[:, 6:18, 10:22])
    assert bool((region[0, :6] == 1.0).all())
    expected = frames[1, 0, 0] * 0.25 + 0.75
    assert torch.allclose(region[1, 0, 0], expected)


def test_crop_region_is_a_square_around_the_subject() -> None:
    frame = torch.zeros(1, HEIGHT, WIDTH, 3)
    frame[0, 4:8, 2:18] = torch.tensor([0.2, 0.4, 0.6])  # a 4 × 16 subject
    mask = torch.zeros(1, HEIGHT, WIDTH)
    mask[0, 4:8, 2:18] = 1.0
    crop = select_region(frame, mask, "crop", size=16)
    assert crop.shape == (1, 16, 16, 3)
    # the 4 × 16 box is padded to 16 × 16 (6 white rows above and below), then resized 16 → 16
    assert torch.allclose(crop[0, 8, 8], torch.tensor([0.2, 0.4, 0.6]), atol=1e-5)
    assert torch.allclose(crop[0, 0, 8], torch.ones(3), atol=1e-5)
    assert torch.allclose(crop[0, 15, 8], torch.ones(3), atol=1e-5)


def test_clear_errors_for_bad_masks_and_frames() -> None:
    clip = toy_encoder(1)
    frames, reference = images(4, seed=3), images(1, seed=4)
    with pytest.raises(ValueError, match="no mask was given for frames"):
        score_video(frames, reference, clip, options=ScoreOptions(region="mask"))
    with pytest.raises(ValueError, match="3 masks for 4 frames"):
        score_video(frames, reference, clip, frame_masks=subject_mask(3), options=ScoreOptions(region="mask"))
    empty = subject_mask(4)
    empty[2] = 0.0
    with pytest.raises(ValueError, match=r"empty .* for image\(s\) \[2\]"):
        score_video(frames, reference, clip, frame_masks=empty, options=ScoreOptions(region="crop"))
    with pytest.raises(ValueError, match="holds no image"):
        score_video(frames[:0], reference, clip)
    with pytest.raises(ValueError, match=r"expected \(N, H, W, 3\)"):
        score_video(frames[0], reference, clip)
    with pytest.raises(ValueError, match="region 'box' is unknown"):
        ScoreOptions(region="box")  # type: ignore[arg-type]


def test_per_frame_masks_follow_the_stride() -> None:
    clip = toy_encoder(1)
    frames, reference = images(5, seed=3), images(1, seed=4)
    masks = subject_mask(5)
    masks[1] = 0.0  # frame 1 is not scored with stride 2, so its empty mask is never used
    scores = score_video(
        frames, reference, clip, frame_masks=masks, options=ScoreOptions(stride=2, region="mask")
    )
    assert scores.frames == (0, 2, 4)


def test_summary_is_json_and_text() -> None:
    scores = score_video(images(3, seed=1), images(2, seed=2), toy_encoder(1))
    document = json.loads(json.dumps(scores.to_json()))
    assert document["dino_i"] is None and document["clip_t"] is None
    assert document["frames"] == [0, 1, 2] and document["references"] == 2
    assert len(document["per_reference"]["clip_i"]) == 2
    assert document["clip_i"] == pytest.approx(sum(document["per_frame"]["clip_i"]) / 3)
    text = scores.summary_text()
    assert "DINO-I n/a" in text and f"CLIP-I {scores.means['clip_i']:.4f}" in text


def test_text_projection_is_the_one_that_fits_both_widths() -> None:
    from customvideox_core.metrics.text import project_text, select_text_projection

    generator = torch.Generator().manual_seed(0)
    projection_g = torch.randn(6, 5, generator=generator)
    weights = {
        "clip_l.transformer.text_projection.weight": torch.randn(4, 4, generator=generator),
        "clip_g.transformer.text_projection.weight": projection_g,
        "clip_g.transformer.text_model.final_layer_norm.weight": torch.ones(5),
    }
    assert select_text_projection(weights, pooled_width=5, embed_width=6) is projection_g
    pooled = torch.randn(1, 5, generator=generator)
    projected = project_text(pooled, projection_g)
    expected = [
        math.fsum(float(projection_g[i, j]) * float(pooled[0, j]) for j in range(5)) for i in range(6)
    ]
    assert projected.tolist() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="no CLIP text projection"):
        select_text_projection({"encoder.block.0.weight": torch.ones(2, 2)}, 2, 2)
    with pytest.raises(ValueError, match="no text projection maps"):
        select_text_projection(weights, pooled_width=5, embed_width=7)
    with pytest.raises(ValueError, match="several text projections fit"):
        select_text_projection(
            {"a.text_projection.weight": torch.ones(4, 4), "b.text_projection.weight": torch.ones(4, 4)}, 4, 4
        )


def test_every_metric_of_the_table_is_a_per_frame_field_and_a_mean() -> None:
    import dataclasses

    from customvideox_core.metrics.scoring import VideoScores
    from customvideox_core.score_summary import METRIC_LABELS, METRICS

    assert tuple(METRIC_LABELS) == METRICS
    assert set(METRICS) <= {field.name for field in dataclasses.fields(VideoScores)}
    scores = VideoScores(
        frames=(0, 1),
        region="full",
        references=1,
        clip_i=(0.5, 1.0),
        clip_i_per_reference=((0.5, 1.0),),
        t_cons=(0.25,),
    )
    assert list(scores.means) == list(METRICS)
    assert scores.means == {"clip_i": 0.75, "dino_i": None, "t_cons": 0.25, "clip_t": None}
    assert list(scores.to_json()["per_frame"]) == list(METRICS)


def test_nan_frames_or_reference_blame_that_input_not_the_encoder() -> None:
    clip = toy_encoder(1)
    frames, reference = images(3, seed=5), images(1, seed=6)
    bad_frames = frames.clone()
    bad_frames[1, 2, 3, 0] = float("nan")
    with pytest.raises(
        ValueError, match=r"the frames input holds NaN or infinite.*image\(s\) 1 of 3"
    ) as caught:
        score_video(bad_frames, reference, clip)
    assert "embeddings" not in str(caught.value) and "encoder" not in str(caught.value)
    bad_reference = reference.clone()
    bad_reference[0, 0, 0, 1] = float("inf")
    with pytest.raises(ValueError, match="the reference input holds NaN or infinite"):
        score_video(frames, bad_reference, clip)
    bad_mask = torch.ones(1, HEIGHT, WIDTH)
    bad_mask[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="mask of frames holds NaN"):
        score_video(frames, reference, clip, frame_masks=bad_mask, options=ScoreOptions(region="mask"))


def test_the_summary_holds_motion_always_and_face_sim_only_with_a_face_model() -> None:
    from customvideox_core.score_summary import SUMMARY_METRICS

    frames = images(1, seed=7).expand(3, -1, -1, -1).clone()
    scores = score_video(frames, images(1, seed=8), toy_encoder(1))
    summary = json.loads(json.dumps(scores.to_json()))
    assert set(SUMMARY_METRICS) <= set(summary)
    assert summary["motion"] == 0.0 and summary["motion_per_pair"]["overall"] == [0.0, 0.0]
    assert summary["motion_subject"] is None and summary["face_sim"] is None and summary["face"] is None
    assert "Motion 0.0000" in scores.summary_text() and "FaceSim n/a" in scores.summary_text()
