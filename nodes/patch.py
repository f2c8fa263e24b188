"""The CustomVideoX MODEL patch: ComfyUI extension points only, no monkeypatching.

``apply_reference_patch`` clones the ModelPatcher and installs, on the clone:

- the conditioning-role wrappers of :mod:`.conditioning_roles` (an ``OUTER_SAMPLE`` and a
  ``CALC_COND_BATCH`` wrapper), which tell every model call whether each of its rows sees the reference
  and holds the entity words, so every guider works (CFG, ``DualCFGGuider``, Phantom's three-pass
  guidance);
- a ``WrappersMP.DIFFUSION_MODEL`` wrapper (:class:`ReferenceWrapper`, the pack's only one: Apply
  Stand-In installs it too) that, for every model call, gathers the call's table of reference sources
  (``customvideox_core.reference_sources``): the own reference frames of every Apply node
  (:func:`chain_patches`), appended *after* the video frames on the time axis and stripped from the
  prediction again; or — when the call already carries the host's own reference frames (Wan's
  ``time_dim_concat`` from core's ``WanPhantomSubjectToVideo``) and the patch has no reference — those
  frames, left where the host puts them and only biased; or the frames a core node put in front of the
  video (VACE's reference, ``ReferencePatch.prefix_frames`` of them); and Stand-In's cached branch
  (``nodes/standin_patch.StandInPatch.source_for``). Appending keeps every video token at
  its own position: under CogVideoX-5B/1.5's and Wan's RoPE the reference frames get the temporal
  indices ``T .. T+R-1``; under CogVideoX-2B's 3D sin-cos table the rows of frames ``T ..``.
  Where each kind of frames sits in the sequence is :mod:`.sequence_geometry`'s; what one Apply stores,
  and how Apply nodes stack, :mod:`.reference_patch`'s;
- for the duration of that call, ``transformer_options["optimized_attention_override"]`` set to the
  one override of :mod:`.attention_override`, which runs every self-attention over the sources.

The pack's ``DIFFUSION_MODEL`` wrappers run innermost (:func:`move_innermost`, at every sampling's start),
so what they do inside a model call is invisible to every other wrapper, wherever it sits in the graph.

When the rows of a call disagree on seeing the pack's own reference (cfg with the negative blind), the
wrapper runs them as two calls (:class:`~.row_split.RowSplit`): the seeing rows as above, the others as the plain
model, so they carry no reference token; where that cannot be done safely the call stays one call and
the blind rows drop the reference keys in attention.

What differs between host families comes from the core's host-spec table
(:mod:`customvideox_core.host_specs`), never from ``if family ==`` here.
State rides on the clone under ``cvx_``-prefixed keys of ``model_options["transformer_options"]``;
the per-call state lives only in the copy of ``transformer_options`` handed to the DiT.
"""

from __future__ import annotations

import comfy.ldm.common_dit
import comfy.patcher_extension
import torch
from torch import Tensor

from ..customvideox_core.clock import ClockSpan
from ..customvideox_core.erae import ERAEConfig
from ..customvideox_core.host_signature import HostSignature, signature_of_dit
from ..customvideox_core.host_specs import HostSpec
from ..customvideox_core.layout import TokenLayout
from ..customvideox_core.reference_attention import plan_source
from ..customvideox_core.reference_sources import Source, plan_sources
from ..customvideox_core.tab import TABSchedule
from .attention_override import RUNTIME_KEY, CallRuntime, reference_attention_override
from .clock import call_span
from .conditioning_roles import (
    GUIDER_KEY,
    INNERMOST_KEYS,
    ROLES_KEY,
    SEES_REFERENCE_KEY,
    ConditioningRole,
    ConditioningRoles,
    GuiderKeys,
    conditioning_role,
    install_conditioning_roles,
    move_innermost,
    row_roles,
)
from .host_model import diffusion_model_of, host_signature
from .reference_patch import ReferencePatch, chain_patches
from .row_split import RowSplit
from .sequence_geometry import SequenceGeometry
from .types import ReferenceLatents
from .wrapper_args import (
    CONCAT_ID_CALL_KEY,
    OVERRIDE_KEY,
    REFERENCE_WRAPPER_KEY,
    SETTINGS_KEY,
    STANDIN_SETTINGS_KEY,
    options_of,
    with_options,
)

WRAPPER_KEY = REFERENCE_WRAPPER_KEY


