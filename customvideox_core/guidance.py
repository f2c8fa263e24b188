"""Reference-aware guidance on the one clock: Phantom's three passes with scales that follow the model's time.

Phantom's guidance combines three model passes — the positive prompt with the reference (``pos``), the
negative prompt with the reference (``middle``) and the negative prompt without it (``neg``)::

    neg + image_cfg · (middle − neg) + cfg · (pos − middle)

(core's ``DualCFGGuider``, style "regular"). Here ``cfg`` and ``image_cfg`` are :class:`GuidanceCurve`\\ s over
the model's time (:mod:`.clock`), and the image term has a window: outside it, ``image_cfg`` is 1, so the
formula is plain cfg against ``middle`` and the ``neg`` pass is not needed. Where both scales are 1 only
``pos`` is needed. A step that straddles a window edge gets the image term's mean over its
:class:`~.clock.ClockSpan` (the formula is linear in the scales, so that is the step's intended amount); a
per-step list gives each step one of its values (:meth:`GuidanceCurve.value_for`). Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .clock import ClockSpan
from .number_lists import parse_numbers
from .ranges import GUIDANCE_SCALE
from .tab import check_tab_window

EDGE_TOLERANCE = 1e-6
"""Percent of the model's time below which a step's overlap with the image window counts as none (and its
remainder outside as none): schedules are float32 sigmas, so a step edge meant to fall on 0.4 lands within
~1e-7 of it, and a hair of overlap would run a whole pass at an image scale of 1.0000004."""


def _check_scale(label: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{label} must be a finite number, got {value!r}")
    if value not in GUIDANCE_SCALE:
        raise ValueError(f"{label} must lie in {GUIDANCE_SCALE}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class GuidanceCurve:
    """A guidance scale over the model's time: one value is a constant; ``n`` values are per-step values
    that split the clock into ``n`` equal stretches, value ``k`` over ``[k/n, (k+1)/n]`` (so with ComfyUI's
    ``simple`` scheduler, which spaces steps evenly on the model's time, ``n`` values for ``n`` steps are
    exactly one value per step)."""

    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError("a guidance curve needs at least one value")
        checked = tuple(
            _check_scale(f"guidance value {index + 1}", value) for index, value in enumerate(self.values)
        )
        object.__setattr__(self, "values", checked)

    @classmethod
    def constant(cls, value: float) -> GuidanceCurve:
        return cls((value,))

    @classmethod
    def parse(cls, text: str, constant: float, label: str, constant_label: str = "scale") -> GuidanceCurve:
        """``"3, 3, 1, 1"`` → per-step values; an empty text → ``constant``. Commas, spaces or new lines
        separate values. Raises naming ``label`` (or ``constant_label``) and the item that is not a number
        or out of range."""
        values = parse_numbers(text, label, "guidance scales separated by commas, e.g. 3, 3, 1, 1, 1, 1")
        if not values:
            return cls((_check_scale(constant_label, constant),))
        for index, value in enumerate(values):
            if value not in GUIDANCE_SCALE:
                raise ValueError(
                    f"{label} item {index + 1} is {value!r}; every scale must lie in {GUIDANCE_SCALE} like "
                    "the cfg widgets"
                )
        return cls(tuple(values))

    def value_at(self, percent: float) -> float:
        """The value of the stretch ``percent`` falls in (the last one at 1)."""
        return self.values[min(int(percent * len(self.values)), len(self.values) - 1)]

    def value_for(self, span: ClockSpan) -> float:
        """The scale of a step that covers ``span``: the value of the stretch holding the span's middle.

        Not the mean over the span, on purpose: a per-step list is a per-step decision ("cfg 1 from the
        third step on"), and schedulers round their step edges (ComfyUI's ``simple`` picks sigmas from a
        1000-entry table), so a step edge lands a hair off the list's stretch edge; the mean would then give
        1.004 instead of 1 and run a pass the user switched off. Where the steps line up with the list, the
        middle's value is the mean.
        """
        if len(self.values) == 1:
            return self.values[0]
        return self.value_at(0.5 * (span.start + span.end))


@dataclass(frozen=True)
class GuidanceScales:
    """The scales of one model call, and which passes they need (core's "cfg 1" rule: ``math.isclose``)."""

    cfg: float
    image_cfg: float

    @property
    def needs_negative(self) -> bool:
        """The pass without the reference: only the image term reads it."""
        return not math.isclose(self.image_cfg, 1.0)

    @property
    def needs_middle(self) -> bool:
        """The negative prompt with the reference: the image term and the text term read it."""
        return self.needs_negative or not math.isclose(self.cfg, 1.0)

    @property
    def passes(self) -> int:
        """Model passes this call runs: 1 (positive only), 2 (plain cfg) or 3 (Phantom's)."""
        return 1 + self.needs_middle + self.needs_negative


@dataclass(frozen=True)
class ReferenceGuidance:
    """``cfg`` and ``image_cfg`` over the model's time, the image term inside ``[image_start, image_end]``."""

    cfg: GuidanceCurve
    image_cfg: GuidanceCurve
    image_start: float = 0.0
    image_end: float = 1.0

    def __post_init__(self) -> None:
        for name in ("image_start", "image_end"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
        check_tab_window(self.image_start, self.image_end, ("image_start", "image_end"), "the image window")

    @classmethod
    def constant(cls, cfg: float, image_cfg: float) -> ReferenceGuidance:
        return cls(GuidanceCurve.constant(cfg), GuidanceCurve.constant(image_cfg))

    def scales_over(self, span: ClockSpan) -> GuidanceScales:
        """The scales of a step that covers ``span``: ``cfg`` and ``image_cfg`` of the step
        (:meth:`GuidanceCurve.value_for`), the image term weighted by the share of the span inside the
        window (1 outside it): the mean of ``image_cfg(s)`` inside and 1 outside, over the span."""
        cfg = self.cfg.value_for(span)
        image_cfg = self.image_cfg.value_for(span)
        low, high = max(span.start, self.image_start), min(span.end, self.image_end)
        if span.length == 0.0:
            inside = 1.0 if self.image_start <= span.start <= self.image_end else 0.0
        else:
            overlap = max(0.0, high - low)
            inside = overlap / span.length
            if overlap < EDGE_TOLERANCE:
                inside = 0.0
            elif span.length - overlap < EDGE_TOLERANCE:
                inside = 1.0
        if inside == 1.0:
            return GuidanceScales(cfg, image_cfg)
        return GuidanceScales(cfg, 1.0 + (image_cfg - 1.0) * inside)


__all__ = ["EDGE_TOLERANCE", "GuidanceCurve", "GuidanceScales", "ReferenceGuidance"]
