"""The table of host DiT families: one :class:`~.base.HostSpec` per family, one module each.

``HOST_SPECS`` maps the family name to its spec; :func:`spec_for` looks one up with a clear error and
:func:`spec_of_dit` finds the family of a DiT module; :func:`check_branch_dit` refuses a DiT the
reference branch cannot run on (``HostSpec.branch_dit_classes``). See docs/ARCHITECTURE.md, "Host specs".
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from . import cogvideox, wan
from .base import (
    PREFIX_FRAMES_INPUT,
    EntitySource,
    HostSpec,
    Objective,
    PrefixRoute,
    ReferenceInput,
    qualified_class_name,
)

HOST_SPECS: Mapping[str, HostSpec] = MappingProxyType(
    {spec.family: spec for spec in (cogvideox.SPEC, wan.SPEC)}
)
SUPPORTED_HOSTS = " and ".join(spec.supported for spec in HOST_SPECS.values())


class UnsupportedHostError(ValueError):
    """A model (or a family name) that the pack does not support."""


def spec_for(family: object) -> HostSpec:
    """The spec of ``family``, or :class:`UnsupportedHostError` naming what is supported."""
    spec = HOST_SPECS.get(family) if isinstance(family, str) else None
    if spec is None:
        raise UnsupportedHostError(
            f"unsupported host model family {family!r}; expected one of {', '.join(HOST_SPECS)}. "
            f"CustomVideoX supports {SUPPORTED_HOSTS}."
        )
    return spec


def spec_of_dit(dit: object) -> HostSpec | None:
    """The spec whose ComfyUI classes ``dit`` is an instance of, or ``None``."""
    for spec in HOST_SPECS.values():
        if spec.matches(dit):
            return spec
    return None


BRANCH_DIT_CLASSES: tuple[str, ...] = tuple(
    name for spec in HOST_SPECS.values() for name in spec.branch_dit_classes
)
"""Every DiT class the reference branch runs on, over all families."""


def check_branch_dit(dit: object) -> None:
    """Refuse (``ValueError``) a DiT the reference branch (Stand-In, a cached-layout adapter) cannot run
    on: one whose own class is in no family's ``branch_dit_classes``."""
    spec = spec_of_dit(dit)
    if spec is None or not spec.runs_branch(dit):
        raise ValueError(
            f"the reference branch (Stand-In, or a cached-layout adapter) runs only on "
            f"{' or '.join(BRANCH_DIT_CLASSES)} (ComfyUI's plain Wan T2V model); this model's DiT is a "
            f"{qualified_class_name(dit)}. Variants that run extra blocks or streams (VACE, camera, speech "
            "or animation) are not supported."
        )


__all__ = [
    "BRANCH_DIT_CLASSES",
    "HOST_SPECS",
    "SUPPORTED_HOSTS",
    "EntitySource",
    "HostSpec",
    "Objective",
    "PREFIX_FRAMES_INPUT",
    "PrefixRoute",
    "ReferenceInput",
    "UnsupportedHostError",
    "check_branch_dit",
    "spec_for",
    "spec_of_dit",
]
