"""The table of host DiT families: one :class:`~.base.HostSpec` per family, one module each.

``HOST_SPECS`` maps the family name to its spec; :func:`spec_for` looks one up with a clear error and
:func:`spec_of_dit` finds the family of a DiT module. See docs/ARCHITECTURE.md, "Host specs".
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from . import cogvideox, wan
from .base import EntitySource, HostSpec, Objective, ReferenceInput

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


__all__ = [
    "HOST_SPECS",
    "SUPPORTED_HOSTS",
    "EntitySource",
    "HostSpec",
    "Objective",
    "ReferenceInput",
    "UnsupportedHostError",
    "spec_for",
    "spec_of_dit",
]
