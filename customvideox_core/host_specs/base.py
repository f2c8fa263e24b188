"""What the pack must know about one host DiT family: the :class:`HostSpec` (one module per family).

Everything that differs between CogVideoX and Wan lives in one spec object, so the rest of the pack
reads a table instead of branching on the family name. Adding a model is one module defining a
``SPEC`` plus its tests, and one line in :mod:`customvideox_core.host_specs`'s table.

The spec is host-free: it names ComfyUI's classes by their qualified names and reads a DiT's sizes
from its attributes, so that ``customvideox_core`` never imports ComfyUI. See docs/ARCHITECTURE.md,
"Host specs".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..layout import TokenLayout

Objective = Literal["v_prediction", "flow_matching"]
EntitySource = Literal["joint_attention", "cross_attention"]


def qualified_class_name(obj: object) -> str:
    """``module.Class`` of ``obj``'s class (how host specs name ComfyUI's classes)."""
    return _class_name(type(obj))


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclass(frozen=True)
class ReferenceInput:
    """A host's own reference-frame input: the forward argument that carries clean latent frames
    appended after the video on the time axis (Wan: ``time_dim_concat``, filled by core's Phantom node).

    ``name``: keyword name; ``index``: its position among the forward's positional arguments.
    """

    name: str
    index: int

    def value_of(self, args: tuple, kwargs: dict) -> Any:
        """This input's value in a call of the wrapped ``_forward`` (positional or keyword), or None."""
        return args[self.index] if len(args) > self.index else kwargs.get(self.name)


PREFIX_FRAMES_INPUT = "reference_prefix_frames"
"""CustomVideoX Apply's input that counts the reference frames a prefix route puts in front of the video."""


@dataclass(frozen=True)
class PrefixRoute:
    """A route whose conditioning puts clean reference frames in front of the video latent (VACE:
    ``WanVaceToVideo``'s ``reference_image``), all of whose blocks attend to them in self-attention.
    CustomVideoX Apply with no reference of its own biases those frames; it needs their number, which
    the user wires from the core node (``frames_from``).

    - ``frames_from``: where the number of prefix frames comes from, for messages.
    - ``own_reference``: why Apply with a reference of its own is refused on the route, and what to do.
    """

    frames_from: str
    own_reference: str


@dataclass(frozen=True)
class HostSpec:
    """One host family (see the module docstring).

    - ``family``: the name stored in adapters' metadata (``"cogvideox"``, ``"wan"``).
    - ``supported``: how the README and error messages name the supported models.
    - ``dit_classes``: qualified names (``module.Class``) of ComfyUI's DiT classes of the family; a DiT
      whose class or any base class has one of these names is of the family.
    - ``describe``: DiT module → the :class:`~customvideox_core.host_signature.HostSignature` fields other than
      ``family`` (sizes, patch sizes, position kind).
    - ``variants``: ``(hidden_size, patch_size_t) → human name`` of the published models.
    - ``attention_targets``: self-attention projections (suffixes after ``blocks.{i}.``) a reference
      LoRA is trained on and loaded into.
    - ``lora_aliases``: ``(pattern, replacement)`` pairs that turn kohya-style flattened module names
      into dotted ones; ``diffusers_module_path``: diffusers' dotted name → ComfyUI's, or ``None``.
    - ``transformer_options_index``: position of ``transformer_options`` among the positional
      arguments the ``DIFFUSION_MODEL`` wrapper receives (the DiT's ``_forward``).
    - ``context_index``: position of the text context among those arguments.
    - ``reference_input``: the host's own reference-frame input, or ``None``.
    - ``make_layout``: ``(text, frames, reference_frames, frame_tokens) → TokenLayout`` of the
      self-attention sequence; ``text_in_self_attention`` says whether the text tokens are part of it
      (CogVideoX's joint attention) or only of a cross-attention (Wan), which is where ERAE reads the
      entity activation (``entity_source``).
    - ``check_reference_fits``: ``(dit, image_tokens) → None``, raises when the DiT cannot take that
      many video + reference tokens (learned position tables), or ``None``.
    - ``objective``: the training objective; ``sets_in_training``: whether training must set
      ComfyUI's ``comfy.model_management.in_training`` (models that read it to take autograd paths).
    - ``reference_layouts``: the reference layouts (:mod:`customvideox_core.reference_layouts`) the pack
      can run and train on this family; ``joint`` everywhere, ``cached`` where the reference branch is
      implemented (Wan).
    - ``branch_dit_classes``: qualified names of the DiT classes — exactly these, not their subclasses —
      that the reference branch (Stand-In, and the ``cached`` layout) runs on; empty where the family
      has no branch. Subclasses that run extra blocks or streams (Wan's VACE, camera, S2V, HuMo,
      Animate) would interleave other attention calls with the self-attention the branch counts on.
    - ``refused_routes``: qualified DiT class names (exactly these) of the family's other routes that
      CustomVideoX Apply refuses, each with the sentence that says why and what to do instead (the
      README's compatibility table lists the same routes); see :meth:`check_route`.
    - ``prefix_routes``: qualified DiT class names (exactly these) whose conditioning puts reference
      frames in front of the video (:class:`PrefixRoute`); Apply with no reference biases them.
    """

    family: str
    supported: str
    dit_classes: tuple[str, ...]
    describe: Callable[[Any], dict[str, Any]]
    variants: Mapping[tuple[int, int | None], str]
    attention_targets: tuple[str, ...]
    lora_aliases: tuple[tuple[re.Pattern[str], str], ...]
    diffusers_module_path: Callable[[str], str | None]
    transformer_options_index: int
    context_index: int
    reference_input: ReferenceInput | None
    make_layout: Callable[[int, int, int, int], TokenLayout]
    entity_source: EntitySource
    objective: Objective
    sets_in_training: bool
    check_reference_fits: Callable[[Any, int], None] | None = None
    reference_layouts: tuple[str, ...] = ("joint",)
    branch_dit_classes: tuple[str, ...] = ()
    refused_routes: Mapping[str, str] = field(default_factory=dict)
    prefix_routes: Mapping[str, PrefixRoute] = field(default_factory=dict)

    def check_route(self, dit: object, *, own_reference: bool = True, prefix_frames: int = 0) -> None:
        """Raise (``ValueError``) when CustomVideoX Apply cannot run on ``dit`` as asked, at the node,
        before any sampling, with the reason and the remedy: its own class is one of ``refused_routes``;
        or a prefix route with a reference of the node's own (``own_reference``), or without the number of
        prefix frames; or ``prefix_frames`` given for a model that puts no frames in front of the video."""
        name, model = qualified_class_name(dit), type(dit).__name__
        reason = self.refused_routes.get(name)
        if reason is not None:
            raise ValueError(f"CustomVideoX cannot run on this model ({model}): {reason}")
        if prefix_frames < 0:
            raise ValueError(f"{PREFIX_FRAMES_INPUT} is {prefix_frames}; expected 0 or more frames")
        prefix = self.prefix_routes.get(name)
        if prefix is None:
            if prefix_frames:
                raise ValueError(
                    f"{PREFIX_FRAMES_INPUT} is {prefix_frames}, but this model ({model}) puts no reference "
                    f"frames in front of the video. Set {PREFIX_FRAMES_INPUT} to 0: it counts the frames a "
                    "VACE conditioning (WanVaceToVideo's trim_latent) puts there, for a VACE model."
                )
            return
        if own_reference:
            raise ValueError(
                f"CustomVideoX cannot run on this model ({model}) with a reference of its own: "
                f"{prefix.own_reference}"
            )
        if prefix_frames == 0:
            raise ValueError(
                f"on this model ({model}) CustomVideoX Apply with no reference biases the reference frames "
                f"in front of the video: connect {prefix.frames_from} to Apply's {PREFIX_FRAMES_INPUT}. It "
                "is 0 here; with no reference image in front of the video there is nothing to bias, so "
                "sample without CustomVideoX Apply."
            )

    def check_layout(self, layout: str, variant: str) -> None:
        """Raise when this family cannot run ``layout`` (a name from the layouts table)."""
        if layout not in self.reference_layouts:
            raise ValueError(
                f"the {layout!r} reference layout is not available on {variant}, which runs the "
                f"{' and '.join(self.reference_layouts)} layout only (the cached reference branch is "
                "implemented for Wan); choose another reference_layout, or a Wan model"
            )

    def runs_branch(self, dit: object) -> bool:
        """Whether the reference branch runs on ``dit``: its own class is one of ``branch_dit_classes``."""
        return qualified_class_name(dit) in self.branch_dit_classes

    def matches(self, dit: object) -> bool:
        """Whether ``dit``'s class, or one of its bases, is one of ``dit_classes``."""
        names = {_class_name(cls) for cls in type(dit).__mro__}
        return not names.isdisjoint(self.dit_classes)

    def variant(self, hidden_size: int, patch_size_t: int | None) -> str | None:
        return self.variants.get((hidden_size, patch_size_t))
