"""The CustomVideoX MODEL patch: ComfyUI extension points only, no monkeypatching.

``apply_reference_patch`` clones the ModelPatcher and installs, on the clone:

- a ``WrappersMP.OUTER_SAMPLE`` wrapper (:class:`GuiderKeys`) that writes, on the guider's per-sampling
  copies of its conditionings, which of the guider's conditionings each is (``positive``,
  ``negative``, DualCFG's ``middle``), and a ``WrappersMP.CALC_COND_BATCH`` wrapper
  (:class:`ConditioningRoles`) that turns that, for every conditioning the guider evaluates, into
  whether it sees the reference and whether its prompt holds the entity words
  (:func:`conditioning_role`), so every guider works: CFG, ``DualCFGGuider``, Phantom's three-pass
  guidance;
- a ``WrappersMP.DIFFUSION_MODEL`` wrapper (:class:`ReferenceWrapper`) that, for every model call,
  either appends the patch's own reference latent frames *after* the video frames on the time axis and
  strips their prediction again, or — when the call already carries the host's own reference frames
  (Wan's ``time_dim_concat`` from core's ``WanPhantomSubjectToVideo``) and the patch has no reference —
  leaves the frames where the host puts them and only biases them. Appending keeps every video token at
  its own position: under CogVideoX-5B/1.5's and Wan's RoPE the reference frames get the temporal
  indices ``T .. T+R-1``; under CogVideoX-2B's 3D sin-cos table the rows of frames ``T ..``.
  CogVideoX-1.5 (temporal patch 2) first pads the video exactly as the model would and repeats each
  reference frame so that it fills one temporal patch;
- for the duration of that call, ``transformer_options["optimized_attention_override"]`` set to the
  override of :mod:`.attention_override`, which adds the TAB/ERAE bias inside every self-attention.

When the rows of a call disagree on seeing the pack's own reference (cfg with the negative blind), the
wrapper runs them as two calls (:class:`RowSplit`): the seeing rows as above, the others as the plain
model, so they carry no reference token; where that cannot be done safely the call stays one call and
the blind rows drop the reference keys in attention.

What differs between host families comes from the core's host-spec table
(:mod:`customvideox_core.host_specs`), never from ``if family ==`` here.
State rides on the clone under ``cvx_``-prefixed keys of ``model_options["transformer_options"]``;
the per-call state lives only in the copy of ``transformer_options`` handed to the DiT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import comfy.ldm.common_dit
import comfy.patcher_extension
import torch
from torch import Tensor

from ..customvideox_core.erae import ERAEConfig, reference_token_weights
from ..customvideox_core.host_signature import HostSignature
from ..customvideox_core.host_specs import HostSpec
from ..customvideox_core.layout import TokenLayout
from ..customvideox_core.reference import check_pixel_size
from ..customvideox_core.reference_attention import plan_step
from ..customvideox_core.tab import TABSchedule
from .attention_override import RUNTIME_KEY, CallRuntime, reference_attention_override
from .clock import CLOCK_KEY, call_span, clock_of, warn_if_bias_is_idle
from .host_model import diffusion_model_of, host_signature
from .types import ReferenceLatents
from .wrapper_args import CONCAT_ID_CALL_KEY, OPTIONS_KEYWORD, OVERRIDE_KEY, options_of, with_options

WRAPPER_KEY = "customvideox"
SETTINGS_KEY = "cvx_settings"
ROLES_KEY = "cvx_conditioning_roles"
GUIDER_KEY = "cvx_guider_key"
"""Set on the guider's per-sampling copies of its conditioning entries: the guider's name for them."""
SEES_REFERENCE_KEY = "cvx_sees_reference"
"""Conditioning key (bool) that says whether a conditioning sees the reference (see
:func:`conditioning_role`); set by ``CustomVideoXReferenceConditioning`` and by Sample's guidance."""


@dataclass(frozen=True, eq=False)
class ReferencePatch:
    """Everything one patched MODEL needs.

    - ``model_latents``: ``[1, C, R, h, w]`` the patch's own reference (ReferenceEncode) in the model's
      latent space, or ``None`` to bias the reference frames the conditioning already carries (the
      host's reference input, e.g. Phantom's).
    - ``masks``: ``[1 or R, H, W]`` subject masks of the reference frames — the own reference's, or the
      host's frames' (compose mode) — or ``None`` for the whole frame.
    """

    model_latents: Tensor | None
    tab: TABSchedule
    erae: ERAEConfig | None
    uncond_sees_reference: bool
    masks: Tensor | None = None


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


INNERMOST_KEYS = (WRAPPER_KEY, "customvideox_standin")
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


