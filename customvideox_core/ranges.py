"""Ranges of the pack's number inputs that more than the nodes need, each written once.

The nodes declare their widgets with them (ComfyUI then refuses a value outside, also over the API); the
batch client checks job values against the same ranges before it queues anything. No torch, no ComfyUI.

- ``TAB_LEVEL`` ``[-20, 20]``: TimeAwareBias ``peak``, ``floor`` and every custom value.
- ``TAB_PROGRESS`` ``[0, 1]``: the model's time (ComfyUI's start/end percent) — TimeAwareBias ``start`` /
  ``end``, Reference Guider ``image_start`` / ``image_end``.
- ``ERAE_STRENGTH`` ``[0, 10]``: ERAEMask ``strength`` (γ).
- ``ERAE_THRESHOLD`` ``[0, 1]``: ERAEMask ``threshold``.
- ``GUIDANCE_SCALE`` ``[0, 100]``: Sample's and the Reference Guider's ``cfg`` and ``image_cfg``, and every
  per-step scale (ComfyUI's own samplers use the same).
- ``STANDIN_STRENGTH`` ``[0, 2]``: Apply Stand-In ``strength``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bounds:
    """A number widget's range: ``low`` ≤ value ≤ ``high`` in steps of ``step``, shown rounded to ``round``
    (``None``: ComfyUI's default)."""

    low: float
    high: float
    step: float | None = None
    round: float | None = None

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int | float) and self.low <= value <= self.high

    def __str__(self) -> str:
        return f"[{self.low:g}, {self.high:g}]"


TAB_LEVEL = Bounds(-20.0, 20.0, 0.05)
TAB_PROGRESS = Bounds(0.0, 1.0, 0.01)
ERAE_STRENGTH = Bounds(0.0, 10.0, 0.05)
ERAE_THRESHOLD = Bounds(0.0, 1.0, 0.01)
GUIDANCE_SCALE = Bounds(0.0, 100.0, 0.1, round=0.01)
STANDIN_STRENGTH = Bounds(0.0, 2.0, 0.05)
