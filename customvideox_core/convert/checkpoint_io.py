"""Read published checkpoints as plain tensors — never by running a pickle.

Accepted inputs:

- ``.safetensors`` / ``.sft`` files (read with safetensors, no pickle involved);
- ``.pt`` / ``.pth`` / ``.ckpt`` files (and ``.bin`` where a caller allows it), read with ``torch.load(..., weights_only=True)`` only: tensors,
  dicts, lists, numbers and strings load; any other pickled object (a class, a function, an
  ``argparse.Namespace``) makes torch refuse the file, and we refuse it too with a message saying so;
- SAT / DeepSpeed checkpoint folders as SwissArmyTransformer writes them and Concat-ID publishes them
  (``<folder>/latest`` holding the iteration, ``<folder>/<iteration>/mp_rank_00_model_states.pt``), or
  the ``<iteration>`` folder itself. Model-parallel shards (``mp_rank_01_...``) are refused.

The suffixes come from :mod:`..constants` (one table). :func:`read_tensor_file` reads one file and is
also the Stand-In file reader's loader.

Wrapper dictionaries (``{"module": state_dict, "iteration": ..}`` from SAT/DeepSpeed, ``{"state_dict":
..}``, ``{"model": ..}``) are unwrapped to the state dict of tensors.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..adapter_file import read_safetensors
from ..constants import SAFETENSORS_SUFFIXES, TORCH_CHECKPOINT_SUFFIXES

SAT_LATEST_FILE = "latest"
SAT_SHARD_NAME = "mp_rank_00_model_states.pt"
SAT_SECOND_SHARD_NAME = "mp_rank_01_model_states.pt"
WRAPPER_KEYS = ("module", "state_dict", "model")
"""Keys under which training frameworks nest the state dict (SAT/DeepSpeed use ``module``)."""
_MAX_WRAPPER_DEPTH = 3
_ZIP_MAGIC = b"PK\x03\x04"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read as plain tensors (or is not where it was said to be)."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A state dict read from ``file`` (the resolved file, inside a SAT folder when one was given);
    ``metadata`` is the safetensors header (empty for ``.pt`` files)."""

    tensors: dict[str, Tensor]
    file: Path
    metadata: dict[str, str] = field(default_factory=dict)


def resolve_checkpoint_file(path: str | os.PathLike[str]) -> Path:
    """The file to read for ``path``: the path itself, or the model-state shard of a SAT folder.

    Raises :class:`CheckpointError` naming what was looked for when nothing fits.
    """
    source = Path(path)
    if source.is_file():
        return source
    if not source.exists():
        raise CheckpointError(f"{source} does not exist; give a checkpoint file or a SAT checkpoint folder")
    if not source.is_dir():
        raise CheckpointError(f"{source} is neither a file nor a folder")
    latest = source / SAT_LATEST_FILE
    if latest.is_file():
        iteration = _latest_iteration(latest)
        shard = source / iteration / SAT_SHARD_NAME
        if not shard.is_file():
            raise CheckpointError(
                f"{latest} names iteration {iteration!r}, but {shard} does not exist; "
                "the SAT checkpoint folder is incomplete"
            )
    elif (source / SAT_SHARD_NAME).is_file():
        shard = source / SAT_SHARD_NAME
    else:
        shards = sorted(source.glob(f"*/{SAT_SHARD_NAME}"))
        if len(shards) != 1:
            found = ", ".join(str(s.relative_to(source)) for s in shards) or "none"
            raise CheckpointError(
                f"{source} is a folder but not a SAT checkpoint: expected a '{SAT_LATEST_FILE}' file naming "
                f"the iteration and '<iteration>/{SAT_SHARD_NAME}', or exactly one '*/{SAT_SHARD_NAME}' "
                f"(found: {found}). Give the checkpoint file itself instead."
            )
        shard = shards[0]
    if (shard.parent / SAT_SECOND_SHARD_NAME).exists():
        raise CheckpointError(
            f"{shard.parent} holds a model-parallel checkpoint (several mp_rank_* shards); only "
            "single-shard checkpoints (model_parallel_size 1, as Concat-ID publishes) can be converted"
        )
    return shard


def _latest_iteration(latest: Path) -> str:
    """The iteration folder a SAT ``latest`` file names (a plain folder name, e.g. ``1000``)."""
    try:
        iteration = latest.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"{latest} cannot be read as text ({error}); it should hold the iteration"
        ) from None
    if not iteration or iteration in (".", "..") or any(mark in iteration for mark in ("/", "\\", "\n")):
        raise CheckpointError(
            f"{latest} should hold the name of the iteration folder beside it (e.g. 1000), got {iteration!r}; "
            "the SAT checkpoint folder is damaged, or give the .pt file itself"
        )
    return iteration


def load_tensor_checkpoint(path: str | os.PathLike[str]) -> LoadedCheckpoint:
    """Read ``path`` (file or SAT folder) as a flat ``{name: Tensor}`` state dict, without running code."""
    return read_tensor_file(resolve_checkpoint_file(path))


