"""Which pass sees the reference: the guider's names for its conditionings, per batch row of a model call.

An ``OUTER_SAMPLE`` wrapper (:class:`GuiderKeys`) tags the guider's per-sampling copies of its
conditionings with the guider's own names for them (``positive``, ``negative``, DualCFG's ``middle``), and
a ``CALC_COND_BATCH`` wrapper (:class:`ConditioningRoles`) turns that, for every conditioning the guider
evaluates, into whether it sees the reference and whether its prompt holds the entity words
(:func:`conditioning_role`); :func:`row_roles` spreads the roles over a model call's batch rows. So every
guider works: CFG, ``DualCFGGuider``, Phantom's three-pass guidance. :class:`GuiderKeys` also puts the
pack's ``DIFFUSION_MODEL`` wrappers innermost for the sampling (:func:`move_innermost`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import comfy.patcher_extension

from .clock import CLOCK_KEY, clock_of, warn_if_bias_is_idle
from .wrapper_args import REFERENCE_WRAPPER_KEY, STANDIN_WRAPPER_KEY

ROLES_KEY = "cvx_conditioning_roles"
GUIDER_KEY = "cvx_guider_key"
"""Set on the guider's per-sampling copies of its conditioning entries: the guider's name for them."""
SEES_REFERENCE_KEY = "cvx_sees_reference"
"""Conditioning key (bool) that says whether a conditioning sees the reference (see
:func:`conditioning_role`); set by ``CustomVideoXReferenceConditioning`` and by Sample's guidance."""


@dataclass(frozen=True)
class ConditioningRole:
    """What one conditioning of the guider is, for the reference.

    ``sees_reference``: ``True``/``False`` when the conditioning says so (``SEES_REFERENCE_KEY``),
    ``None`` to follow the patch's default. ``positive``: the guider holds it as ``positive`` (its prompt
    holds the entity words).
    """

    sees_reference: bool | None
    positive: bool

    def sees(self, *, uncond_sees_reference: bool) -> bool:
        """Whether this pass sees the patch's own reference: the conditioning's mark, else positive passes
        do and negative ones follow ``uncond_sees_reference``."""
        if self.sees_reference is not None:
            return self.sees_reference
        return self.positive or uncond_sees_reference


def conditioning_role(entries: Sequence[dict] | None) -> ConditioningRole | None:
    """The :class:`ConditioningRole` of one conditioning (the list of its entries, as the guider holds
    it after ComfyUI's ``encode_model_conds``), or ``None`` for an absent one.

    Raises when the entries of one conditioning disagree on ``SEES_REFERENCE_KEY``.
    """
    if not entries:
        return None
    marks = {entry[SEES_REFERENCE_KEY] for entry in entries if entry.get(SEES_REFERENCE_KEY) is not None}
    if len(marks) > 1:
        raise ValueError(
            "one conditioning combines entries that see the reference with entries that do not; mark the "
            "whole conditioning with one CustomVideoX Reference Conditioning node"
        )
    positive = entries[0].get(GUIDER_KEY, "positive") == "positive"
    return ConditioningRole(sees_reference=bool(marks.pop()) if marks else None, positive=positive)


INNERMOST_KEYS = (REFERENCE_WRAPPER_KEY, STANDIN_WRAPPER_KEY)
"""Keys of the pack's ``DIFFUSION_MODEL`` wrappers that run innermost, next to the DiT (the reference
wrapper's and Stand-In's, ``nodes/standin_patch.WRAPPER_KEY``): what they do inside a model call (frames
appended, rows split into two DiT calls) is then invisible to every other wrapper, wherever the user put
it in the graph. Concat-ID-Wan's wrapper is not one of them: it runs outside the reference wrapper."""


def move_innermost(wrappers: dict, keys: Sequence[str] = INNERMOST_KEYS) -> None:
    """Reorder ``wrappers`` (one sampling's ``{key: [wrapper, ...]}`` of one wrapper type, outermost
    first) so that ``keys`` come last, in their order; the other keys keep theirs."""
    for key in keys:
        if key in wrappers:
            wrappers[key] = wrappers.pop(key)


class GuiderKeys:
    """``OUTER_SAMPLE`` wrapper: tag the guider's per-sampling copies of its conditioning entries with
    the guider's name for them (the user's conditionings are not touched), and put the pack's
    ``DIFFUSION_MODEL`` wrappers innermost in the sampling's copy of the wrappers (:data:`INNERMOST_KEYS`),
    so that a cache such as EasyCache placed after Apply sees one plain model call per step."""

    def __call__(self, executor, *args, **kwargs):
        guider = executor.class_obj
        for key, entries in (getattr(guider, "conds", None) or {}).items():
            for entry in entries or ():
                entry[GUIDER_KEY] = key
        warn_if_bias_is_idle(guider, args[3] if len(args) > 3 else kwargs.get("sigmas"))
        options = getattr(guider, "model_options", None) or {}
        wrappers = options.get("transformer_options", {}).get("wrappers", {})
        diffusion = wrappers.get(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL)
        if diffusion:
            move_innermost(diffusion)
        return executor(*args, **kwargs)


class ConditioningRoles:
    """``CALC_COND_BATCH`` wrapper: record each evaluated conditioning's role for the model calls, and the
    model's clock (:data:`.clock.CLOCK_KEY`)."""

    def __call__(self, executor, model, conds, x_in, timestep, model_options):
        roles = tuple(conditioning_role(entries) for entries in conds)
        options = dict(model_options)
        options["transformer_options"] = {
            **model_options.get("transformer_options", {}),
            ROLES_KEY: roles,
            CLOCK_KEY: clock_of(model),
        }
        return executor(model, conds, x_in, timestep, options)


def install_conditioning_roles(model) -> None:
    """Put the two wrappers that give every model call its rows' :class:`ConditioningRole` on ``model``,
    once: every pack node that installs them (Apply, Sample, Load, Apply Stand-In) uses the one key
    (the reference wrapper's), so a model through several of them runs one copy of each."""
    for wrapper_type, wrapper in (
        (comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, GuiderKeys()),
        (comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, ConditioningRoles()),
    ):
        model.remove_wrappers_with_key(wrapper_type, REFERENCE_WRAPPER_KEY)
        model.add_wrapper_with_key(wrapper_type, REFERENCE_WRAPPER_KEY, wrapper)


def row_roles(transformer_options: dict, batch: int) -> list[ConditioningRole]:
    """One role per batch row. Rows come in equal chunks, one per entry of ``cond_or_uncond`` (the index
    of the conditioning in the guider's list). Without recorded roles (a model call outside a guider)
    chunk 0 counts as positive and the others as negative, as in ComfyUI's CFG."""
    chunks = transformer_options.get("cond_or_uncond") or [0]
    if batch % len(chunks):
        raise ValueError(
            f"the model call has {batch} rows for {len(chunks)} conditionings; expected a multiple"
        )
    roles = transformer_options.get(ROLES_KEY)
    per_chunk = batch // len(chunks)
    found = []
    for index in chunks:
        role = roles[index] if roles is not None and index < len(roles) else None
        if role is None:
            role = ConditioningRole(sees_reference=None, positive=index == 0)
        found.extend([role] * per_chunk)
    return found
