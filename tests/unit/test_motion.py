"""The motion score against known answers: a still video, a texture moved by a known shift, a subject
moving on a still background."""

from __future__ import annotations

import math

import pytest
import torch

from customvideox_core.metrics.motion import MotionOptions, block_displacements, score_motion

SIZE = 128


def texture(height: int, width: int, seed: int) -> torch.Tensor:
    """Smooth random texture ``[H, W, 3]`` (noise blurred once, so blocks are distinct but not flat)."""
    noise = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed))
    blurred = torch.nn.functional.avg_pool2d(noise, 3, stride=1, padding=1, count_include_pad=False)
    return blurred[0].permute(1, 2, 0)


def shifted(image: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """``image`` moved right by ``dx`` and down by ``dy`` pixels (wrapping around)."""
    return torch.roll(image, shifts=(dy, dx), dims=(0, 1))


def test_a_still_video_does_not_move() -> None:
    frame = texture(SIZE, 192, seed=1)
    scores = score_motion(frame.expand(4, -1, -1, -1).clone())
    assert scores.overall == (0.0, 0.0, 0.0) and scores.mean == 0.0 and scores.subject is None


@pytest.mark.parametrize("dx, dy", [(3, -2), (-5, 0), (0, 7)])
def test_every_inner_block_finds_the_known_shift(dx, dy) -> None:
    frame = texture(SIZE, 192, seed=2)
    field = block_displacements(
        frame.mean(-1).double(), shifted(frame, dx, dy).mean(-1).double(), block=8, radius=8
    )
    inner = field[1:-1, 1:-1]  # border blocks may see content wrapped in from the other side
    assert torch.equal(inner, torch.tensor([dx, dy], dtype=torch.float64).expand_as(inner))


def test_motion_is_the_shift_in_percent_of_the_short_side() -> None:
    frame = texture(SIZE, 160, seed=3)
    frames = torch.stack([frame, shifted(frame, 4, 3), shifted(frame, 8, 6)])
    scores = score_motion(frames)
    expected = 5.0 * 100 / SIZE  # |(4, 3)| = 5 working pixels per pair
    assert scores.mean == pytest.approx(expected, rel=0.1)
    # the stride pairs frames 0 and 2: twice the shift
    assert score_motion(frames, stride=2).mean == pytest.approx(2 * expected, rel=0.1)


def test_the_frame_size_does_not_change_the_answer() -> None:
    frame = texture(SIZE, SIZE, seed=4)
    small = torch.stack([frame, shifted(frame, 2, 0)])
    large = torch.nn.functional.interpolate(small.permute(0, 3, 1, 2), scale_factor=2, mode="nearest")
    assert score_motion(large.permute(0, 2, 3, 1)).mean == pytest.approx(score_motion(small).mean, rel=0.05)


def test_the_subject_motion_reads_the_masked_blocks_only() -> None:
    background = texture(SIZE, SIZE, seed=5)
    subject = texture(48, 48, seed=6)
    first, second = background.clone(), background.clone()
    first[40:88, 40:88] = subject
    second[40:88, 44:92] = subject  # the subject moves 4 pixels right, the background stands still
    mask = torch.zeros(2, SIZE, SIZE)
    mask[0, 40:88, 40:88] = 1.0
    mask[1, 40:88, 44:92] = 1.0
    scores = score_motion(torch.stack([first, second]), masks=mask)
    assert scores.subject_mean == pytest.approx(4 * 100 / SIZE, rel=0.15)
    assert scores.mean < scores.subject_mean / 3
    unmasked = torch.zeros(1, SIZE, SIZE)
    assert score_motion(torch.stack([first, second]), masks=unmasked).subject == (None,)


def test_one_frame_has_no_motion_and_bad_options_are_refused() -> None:
    assert score_motion(texture(SIZE, SIZE, seed=7)[None]).mean is None
    with pytest.raises(ValueError, match="radius"):
        MotionOptions(radius=0)
    assert math.isfinite(score_motion(torch.rand(2, 40, 300, 3)).mean)