def install_machinery(model, host: HostSignature) -> None:
    """Put the wrappers on ``model`` (a clone); idempotent."""
    install_conditioning_roles(model)
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
    prefix_frames: int = 0,
):
    """Clone ``model`` and make it generate with ``reference`` (the input model is left untouched).

    ``reference=None`` biases the reference frames the conditioning carries: in the host's own input
    (hosts whose spec has a ``reference_input``), or the ``prefix_frames`` frames in front of the video
    on a prefix route (VACE); other hosts refuse it.
    """
    host = host_signature(model)
    spec = host.spec
    spec.check_route(
        diffusion_model_of(model), own_reference=reference is not None, prefix_frames=prefix_frames
    )
    if reference is None and spec.reference_input is None:
        raise ValueError(
            f"connect a reference (CustomVideoX ReferenceEncode): {host.variant} has no reference input of "
            "its own for CustomVideoX to bias"
        )
    model_latents = None if reference is None else model.model.process_latent_in(reference.latents.clone())
    patch = ReferencePatch(
        model_latents=model_latents,
        tab=tab,
        erae=erae,
        uncond_sees_reference=uncond_sees_reference,
        masks=masks if reference is None else reference.masks,
        prefix_frames=prefix_frames,
    )
    patch = chain_patches(model.model_options.get("transformer_options", {}).get(SETTINGS_KEY), patch)
    patched = model.clone()
    install_machinery(patched, host)
    patched.model_options["transformer_options"][SETTINGS_KEY] = patch
    return patched


progress_of = call_span
"""The stretch of the model's time this model call's step covers (:func:`.clock.call_span`)."""


