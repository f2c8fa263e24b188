"""The one clock inside ComfyUI: the model sampling's ``percent_to_sigma`` for every model call.

:class:`~.patch.ConditioningRoles` (a ``CALC_COND_BATCH`` wrapper, so it sees the model with its object
patches — ``ModelSamplingSD3``'s shift, say — applied) writes the model's ``percent_to_sigma`` into the
call's ``transformer_options`` under :data:`CLOCK_KEY`; :func:`call_span` turns the call's sigma and the
sampler's schedule into the :class:`~customvideox_core.clock.ClockSpan` its step covers. The arithmetic is
the core's (:mod:`customvideox_core.clock`).
"""

from __future__ import annotations

import logging

from ..customvideox_core.clock import ClockSpan, PercentToSigma, schedule_spans, step_span
from ..customvideox_core.tab import TABSchedule

logger = logging.getLogger(__name__)

CLOCK_KEY = "cvx_percent_to_sigma"
"""``transformer_options`` key: the sampling model's ``model_sampling.percent_to_sigma``."""
OUTSIDE_SAMPLING = ClockSpan.point(0.5)
"""The clock of a model call outside a sampler (no sigma, or no model sampling recorded): the middle."""


def clock_of(model) -> PercentToSigma:
    """``percent_to_sigma`` of a ``BaseModel`` (as sampling sees it) or of a ``ModelPatcher``."""
    if hasattr(model, "get_model_object"):
        return model.get_model_object("model_sampling").percent_to_sigma
    return model.model_sampling.percent_to_sigma


def call_span(transformer_options: dict) -> ClockSpan:
    """The stretch of the model's time this model call's step covers (see :func:`clock.step_span`)."""
    sigmas = transformer_options.get("sigmas")
    percent_to_sigma = transformer_options.get(CLOCK_KEY)
    if sigmas is None or percent_to_sigma is None:
        return OUTSIDE_SAMPLING
    return step_span(float(sigmas.reshape(-1)[0]), transformer_options.get("sample_sigmas"), percent_to_sigma)


def warn_if_bias_is_idle(guider, sigmas) -> None:
    """Log a warning when a non-zero TAB on ``guider``'s model gives no bias at any step of ``sigmas``
    (its window misses every step: a denoise that starts after it, a split sampler outside it)."""
    options = getattr(guider, "model_options", {}).get("transformer_options", {})
    parts = [part for value in options.values() for part in getattr(value, "sources", (value,))]
    tabs = [getattr(part, "tab", None) for part in parts]
    tabs = [tab for tab in tabs if isinstance(tab, TABSchedule) and not tab.is_zero]
    if not tabs or sigmas is None or len(sigmas) < 2:
        return
    spans = schedule_spans(sigmas, clock_of(guider.model_patcher))
    for tab in tabs:
        if all(tab.mean_over(span) == 0.0 for span in spans):
            logger.warning(
                "CustomVideoX: the time-aware bias (window %.2f-%.2f of the model's time) is 0 at every step "
                "of this sampling (its steps cover %.2f-%.2f), so TAB and ERAE do nothing. Widen the TAB "
                "window or sample the part of the schedule it covers.",
                tab.start,
                tab.end,
                spans[0].start,
                spans[-1].end,
            )