def install_conditioning_roles(model, key: str) -> None:
    """Put the two wrappers that give every model call its rows' :class:`ConditioningRole` on ``model``."""
    for wrapper_type, wrapper in (
        (comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, GuiderKeys()),
        (comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, ConditioningRoles()),
    ):
        model.remove_wrappers_with_key(wrapper_type, key)
        model.add_wrapper_with_key(wrapper_type, key, wrapper)


def install_machinery(model, host: HostSignature) -> None:
    """Put the wrappers on ``model`` (a clone); idempotent."""
    install_conditioning_roles(model, WRAPPER_KEY)
    wrapper_type = comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL
    model.remove_wrappers_with_key(wrapper_type, WRAPPER_KEY)
    model.add_wrapper_with_key(wrapper_type, WRAPPER_KEY, ReferenceWrapper(host))
    model.model_options.setdefault("transformer_options", {})


def apply_reference_patch(
    model,
    reference: ReferenceLatents | None,
    *,
    tab: TABSchedule,
    erae: ERAEConfig | None,
    uncond_sees_reference: bool,
    masks: Tensor | None = None,
):
    """Clone ``model`` and make it generate with ``reference`` (the input model is left untouched).

    ``reference=None`` biases the reference frames the conditioning carries in the host's own input
    (hosts whose spec has a ``reference_input``); other hosts refuse it.
    """
    host = host_signature(model)
    spec = host.spec
    spec.check_route(diffusion_model_of(model))
    if reference is None and spec.reference_input is None:
        raise ValueError(
            f"connect a reference (CustomVideoX ReferenceEncode): {host.variant} has no reference input of "
            "its own for CustomVideoX to bias"
        )
    model_latents = None if reference is None else model.model.process_latent_in(reference.latents.clone())
    patched = model.clone()
    install_machinery(patched, host)
    patched.model_options["transformer_options"][SETTINGS_KEY] = ReferencePatch(
        model_latents=model_latents,
        tab=tab,
        erae=erae,
        uncond_sees_reference=uncond_sees_reference,
        masks=masks if reference is None else reference.masks,
    )
    return patched


progress_of = call_span
"""The stretch of the model's time this model call's step covers (:func:`.clock.call_span`)."""


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


_PER_CHUNK_OPTIONS = ("cond_or_uncond", "uuids")
"""``transformer_options`` lists with one entry per conditioning chunk of the batch (ComfyUI's
``calc_cond_batch``)."""
_PER_ROW_OPTIONS = ("sigmas",)
"""``transformer_options`` tensors with one entry per batch row (``calc_cond_batch`` sets ``sigmas`` to the
call's timestep). Nothing else in the options is cut: ``sample_sigmas``, for one, is the whole schedule."""


def _rows_of(value, rows: Tensor, batch: int):
    """``value`` restricted to ``rows`` when it is a tensor with one entry per batch row, else as it is."""
    if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == batch:
        return value.index_select(0, rows.to(value.device))
    return value


