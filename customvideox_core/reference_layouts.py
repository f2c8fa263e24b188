"""How an adapter's reference reaches the DiT: the reference layouts, one table.

- ``joint`` (the paper's 3D reference attention, every adapter before this table): the clean reference
  frames join the video's token sequence; the LoRA acts on every token's attention projections, and the
  video and the reference attend to each other at the video's timestep in every step.
- ``cached`` (Stand-In's branch): the reference runs as its own branch at timestep 0, attends to itself
  only, with the LoRA on its own q/k/v only; its keys and values do not depend on the noisy video, the
  sigma or the prompt, so they are computed once per sampling (once per expert) and appended to the
  video's keys in every block's self-attention. Per step the reference then costs only its extra keys.

An adapter file records its layout in its metadata (``reference_layout``; files without it are
``joint``). A host family lists the layouts it can run in its spec (``HostSpec.reference_layouts``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, get_args

ReferenceLayoutName = Literal["joint", "cached"]
LAYOUT_NAMES: tuple[str, ...] = get_args(ReferenceLayoutName)
DEFAULT_LAYOUT: ReferenceLayoutName = "joint"


@dataclass(frozen=True)
class ReferenceLayout:
    """One layout: its name and what the user reads about it."""

    name: ReferenceLayoutName
    summary: str


REFERENCE_LAYOUTS: Mapping[str, ReferenceLayout] = MappingProxyType(
    {
        "joint": ReferenceLayout(
            name="joint",
            summary="reference frames in the video's token sequence, LoRA on every token (the paper's layout)",
        ),
        "cached": ReferenceLayout(
            name="cached",
            summary="reference as its own branch at timestep 0 with the LoRA on its tokens only; its "
            "keys and values are computed once per sampling (Stand-In's branch)",
        ),
    }
)


def reference_layout(name: str) -> ReferenceLayout:
    """The layout called ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return REFERENCE_LAYOUTS[name]
    except KeyError:
        raise ValueError(
            f"unknown reference layout {name!r}; this pack knows {', '.join(LAYOUT_NAMES)} "
            "(a newer layout needs a newer CustomVideoX pack)"
        ) from None