class ReferenceWrapper:
    """``DIFFUSION_MODEL`` wrapper: the call's table of reference sources (appended frames, the host's
    frames, Stand-In's cached branch), one plan, the one attention override; strips appended frames.

    Installed under the pack's key by Apply/Sample/Load and under Stand-In's by Apply Stand-In; whichever
    runs first plans every source of the call, an inner one passes the call on. ``host`` None: read from
    the DiT at the first call.
    """

    def __init__(self, host: HostSignature | None = None) -> None:
        self.host = host

    @property
    def spec(self) -> HostSpec:
        return self.host.spec

    @property
    def geometry(self) -> SequenceGeometry:
        """Where the call's reference frames sit in the host's sequence."""
        return SequenceGeometry(self.host)

    def __call__(self, executor, *args, **kwargs):
        if self.host is None:
            self.host = signature_of_dit(executor.class_obj)
        spec, geometry = self.spec, self.geometry
        options_index = spec.transformer_options_index
        transformer_options = options_of(args, kwargs, options_index)
        patch: ReferencePatch | None = transformer_options.get(SETTINGS_KEY)
        cached = transformer_options.get(STANDIN_SETTINGS_KEY)
        if RUNTIME_KEY in transformer_options or (patch is None and cached is None):
            return executor(*args, **kwargs)

        x = args[0]
        roles = row_roles(transformer_options, x.shape[0])
        progress = progress_of(transformer_options)
        host_frames = spec.reference_input.value_of(args, kwargs) if spec.reference_input else None
        own_reference = patch is not None and patch.model_latents is not None
        if host_frames is not None and own_reference:
            raise ValueError(
                f"this conditioning already carries {host_frames.shape[2]} reference frame(s) in "
                f"{spec.reference_input.name} (from WanPhantomSubjectToVideo or a similar core node) and "
                "CustomVideoX has its own reference connected: use one of them. Disconnect the reference from "
                "CustomVideoX Apply to bias the conditioning's frames, or give the core node no images."
            )
        if any(role.positive for role in roles):
            context_length = args[spec.context_index].shape[1]
            for part in (*(patch.sources if patch is not None else ()), cached):
                if part is not None and part.erae is not None:
                    part.erae.check_text_length(context_length)
        dit = executor.class_obj
        new_args = list(args)
        sources: list[Source] = []
        layout = None
        if own_reference:
            sees = [
                [role.sees(uncond_sees_reference=part.uncond_sees_reference) for role in roles]
                for part in patch.sources
            ]
            sees_any = [any(flags) for flags in zip(*sees, strict=True)]
            cached_seen = cached is not None and any(
                role.sees(uncond_sees_reference=cached.uncond_sees_reference) for role in roles
            )
            if not any(sees_any) and not cached_seen and CONCAT_ID_CALL_KEY not in transformer_options:
                # A call none of whose rows sees a reference (ComfyUI runs cond and uncond apart when
                # memory is short): the plain model, at its cost, as RowSplit's blind half.
                plain = {
                    name: value
                    for name, value in transformer_options.items()
                    if name not in (SETTINGS_KEY, STANDIN_SETTINGS_KEY)
                }
                plain_args, plain_kwargs = with_options(args, kwargs, options_index, plain)
                return executor(*plain_args, **plain_kwargs)
            split = RowSplit.of(sees_any, args, kwargs, transformer_options, options_index)
            if split is not None:
                return split.run(executor, self)
            video, reference, layout = geometry.join(dit, x, args[spec.context_index], patch.all_latents())
            new_args[0] = torch.cat([video, reference], dim=2)
            sources = self._own_sources(x, layout, patch, sees, roles, progress)
        elif patch is not None and patch.prefix_frames:
            if host_frames is not None:
                raise ValueError(
                    f"this conditioning carries reference frames both in front of the video "
                    f"({patch.prefix_frames}, VACE) and in {spec.reference_input.name} (Phantom's): "
                    "CustomVideoX biases one of them; give the reference images to one core node"
                )
            layout = geometry.prefix_layout(x, patch.prefix_frames)
            # Every row carries the prefix (WanVaceToVideo puts it on the positive and the negative), so
            # every row is biased, as every Phantom row that carries its frames is.
            sources = [
                self._carried_source(
                    x, layout, patch, roles, progress, "reference frames in front of the video"
                )
            ]
        elif patch is not None and host_frames is not None:
            layout = geometry.host_layout(x, args[spec.context_index], host_frames)
            # Rows whose frames are all zero (Phantom's "no image" negative) are no reference to strengthen.
            # Decided on the frames' device: nothing is read back.
            biased = host_frames.flatten(1).abs().amax(dim=1) > 0
            sources = [
                self._carried_source(
                    x, layout, patch, roles, progress, "conditioning's reference frames", biased
                )
            ]
        elif patch is not None and any(role.positive for role in roles):
            raise ValueError(
                "CustomVideoX Apply has no reference connected and the positive conditioning carries "
                f"no reference frames ({spec.reference_input.name}): connect a CustomVideoX "
                "ReferenceEncode to Apply, or sample with the positive of WanPhantomSubjectToVideo"
            )
        references = {}
        frame_tokens = layout.frame_tokens if layout is not None else None
        if cached is not None:
            source, kv, grid_tokens = cached.source_for(dit, x, roles, progress)
            sources.append(source)
            references[source.name] = kv
            frame_tokens = frame_tokens or grid_tokens
        if not sources:
            return executor(*args, **kwargs)
        call_options = dict(transformer_options)
        call_options[RUNTIME_KEY] = CallRuntime(
            entity_source=spec.entity_source,
            plan=plan_sources(sources, x.shape[0], x.device),
            layout=layout,
            frame_tokens=frame_tokens,
            previous_override=transformer_options.get(OVERRIDE_KEY),
            cached=references,
        )
        call_options[OVERRIDE_KEY] = reference_attention_override
        new_args, kwargs = with_options(tuple(new_args), kwargs, options_index, call_options)
        out = executor(*new_args, **kwargs)
        if layout is None:
            return out
        t, h, w = x.shape[-3:]
        return out[:, :, :t, :h, :w]

    def _carried_source(
        self,
        x: Tensor,
        layout: TokenLayout,
        patch: ReferencePatch,
        roles: list[ConditioningRole],
        progress: ClockSpan,
        name: str,
        row_biased: Tensor | None = None,
    ) -> Source:
        """The reference frames the conditioning carries, as one in-sequence source: the host's own method,
        every row attends to them (they are part of its sequence); the ``row_biased`` rows (``[B]`` bool on
        the device; default every row) get the bias."""
        return plan_source(
            name,
            layout,
            tab=patch.tab,
            progress=progress,
            row_sees_reference=[True] * x.shape[0],
            row_has_entities=[role.positive for role in roles],
            reference_weights=self.geometry.weights(x, layout, patch.masks),
            erae=patch.erae,
            row_biased=row_biased,
        )

    def _own_sources(
        self,
        x: Tensor,
        layout: TokenLayout,
        patch: ReferencePatch,
        sees: list[list[bool]],
        roles: list[ConditioningRole],
        progress: ClockSpan,
    ) -> list[Source]:
        """One in-sequence source per Apply node, each over its own span of the appended frames."""
        sources = []
        for index, (part, flags) in enumerate(zip(patch.sources, sees, strict=True)):
            frames = int(part.model_latents.shape[2])
            sub_layout = TokenLayout(
                text=layout.text,
                video=layout.video,
                reference=frames * layout.frame_tokens,
                frame_tokens=layout.frame_tokens,
            )
            source = plan_source(
                f"reference {index + 1}",
                sub_layout,
                tab=part.tab,
                progress=progress,
                row_sees_reference=flags,
                row_has_entities=[role.positive for role in roles],
                reference_weights=self.geometry.weights(x, sub_layout, part.masks),
                erae=part.erae,
            )
            sources.append(source)
        return sources


__all__ = [
    "ROLES_KEY",
    "SEES_REFERENCE_KEY",
    "SETTINGS_KEY",
    "WRAPPER_KEY",
    "ConditioningRole",
    "ConditioningRoles",
    "GUIDER_KEY",
    "GuiderKeys",
    "INNERMOST_KEYS",
    "ReferencePatch",
    "ReferenceWrapper",
    "RowSplit",
    "apply_reference_patch",
    "chain_patches",
    "conditioning_role",
    "diffusion_model_of",
    "host_signature",
    "install_conditioning_roles",
    "install_machinery",
    "move_innermost",
    "progress_of",
    "row_roles",
    "reference_attention_override",
]
