"""Host models the pack supports, described by the shapes that matter to an adapter.

A :class:`HostSignature` names a host DiT by family and size. It travels inside adapter files (see
``adapter_file``), so that an adapter trained for one model is refused, with a clear message, on another.
:func:`attention_targets` names the self-attention projections of ComfyUI's own modules per family: the
modules the reference LoRA is trained on and loaded into. What differs between families lives in the
host-spec table (:mod:`customvideox_core.host_specs`); this module only reads it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

from .host_specs import SUPPORTED_HOSTS, HostSpec, UnsupportedHostError, spec_for, spec_of_dit

HostFamily = Literal["cogvideox", "wan"]
"""A key of :data:`~customvideox_core.host_specs.HOST_SPECS`."""
PositionKind = Literal["rope", "sincos", "learned"]

_POSITION_KINDS: tuple[str, ...] = get_args(PositionKind)

_METADATA_PREFIX = "host."


def check_family(family: object) -> HostFamily:
    """Return ``family`` if it names a supported host family, else raise :class:`UnsupportedHostError`."""
    return spec_for(family).family  # type: ignore[return-value]


@dataclass(frozen=True)
class HostSignature:
    """The shape of a host DiT: what an adapter trained on it depends on.

    ``hidden_size == num_heads * head_dim``. ``patch_size_t`` is the temporal patch size
    (CogVideoX 1.5: 2; ``None`` when frames are not patched in time).
    """

    family: HostFamily
    hidden_size: int
    num_layers: int
    num_heads: int
    head_dim: int
    patch_size: int
    patch_size_t: int | None = None
    positions: PositionKind = "rope"

    def __post_init__(self) -> None:
        check_family(self.family)
        for name in ("hidden_size", "num_layers", "num_heads", "head_dim", "patch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"HostSignature.{name} must be a positive integer, got {value!r}")
        if self.patch_size_t is not None and (
            isinstance(self.patch_size_t, bool)
            or not isinstance(self.patch_size_t, int)
            or self.patch_size_t < 1
        ):
            raise ValueError(
                f"HostSignature.patch_size_t must be a positive integer or None, got {self.patch_size_t!r}"
            )
        if self.num_heads * self.head_dim != self.hidden_size:
            raise ValueError(
                f"HostSignature: num_heads * head_dim must equal hidden_size, got {self.num_heads} * "
                f"{self.head_dim} = {self.num_heads * self.head_dim} for hidden_size {self.hidden_size}"
            )
        if self.positions not in _POSITION_KINDS:
            raise ValueError(
                f"HostSignature.positions must be one of {', '.join(_POSITION_KINDS)}, got {self.positions!r}"
            )

    @property
    def spec(self) -> HostSpec:
        """The family's entry of the host-spec table."""
        return spec_for(self.family)

    @property
    def variant(self) -> str:
        """Human name of the model, e.g. ``"CogVideoX-5B"`` or ``"Wan 2.1/2.2 14B"``."""
        known = self.spec.variant(self.hidden_size, self.patch_size_t)
        return known or f"{self.family} ({self.hidden_size} wide, {self.num_layers} layers)"

    @property
    def description(self) -> str:
        """Name with the sizes that must match, e.g. ``"CogVideoX-2B (1920 wide, 30 layers)"``."""
        sizes = f"({self.hidden_size} wide, {self.num_layers} layers)"
        variant = self.variant
        return variant if variant.endswith(sizes) else f"{variant} {sizes}"

    def to_metadata(self) -> dict[str, str]:
        """Flat string metadata (safetensors header form), keys prefixed ``host.``."""
        return {
            f"{_METADATA_PREFIX}family": self.family,
            f"{_METADATA_PREFIX}hidden_size": str(self.hidden_size),
            f"{_METADATA_PREFIX}num_layers": str(self.num_layers),
            f"{_METADATA_PREFIX}num_heads": str(self.num_heads),
            f"{_METADATA_PREFIX}head_dim": str(self.head_dim),
            f"{_METADATA_PREFIX}patch_size": str(self.patch_size),
            f"{_METADATA_PREFIX}patch_size_t": "" if self.patch_size_t is None else str(self.patch_size_t),
            f"{_METADATA_PREFIX}positions": self.positions,
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> HostSignature:
        """Inverse of :meth:`to_metadata`; raises ``ValueError`` naming a missing or malformed key."""

        def field_text(name: str) -> str:
            key = f"{_METADATA_PREFIX}{name}"
            if key not in meta:
                raise ValueError(f"host metadata is missing {key!r}; present keys: {sorted(meta)}")
            return str(meta[key])

        def field_int(name: str) -> int:
            text = field_text(name)
            try:
                return int(text)
            except ValueError:
                raise ValueError(
                    f"host metadata {_METADATA_PREFIX}{name} must be an integer, got {text!r}"
                ) from None

        patch_size_t_text = meta.get(f"{_METADATA_PREFIX}patch_size_t", "")
        return cls(
            family=field_text("family"),  # type: ignore[arg-type]
            hidden_size=field_int("hidden_size"),
            num_layers=field_int("num_layers"),
            num_heads=field_int("num_heads"),
            head_dim=field_int("head_dim"),
            patch_size=field_int("patch_size"),
            patch_size_t=field_int("patch_size_t") if patch_size_t_text else None,
            positions=meta.get(f"{_METADATA_PREFIX}positions", "rope"),  # type: ignore[arg-type]
        )


def signature_of_dit(dit: object) -> HostSignature | None:
    """The signature of a DiT module of a supported family (read from its attributes), or ``None``."""
    spec = spec_of_dit(dit)
    if spec is None:
        return None
    return HostSignature(family=spec.family, **spec.describe(dit))  # type: ignore[arg-type]


def attention_targets(family: HostFamily) -> tuple[str, ...]:
    """Suffixes (after ``blocks.{i}.``) of the self-attention projections in ComfyUI's modules.

    cogvideox: ``("q", "k", "v", "attn_out")``; wan: ``("self_attn.q", "self_attn.k", "self_attn.v",
    "self_attn.o")``.
    """
    return spec_for(family).attention_targets


def attention_module_regex(
    family: HostFamily, targets: tuple[str, ...] | None = None, *, allow_prefix: bool = True
) -> str:
    """Regex that fully matches the module paths of ``targets`` (default: :func:`attention_targets`).

    Matches ``blocks.{i}.<target>``, with or without a dotted prefix (``diffusion_model.blocks.3.q``) when
    ``allow_prefix``, and nothing else (not ``vace_blocks.0.self_attn.q``, not ``blocks.0.cross_attn.q``).
    See :func:`block_modules_regex`.
    """
    chosen = attention_targets(family) if targets is None else targets
    return block_modules_regex(chosen, allow_prefix=allow_prefix)


def block_modules_regex(targets: tuple[str, ...], *, allow_prefix: bool = True) -> str:
    """Regex that fully matches ``blocks.{i}.<target>`` for any of ``targets`` (dotted suffixes).

    Capture group ``index`` is the block number, ``target`` the suffix. With ``allow_prefix`` a dotted
    prefix is allowed (``diffusion_model.blocks.3.q``), but never a partial word (``vace_blocks``).
    """
    if not targets or not all(isinstance(target, str) and target for target in targets):
        raise ValueError(f"block_modules_regex needs non-empty module suffixes, got {targets!r}")
    alternatives = "|".join(re.escape(target) for target in targets)
    prefix = r"(?:.*\.)?" if allow_prefix else ""
    return rf"{prefix}blocks\.(?P<index>\d+)\.(?P<target>{alternatives})"


__all__ = [
    "SUPPORTED_HOSTS",
    "HostFamily",
    "HostSignature",
    "PositionKind",
    "UnsupportedHostError",
    "attention_module_regex",
    "attention_targets",
    "block_modules_regex",
    "check_family",
    "signature_of_dit",
]
