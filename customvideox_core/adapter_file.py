"""CustomVideoX adapter files: safetensors with metadata naming the host they were trained for.

Only safetensors is read or written: pickle-based checkpoints (``.ckpt``, ``.pt``, ``.pth``, ``.bin``,
``.pkl``) can run code when loaded and are refused. Writes are atomic (temporary file in the same folder,
then ``os.replace``) and never overwrite an existing file unless asked to.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from . import LAYOUT_VERSION
from .constants import ADAPTER_SUFFIX, PICKLE_SUFFIXES
from .finite import check_finite_weights
from .host_signature import HostSignature
from .reference_layouts import DEFAULT_LAYOUT, reference_layout

logger = logging.getLogger(__name__)

ADAPTER_FORMAT = "customvideox.lora.v1"
FORMAT_KEY = "format"
_FORMAT_FAMILY = "customvideox.lora."
_EXTRA_PREFIX = "extra."
REFERENCE_LAYOUT_KEY = "reference_layout"


class AdapterMismatchError(ValueError):
    """An adapter trained for a different host model (or token layout) than the one it is applied to."""


@dataclass(frozen=True)
class AdapterMetadata:
    """What an adapter file says about itself (stored as the safetensors header).

    ``reference_layout``: how the reference reaches the DiT (:mod:`.reference_layouts`); files written
    before the key existed are ``joint``.
    """

    host: HostSignature
    rank: int
    alpha: float
    targets: tuple[str, ...]
    layout_version: int
    steps: int = 0
    data_summary: str = ""
    extra: Mapping[str, str] = field(default_factory=dict, hash=False)
    reference_layout: str = DEFAULT_LAYOUT

    def __post_init__(self) -> None:
        reference_layout(self.reference_layout)
        if not isinstance(self.host, HostSignature):
            raise TypeError(f"AdapterMetadata.host must be a HostSignature, got {type(self.host).__name__}")
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"AdapterMetadata.rank must be a positive integer, got {self.rank!r}")
        if not isinstance(self.alpha, (int, float)) or isinstance(self.alpha, bool) or self.alpha <= 0:
            raise ValueError(f"AdapterMetadata.alpha must be a positive number, got {self.alpha!r}")
        object.__setattr__(self, "alpha", float(self.alpha))
        targets = tuple(self.targets)
        if not targets or not all(
            isinstance(target, str) and target and "," not in target for target in targets
        ):
            raise ValueError(
                f"AdapterMetadata.targets must be non-empty module suffixes without commas, got {self.targets!r}"
            )
        object.__setattr__(self, "targets", targets)
        for name in ("layout_version", "steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"AdapterMetadata.{name} must be a non-negative integer, got {value!r}")
        if not all(isinstance(key, str) and isinstance(value, str) for key, value in self.extra.items()):
            raise ValueError("AdapterMetadata.extra must map strings to strings")
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    def to_header(self) -> dict[str, str]:
        """Flat ``str → str`` safetensors metadata."""
        header = {
            FORMAT_KEY: ADAPTER_FORMAT,
            **self.host.to_metadata(),
            "rank": str(self.rank),
            "alpha": repr(self.alpha),
            "targets": ",".join(self.targets),
            "layout_version": str(self.layout_version),
            "steps": str(self.steps),
            "data_summary": self.data_summary,
            REFERENCE_LAYOUT_KEY: self.reference_layout,
        }
        header.update({f"{_EXTRA_PREFIX}{key}": value for key, value in self.extra.items()})
        return header

    @classmethod
    def from_header(cls, header: Mapping[str, str]) -> AdapterMetadata:
        """Inverse of :meth:`to_header`; ``ValueError`` naming what is missing or malformed."""
        found_format = header.get(FORMAT_KEY)
        if found_format != ADAPTER_FORMAT:
            raise ValueError(
                f"adapter metadata format is {found_format!r}, expected {ADAPTER_FORMAT!r}; "
                "a newer format needs a newer CustomVideoX pack"
            )

        def required(key: str) -> str:
            if key not in header:
                raise ValueError(f"adapter metadata is missing {key!r}; present keys: {sorted(header)}")
            return header[key]

        def parse(key: str, kind: type) -> int | float:
            text = required(key)
            try:
                return kind(text)
            except ValueError:
                raise ValueError(f"adapter metadata {key!r} must be {kind.__name__}, got {text!r}") from None

        return cls(
            host=HostSignature.from_metadata(dict(header)),
            rank=int(parse("rank", int)),
            alpha=float(parse("alpha", float)),
            targets=tuple(required("targets").split(",")),
            layout_version=int(parse("layout_version", int)),
            steps=int(parse("steps", int)) if "steps" in header else 0,
            data_summary=header.get("data_summary", ""),
            extra={
                key[len(_EXTRA_PREFIX) :]: value
                for key, value in header.items()
                if key.startswith(_EXTRA_PREFIX)
            },
            reference_layout=header.get(REFERENCE_LAYOUT_KEY, DEFAULT_LAYOUT),
        )


def write_safetensors_atomic(
    path: str | os.PathLike[str],
    tensors: Mapping[str, Tensor],
    metadata: Mapping[str, str],
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``tensors`` + ``metadata`` to ``path`` (``.safetensors``) atomically; returns the path.

    Refuses an existing file unless ``overwrite``; creates missing parent folders. Tensors are detached,
    moved to the CPU and made contiguous (shared storage is copied).
    """
    target = Path(path)
    if target.suffix.lower() != ADAPTER_SUFFIX:
        raise ValueError(f"{target} must end in {ADAPTER_SUFFIX} (only safetensors files are written)")
    if not overwrite and target.exists():
        raise FileExistsError(
            f"{target} already exists; choose another name, or pass overwrite=True to replace it"
        )
    cpu_tensors = {}
    for key, tensor in tensors.items():
        if not isinstance(tensor, Tensor):
            raise TypeError(f"cannot save {key!r}: expected a torch.Tensor, got {type(tensor).__name__}")
        cpu_tensors[key] = tensor.detach().to("cpu").contiguous().clone()
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    try:
        save_file(cpu_tensors, temp_name, metadata=dict(metadata))
        if not overwrite and target.exists():
            raise FileExistsError(
                f"{target} appeared while writing; choose another name, or pass overwrite=True to replace it"
            )
        os.replace(temp_name, target)
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
    return target


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read tensors and header metadata from a safetensors file, refusing pickles (never ``torch.load``).

    Raises ``FileNotFoundError``, or ``ValueError`` naming the file when it is a pickle-based checkpoint or
    not valid safetensors.
    """
    source = Path(path)
    if source.suffix.lower() in PICKLE_SUFFIXES:
        raise ValueError(
            f"{source} is a pickle-based checkpoint ({source.suffix}), which can run code when loaded; "
            "CustomVideoX reads only .safetensors files. Convert it to safetensors first."
        )
    if not source.is_file():
        raise FileNotFoundError(f"adapter file {source} does not exist (or is not a file)")
    try:
        with safe_open(str(source), framework="pt", device="cpu") as reader:
            metadata = dict(reader.metadata() or {})
            tensors = {key: reader.get_tensor(key) for key in reader.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as error:
        hint = (
            " It looks like a PyTorch pickle checkpoint; convert it to safetensors."
            if _looks_pickled(source)
            else ""
        )
        raise ValueError(
            f"{source} is not a valid safetensors file ({error}); nothing was loaded.{hint}"
        ) from error
    return tensors, metadata


def _looks_pickled(source: Path) -> bool:
    """Zip container (``torch.save``) or a pickle protocol 2+ opcode at the start."""
    with source.open("rb") as stream:
        head = stream.read(2)
    return head == b"PK" or (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def save_adapter(
    path: str | os.PathLike[str],
    state_dict: Mapping[str, Tensor],
    metadata: AdapterMetadata,
    *,
    overwrite: bool = False,
) -> Path:
    """Save an adapter (comfy-form LoRA keys) with its metadata; returns the written path.

    Refuses to overwrite an existing file unless ``overwrite=True`` (``FileExistsError``).
    """
    if not state_dict:
        raise ValueError(f"refusing to save an empty adapter to {path}: the state dict has no tensors")
    written = write_safetensors_atomic(path, state_dict, metadata.to_header(), overwrite=overwrite)
    logger.info("saved adapter %s (%d tensors, %s)", written, len(state_dict), metadata.host.description)
    return written


def load_adapter(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], AdapterMetadata | None]:
    """Load an adapter file. Metadata is ``None`` for files without CustomVideoX metadata (third-party
    LoRAs). A file that claims the CustomVideoX format but carries broken metadata raises ``ValueError``;
    one with a NaN or infinite weight raises :class:`~customvideox_core.finite.NonFiniteError`.
    """
    tensors, header = read_safetensors(path)
    check_finite_weights(tensors, source=Path(path).name)
    found_format = header.get(FORMAT_KEY, "")
    if not found_format.startswith(_FORMAT_FAMILY):
        return tensors, None
    try:
        metadata = AdapterMetadata.from_header(header)
    except ValueError as error:
        raise ValueError(f"{path}: CustomVideoX adapter metadata is unreadable: {error}") from error
    return tensors, metadata


def check_adapter_host(metadata: AdapterMetadata | None, host: HostSignature) -> None:
    """Raise :class:`AdapterMismatchError` if the adapter was trained for another model or token layout.

    Family, hidden size and layer count must match; a different temporal patch size or position scheme
    only logs a warning (the weights fit, quality may suffer). Without metadata there is nothing to check.
    """
    if metadata is None:
        return
    trained = metadata.host
    if (trained.family, trained.hidden_size, trained.num_layers) != (
        host.family,
        host.hidden_size,
        host.num_layers,
    ):
        raise AdapterMismatchError(
            f"adapter was trained for {trained.description}; this model is {host.description}. "
            f"Load an adapter trained for {host.variant}, or load the model it was trained for."
        )
    if metadata.layout_version != LAYOUT_VERSION:
        raise AdapterMismatchError(
            f"adapter uses reference-token layout version {metadata.layout_version}, this pack uses "
            f"version {LAYOUT_VERSION}; use a pack version that matches the adapter, or re-train it"
        )
    try:
        host.spec.check_layout(metadata.reference_layout, host.variant)
    except ValueError as error:
        raise AdapterMismatchError(f"this adapter cannot run here: {error}") from None
    if (trained.patch_size_t, trained.positions) != (host.patch_size_t, host.positions):
        logger.warning(
            "adapter was trained on %s (patch_size_t=%s, %s positions); this model has patch_size_t=%s, "
            "%s positions — it will load, but results may differ from training",
            trained.variant,
            trained.patch_size_t,
            trained.positions,
            host.patch_size_t,
            host.positions,
        )