@dataclass(frozen=True, eq=False)
class RowSplit:
    """A model call whose rows disagree on seeing the pack's own reference, run as two calls: the rows
    that see it with the reference frames appended, the others as the plain model — so they pay for no
    reference token in any layer (the base model's cost), not only in attention.

    Made only when every argument is a tensor or a plain value (a container such as a ControlNet's
    ``control`` dict could hold per-row tensors this cannot see), and not under Concat-ID-Wan's wrapper
    (it runs outside this one and has already sized its state for the whole batch): otherwise the call
    stays one call, in which the blind rows drop the reference keys in attention (the same result, at a
    higher cost).
    """

    seeing: Tensor
    blind: Tensor
    args: tuple
    kwargs: dict
    options: dict
    options_index: int

    @classmethod
    def of(
        cls, sees: Sequence[bool], args: tuple, kwargs: dict, options: dict, options_index: int
    ) -> RowSplit | None:
        if all(sees) or not any(sees) or CONCAT_ID_CALL_KEY in options:
            return None
        plain = (Tensor, int, float, str, bool, type(None))
        others = [a for i, a in enumerate(args) if i != options_index]
        others += [v for k, v in kwargs.items() if k != OPTIONS_KEYWORD]
        if not all(isinstance(value, plain) for value in others):
            return None
        seeing = torch.tensor([row for row, flag in enumerate(sees) if flag])
        blind = torch.tensor([row for row, flag in enumerate(sees) if not flag])
        return cls(seeing, blind, tuple(args), dict(kwargs), options, options_index)

    def _call_args(self, rows: Tensor, *, patched: bool) -> tuple[tuple, dict]:
        """The call's arguments for ``rows`` (whole conditioning chunks, as roles are per chunk); without
        the reference patch unless ``patched``."""
        batch = self.args[0].shape[0]
        chunks = self.options.get("cond_or_uncond") or [0]
        per_chunk = batch // len(chunks)
        kept_chunks = sorted({int(row) // per_chunk for row in rows})
        options = {name: value for name, value in self.options.items() if patched or name != SETTINGS_KEY}
        for name in _PER_ROW_OPTIONS:
            if name in options:
                options[name] = _rows_of(options[name], rows, batch)
        for name in _PER_CHUNK_OPTIONS:
            listed = self.options.get(name)
            if isinstance(listed, list) and len(listed) == len(chunks):
                options[name] = [listed[chunk] for chunk in kept_chunks]
        args = tuple(_rows_of(value, rows, batch) for value in self.args)
        kwargs = {name: _rows_of(value, rows, batch) for name, value in self.kwargs.items()}
        return with_options(args, kwargs, self.options_index, options)

    def run(self, executor, wrapper: ReferenceWrapper) -> Tensor:
        """Both calls, their rows put back in the batch's order. ``[B, C, T, H, W]``."""
        args, kwargs = self._call_args(self.seeing, patched=True)
        seen = wrapper(executor, *args, **kwargs)
        args, kwargs = self._call_args(self.blind, patched=False)
        unseen = executor(*args, **kwargs)
        out = seen.new_empty((self.args[0].shape[0], *seen.shape[1:]))
        out[self.seeing.to(out.device)] = seen
        out[self.blind.to(out.device)] = unseen
        return out


class ReferenceWrapper:
    """``DIFFUSION_MODEL`` wrapper: join the reference frames, plan the bias, run, strip the frames."""

    def __init__(self, host: HostSignature) -> None:
        self.host = host

    @property
    def spec(self) -> HostSpec:
        return self.host.spec

    @property
    def patch_sizes(self) -> tuple[int, int]:
        """``(temporal, spatial)`` patch sizes of the host (its signature's)."""
        return self.host.patch_size_t or 1, self.host.patch_size

    def __call__(self, executor, *args, **kwargs):
        spec = self.spec
        options_index = spec.transformer_options_index
        transformer_options = options_of(args, kwargs, options_index)
        patch = transformer_options.get(SETTINGS_KEY)
        if patch is None:
            return executor(*args, **kwargs)

        x = args[0]
        roles = row_roles(transformer_options, x.shape[0])
        host_frames = spec.reference_input.value_of(args, kwargs) if spec.reference_input else None
        own_reference = patch.model_latents is not None
        if host_frames is not None and own_reference:
            raise ValueError(
                f"this conditioning already carries {host_frames.shape[2]} reference frame(s) in "
                f"{spec.reference_input.name} (from WanPhantomSubjectToVideo or a similar core node) and "
                "CustomVideoX has its own reference connected: use one of them. Disconnect the reference from "
                "CustomVideoX Apply to bias the conditioning's frames, or give the core node no images."
            )
        if patch.erae is not None and any(role.positive for role in roles):
            patch.erae.check_text_length(args[spec.context_index].shape[1])
        dit = executor.class_obj
        new_args = list(args)
        masks = patch.masks
        if own_reference:
            sees = [role.sees(uncond_sees_reference=patch.uncond_sees_reference) for role in roles]
            if not any(sees) and CONCAT_ID_CALL_KEY not in transformer_options:
                # A call none of whose rows sees the reference (ComfyUI runs cond and uncond apart when
                # memory is short): the plain model, at its cost, as RowSplit's blind half.
                plain = {name: value for name, value in transformer_options.items() if name != SETTINGS_KEY}
                plain_args, plain_kwargs = with_options(args, kwargs, options_index, plain)
                return executor(*plain_args, **plain_kwargs)
            split = RowSplit.of(sees, args, kwargs, transformer_options, options_index)
            if split is not None:
                return split.run(executor, self)
            video, reference, layout = self._join(spec, dit, x, args[spec.context_index], patch)
            biased = None
            new_args[0] = torch.cat([video, reference], dim=2)
        else:
            if host_frames is None:
                if any(role.positive for role in roles):
                    raise ValueError(
                        "CustomVideoX Apply has no reference connected and the positive conditioning carries "
                        f"no reference frames ({spec.reference_input.name}): connect a CustomVideoX "
                        "ReferenceEncode to Apply, or sample with the positive of WanPhantomSubjectToVideo"
                    )
                return executor(*args, **kwargs)
            layout = self._host_layout(spec, x, args[spec.context_index], host_frames)
            # The host's own method: every row that carries the frames attends to them; rows whose frames
            # are all zero (Phantom's "no image" negative) are no reference to strengthen. Decided on the
            # frames' device: nothing is read back.
            sees = [True] * x.shape[0]
            biased = host_frames.flatten(1).abs().amax(dim=1) > 0
        step = plan_step(
            layout,
            tab=patch.tab,
            progress=progress_of(transformer_options),
            row_sees_reference=sees,
            row_has_entities=[role.positive for role in roles],
            reference_weights=self._weights(x, layout, masks),
            erae=patch.erae,
            row_biased=biased,
        )
        call_options = dict(transformer_options)
        call_options[RUNTIME_KEY] = CallRuntime(
            entity_source=spec.entity_source,
            step=step,
            previous_override=transformer_options.get(OVERRIDE_KEY),
        )
        call_options[OVERRIDE_KEY] = reference_attention_override
        new_args, kwargs = with_options(tuple(new_args), kwargs, options_index, call_options)
        out = executor(*new_args, **kwargs)
        t, h, w = x.shape[-3:]
        return out[:, :, :t, :h, :w]

    def _weights(self, x: Tensor, layout: TokenLayout, masks: Tensor | None) -> Tensor:
        """Region weights ``[1, reference]`` of the reference tokens (all ones without a mask)."""
        if masks is None:
            return torch.ones(1, layout.reference, device=x.device)
        frames = layout.reference_frames
        if masks.shape[0] not in (1, frames):
            raise ValueError(
                f"{masks.shape[0]} subject masks for {frames} reference frames: give one mask, or one per "
                "reference image"
            )
        weights = reference_token_weights(
            masks.to(x.device).expand(frames, -1, -1),
            latent_size=(x.shape[-2], x.shape[-1]),
            patch_size=self.host.patch_size,
        ).reshape(1, -1)
        if weights.shape[1] != layout.reference:
            raise ValueError(
                f"reference mask pooled to {weights.shape[1]} tokens, expected {layout.reference}"
            )
        return weights

    def _join(
        self, spec: HostSpec, dit, x: Tensor, context: Tensor, patch: ReferencePatch
    ) -> tuple[Tensor, Tensor, TokenLayout]:
        """Pad the video as the DiT would and build the reference frames. x ``[B, C, T, H, W]``."""
        reference = patch.model_latents.to(device=x.device, dtype=x.dtype)
        if reference.shape[1] != x.shape[1] or reference.shape[-2:] != x.shape[-2:]:
            check_pixel_size(x.shape[-1] * 8, x.shape[-2] * 8, what="the video latent's width and height")
            raise ValueError(
                f"the reference latent is {tuple(reference.shape[1:2]) + tuple(reference.shape[-2:])} "
                f"(channels, height, width) but the video latent is "
                f"{tuple(x.shape[1:2]) + tuple(x.shape[-2:])}: encode the reference with the same VAE at "
                f"the video's size ({x.shape[-1] * 8}x{x.shape[-2] * 8} pixels)"
            )
        temporal, spatial = self.patch_sizes
        video = comfy.ldm.common_dit.pad_to_patch_size(x, (temporal, spatial, spatial))
        reference = comfy.ldm.common_dit.pad_to_patch_size(reference, (1, spatial, spatial))
        reference = reference.repeat_interleave(temporal, dim=2).expand(x.shape[0], -1, -1, -1, -1)
        layout = self._layout(spec, context, video, reference)
        if spec.check_reference_fits is not None:
            spec.check_reference_fits(dit, layout.video + layout.reference)
        return video, reference, layout

    def _host_layout(self, spec: HostSpec, x: Tensor, context: Tensor, host_frames: Tensor) -> TokenLayout:
        """The layout the host builds itself when it appends ``host_frames`` after the (padded) video."""
        temporal, spatial = self.patch_sizes
        padded = comfy.ldm.common_dit.pad_to_patch_size(x, (temporal, spatial, spatial))
        padded_reference = comfy.ldm.common_dit.pad_to_patch_size(host_frames, (temporal, spatial, spatial))
        return self._layout(spec, context, padded, padded_reference)

    def _layout(self, spec: HostSpec, context: Tensor, video: Tensor, reference: Tensor) -> TokenLayout:
        """Layout of ``[video | reference]`` frames, both ``[B, C, T, H, W]`` already padded to patches."""
        temporal, spatial = self.patch_sizes
        frame_tokens = (video.shape[-2] // spatial) * (video.shape[-1] // spatial)
        return spec.make_layout(
            context.shape[1], video.shape[2] // temporal, reference.shape[2] // temporal, frame_tokens
        )


__all__ = [
    "ROLES_KEY",
    "SEES_REFERENCE_KEY",
    "SETTINGS_KEY",
    "WRAPPER_KEY",
    "ConditioningRole",
    "ConditioningRoles",
    "GUIDER_KEY",
    "GuiderKeys",
    "ReferencePatch",
    "ReferenceWrapper",
    "apply_reference_patch",
    "conditioning_role",
    "diffusion_model_of",
    "host_signature",
    "install_conditioning_roles",
    "install_machinery",
    "progress_of",
    "row_roles",
    "reference_attention_override",
]
