"""The ``cached`` reference layout on a MODEL: a CustomVideoX adapter run as Stand-In's reference branch.

An adapter trained in the cached layout (``customvideox_core.reference_layouts``) holds a LoRA that acts
on the reference tokens only, in Stand-In's key form. Load CustomVideoX does not patch any weight with
it (that would change every token); it records the LoRA on the clone (:data:`CACHED_ADAPTER_KEY` in
``transformer_options``). Apply and Sample then install the reference branch of ``nodes/standin_patch.py``
with that LoRA: the reference at timestep 0, attending to itself, its keys and values computed once per
sampling and appended to the video's keys, TAB and ERAE on the video → reference logits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor

from ..customvideox_core.host_signature import HostSignature
from ..customvideox_core.host_specs import check_branch_dit
from ..customvideox_core.standin.lora_file import StandInLoRA, parse_standin_state_dict
from ..customvideox_core.tab import TABSchedule
from .host_model import diffusion_model_of
from .standin_nodes import apply_standin
from .types import ERAESettings, ReferenceLatents

CACHED_ADAPTER_KEY = "cvx_cached_adapter"


@dataclass(frozen=True, eq=False)
class CachedAdapter:
    """A cached-layout adapter on a MODEL: its reference-only LoRA and the strength it was loaded at."""

    lora: StandInLoRA
    strength: float

    @property
    def summary(self) -> str:
        return (
            f"cached layout, {self.lora.num_blocks} blocks × q/k/v at rank {self.lora.rank} (it acts once "
            "CustomVideoX Apply or Sample gives it a reference)"
        )


def attach_cached_adapter(
    model, host: HostSignature, state_dict: Mapping[str, Tensor], strength: float, source: str
):
    """A clone of ``model`` that carries the adapter for Apply/Sample; no weight is patched.

    Returns ``(clone, adapter)``. Raises when the file is not a cached-layout LoRA of this model.
    """
    host.spec.check_layout("cached", host.variant)
    lora = parse_standin_state_dict(state_dict, source=source)
    dit = diffusion_model_of(model)
    check_branch_dit(dit)  # refused at Load, not first at Apply
    lora.check_model(num_blocks=len(dit.blocks), dim=int(dit.dim), model_name=f"this {host.variant}")
    adapter = CachedAdapter(lora=lora, strength=float(strength))
    patched = model.clone()
    patched.model_options.setdefault("transformer_options", {})[CACHED_ADAPTER_KEY] = adapter
    return patched, adapter


def cached_adapter_of(model) -> CachedAdapter | None:
    """The cached-layout adapter Load CustomVideoX put on ``model``, or None (the joint layout)."""
    return model.model_options.get("transformer_options", {}).get(CACHED_ADAPTER_KEY)


def apply_cached_layout(
    model,
    adapter: CachedAdapter,
    reference: ReferenceLatents | None,
    *,
    tab: TABSchedule,
    erae: ERAESettings | None,
    uncond_sees_reference: bool,
):
    """A clone of ``model`` that generates with ``reference`` through the adapter's reference branch."""
    if reference is None:
        raise ValueError(
            "this model carries a cached-layout CustomVideoX adapter, which reads its own reference "
            "branch: connect a reference (CustomVideoX ReferenceEncode with one image)"
        )
    return apply_standin(
        model,
        adapter.lora,
        reference,
        strength=adapter.strength,
        tab=tab,
        erae=erae,
        uncond_sees_reference=uncond_sees_reference,
    )
