"""Which frames of a video are scored: every ``stride``-th frame, starting at the first."""

from __future__ import annotations


def frame_indices(frame_count: int, stride: int) -> tuple[int, ...]:
    """Indices ``0, stride, 2·stride, … < frame_count`` of the frames that are scored.

    The first frame is always scored; the last only when ``stride`` divides ``frame_count − 1``.
    T.Cons compares consecutive *scored* frames, so with ``stride > 1`` it measures the similarity of
    frames ``stride`` apart.
    """
    if frame_count < 1:
        raise ValueError(f"the video has {frame_count} frames; give at least one frame to score.")
    if stride < 1:
        raise ValueError(f"frame stride is {stride}; it must be a positive whole number (1 = every frame).")
    return tuple(range(0, frame_count, stride))