def read_tensor_file(
    path: str | os.PathLike[str], *, torch_suffixes: Collection[str] = TORCH_CHECKPOINT_SUFFIXES
) -> LoadedCheckpoint:
    """Read one file as a flat ``{name: Tensor}`` state dict, never running a pickle: safetensors by
    :data:`SAFETENSORS_SUFFIXES`, ``torch_suffixes`` through ``torch.load(weights_only=True)``.

    Raises :class:`CheckpointError` for another suffix, a file holding more than plain tensors, or one
    without a state dict of tensors.
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix in (*SAFETENSORS_SUFFIXES, *torch_suffixes) and _file_size(file) == 0:
        raise CheckpointError(
            f"{file} is empty (0 bytes), so it holds no checkpoint: the download or copy was probably cut "
            "off. Fetch the file again"
        )
    if suffix in SAFETENSORS_SUFFIXES:
        try:
            tensors, metadata = read_safetensors(file)
        except (ValueError, OSError) as error:
            raise CheckpointError(str(error)) from error
        return LoadedCheckpoint(tensors=tensors, file=file, metadata=metadata)
    if suffix not in torch_suffixes:
        accepted = ", ".join(sorted({*torch_suffixes, *SAFETENSORS_SUFFIXES}))
        raise CheckpointError(
            f"{file} has an unsupported file type {file.suffix or '(none)'!r}; accepted checkpoint files "
            f"are {accepted}"
        )
    loaded = _torch_load_tensors_only(file)
    return LoadedCheckpoint(tensors=unwrap_state_dict(loaded, source=file), file=file)


def _torch_load_tensors_only(file: Path) -> object:
    """``torch.load(weights_only=True)``, memory-mapped when the file format allows it."""
    try:
        try:
            return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            # Legacy (non-zip) torch.save format: cannot be memory-mapped; still weights_only.
            return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # damaged bytes make torch's unpickler raise anything (IndexError, KeyError…)
        torch_file = _looks_like_torch_file(file)
        if not (torch_file and isinstance(error, pickle.UnpicklingError)):
            raise CheckpointError(
                f"{file} could not be read as a PyTorch checkpoint: {_load_failure(error, file, torch_file)}"
            ) from error
        reason = str(error).strip().splitlines()
        detail = next((line for line in reason if "GLOBAL" in line), reason[0] if reason else "")
        detail = detail.split(" Please ")[0].strip()
        raise CheckpointError(
            f"{file} is not a plain-tensor checkpoint: torch.load(weights_only=True) refused it ({detail}). "
            "This pack reads plain tensors only and never unpickles other objects, so the file was not "
            "loaded. If you trust its "
            "source, re-save only its tensors (e.g. the 'module' state dict) with torch.save or as "
            ".safetensors, and convert that file."
        ) from None


def _file_size(file: Path) -> int | None:
    """``file``'s size in bytes; ``None`` when it cannot be asked (the reader then says why)."""
    try:
        return file.stat().st_size
    except OSError:
        return None


def _looks_like_torch_file(file: Path) -> bool:
    """Whether ``file`` starts as ``torch.save`` writes: a zip archive, or (legacy) a protocol-2+ pickle."""
    try:
        with file.open("rb") as stream:
            start = stream.read(4)
    except OSError:
        return True  # cannot tell; torch's own message stands
    return start.startswith((_ZIP_MAGIC, b"\x80"))


def _load_failure(error: BaseException, file: Path, torch_file: bool) -> str:
    """What went wrong reading ``file``, in words (torch's text when it has one); ``torch_file``: what
    :func:`_looks_like_torch_file` said of it."""
    if not torch_file:
        return (
            "it is neither a zip archive nor a pickle as torch.save writes (is it another format, or damaged?); "
            "give the .pt/.ckpt file the checkpoint was published as"
        )
    if isinstance(error, EOFError):
        return (
            f"the file ends before the checkpoint does ({_file_size(file)} bytes): it is truncated, "
            "probably an unfinished download or copy. Fetch the file again"
        )
    return str(error).strip() or type(error).__name__


def unwrap_state_dict(loaded: object, *, source: Path | str) -> dict[str, Tensor]:
    """The flat ``{name: Tensor}`` dict inside ``loaded`` (descending through ``module``/``state_dict``/
    ``model`` wrappers). Raises :class:`CheckpointError` listing what was found when there is none."""
    current = loaded
    for _ in range(_MAX_WRAPPER_DEPTH + 1):
        if not isinstance(current, Mapping):
            raise CheckpointError(
                f"{source} holds a {type(current).__name__}, not a state dict (a mapping of names to tensors)"
            )
        values = list(current.values())
        if values and all(isinstance(value, Tensor) for value in values):
            return {str(key): value for key, value in current.items()}
        nested = next((current[key] for key in WRAPPER_KEYS if isinstance(current.get(key), Mapping)), None)
        if nested is None:
            break
        current = nested
    keys = sorted(map(str, current.keys())) if isinstance(current, Mapping) else []
    non_tensors = [key for key in keys if not isinstance(current[key], Tensor)]
    raise CheckpointError(
        f"{source} holds no state dict of tensors: expected a mapping of names to tensors, possibly nested "
        f"under one of {WRAPPER_KEYS}; found keys {keys[:12]}{' …' if len(keys) > 12 else ''}"
        + (f", of which not tensors: {non_tensors[:12]}" if non_tensors else "")
    )


__all__ = [
    "SAT_SHARD_NAME",
    "CheckpointError",
    "LoadedCheckpoint",
    "load_tensor_checkpoint",
    "read_tensor_file",
    "resolve_checkpoint_file",
    "unwrap_state_dict",
]
