"""Stand-In LoRA files: read them safely, name their tensors, check them against a Wan model.

A Stand-In file holds, for every DiT block ``i`` and projection ``p`` in ``q, k, v``, a rank-``r`` LoRA
(``r = 128`` in the published files) that acts on the *reference tokens only*::

    blocks.{i}.self_attn.{p}_loras.down.weight    [r, dim]
    blocks.{i}.self_attn.{p}_loras.up.weight      [dim, r]

(``models/set_condition_branch.py`` ``load_lora_weights_into_dit`` of WeChatCV/Stand-In.) Files may carry
one common prefix (``pipe.dit.``, ``dit.``, ``model.``, ``diffusion_model.``, ``module.``) or sit under a
``state_dict`` entry; both are accepted. Files are read by the converters' loader
(:func:`..convert.checkpoint_io.read_tensor_file`): ``.safetensors`` conversions with safetensors, the
published ``.ckpt``/``.pt`` files with ``torch.load(weights_only=True)``, and only plain tensors are
accepted — a file that needs anything else unpickled is refused. The suffixes are
:data:`..constants.STANDIN_SUFFIXES`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from ..constants import TORCH_FILE_SUFFIXES
from ..convert.checkpoint_io import CheckpointError, read_tensor_file
from ..finite import check_finite_weights

logger = logging.getLogger(__name__)

Projection = Literal["q", "k", "v"]
PROJECTIONS: tuple[str, ...] = get_args(Projection)

STANDIN_KEY = re.compile(r"^blocks\.(\d+)\.self_attn\.([qkv])_loras\.(down|up)\.weight$")
KNOWN_PREFIXES: tuple[str, ...] = (
    "pipe.dit.",
    "model.diffusion_model.",
    "diffusion_model.",
    "dit.",
    "model.",
    "module.",
)


def standin_key(block: int, projection: str, side: str) -> str:
    """``blocks.{block}.self_attn.{projection}_loras.{side}.weight`` (``side``: ``down`` or ``up``)."""
    return f"blocks.{block}.self_attn.{projection}_loras.{side}.weight"


class StandInFileError(ValueError):
    """A Stand-In file that cannot be used; the message says what was wrong and what was expected."""


@dataclass(frozen=True, eq=False)
class LoRAPair:
    """One reference-only LoRA: ``delta(x) = up(down(x))``; ``down`` ``[r, dim]``, ``up`` ``[dim, r]``."""

    down: Tensor
    up: Tensor

    def delta(self, hidden: Tensor, strength: float = 1.0) -> Tensor:
        """``strength * up(down(hidden))`` for ``hidden`` ``[..., dim]``, computed in ``hidden``'s dtype."""
        down = self.down.to(device=hidden.device, dtype=hidden.dtype)
        up = self.up.to(device=hidden.device, dtype=hidden.dtype)
        return torch.nn.functional.linear(torch.nn.functional.linear(hidden, down), up) * strength


@dataclass(frozen=True, eq=False)
class StandInLoRA:
    """The parsed file: ``pairs[(block, projection)]`` for every block and q/k/v, one rank and width."""

    pairs: Mapping[tuple[int, str], LoRAPair]
    num_blocks: int
    rank: int
    dim: int
    source: str

    def pair(self, block: int, projection: str) -> LoRAPair:
        return self.pairs[(block, projection)]

    def check_model(self, *, num_blocks: int, dim: int, model_name: str = "this Wan model") -> None:
        """Refuse a file made for another model (block count or hidden width differ)."""
        if self.num_blocks != num_blocks or self.dim != dim:
            raise StandInFileError(
                f"{self.source} is a Stand-In LoRA for a Wan with {self.num_blocks} blocks of width "
                f"{self.dim}, but {model_name} has {num_blocks} blocks of width {dim}. Stand-In files exist "
                "for Wan 2.1 T2V 14B (Stand-In_wan2.1_T2V_14B_ver1.0.ckpt) and Wan 2.2 T2V A14B "
                "(Stand-In_wan2.2_T2V_A14B_high.ckpt / _low.ckpt, one per expert): load the matching model."
            )


def _strip_prefix(keys: list[str]) -> str:
    """The one known prefix every key carries ('' if none)."""
    for prefix in KNOWN_PREFIXES:
        if keys and all(key.startswith(prefix) for key in keys):
            return prefix
    return ""


def parse_standin_state_dict(
    state: Mapping[str, object], *, source: str = "the Stand-In file"
) -> StandInLoRA:
    """Name and check the tensors of a Stand-In file. ``state``: key -> tensor (maybe under ``state_dict``)."""
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not state:
        raise StandInFileError(f"{source} holds no tensors; expected Stand-In keys like {_example_key()}.")
    not_tensors = [key for key, value in state.items() if not isinstance(value, Tensor)]
    if not_tensors:
        raise StandInFileError(
            f"{source} holds non-tensor entries ({', '.join(map(str, not_tensors[:3]))}); "
            "a Stand-In file must hold plain tensors only."
        )
    keys = [str(key) for key in state]
    check_finite_weights({str(key): value for key, value in state.items()}, source=source)
    prefix = _strip_prefix(keys)
    unexpected = [key for key in keys if not STANDIN_KEY.match(key[len(prefix) :])]
    if unexpected:
        raise StandInFileError(
            f"{source} is not a Stand-In LoRA: {len(unexpected)} of {len(keys)} keys do not look like "
            f"{_example_key()} (first: {', '.join(unexpected[:3])}). Is this an ordinary LoRA? Load those "
            "with LoraLoaderModelOnly instead."
        )
    parts: dict[tuple[int, str], dict[str, Tensor]] = {}
    for key in keys:
        block, projection, side = STANDIN_KEY.match(key[len(prefix) :]).groups()
        parts.setdefault((int(block), projection), {})[side] = state[key]
    num_blocks = max(block for block, _ in parts) + 1
    missing = [
        standin_key(block, projection, side)
        for block in range(num_blocks)
        for projection in PROJECTIONS
        for side in ("down", "up")
        if side not in parts.get((block, projection), {})
    ]
    if missing:
        raise StandInFileError(
            f"{source} is incomplete: {len(missing)} tensors are missing (first: {', '.join(missing[:3])}); "
            "the file may be truncated."
        )
    first = parts[(0, "q")]["down"]
    if first.ndim != 2:
        raise StandInFileError(
            f"{source}: {standin_key(0, 'q', 'down')} has shape {tuple(first.shape)}, expected (rank, dim)."
        )
    rank, dim = int(first.shape[0]), int(first.shape[1])
    pairs: dict[tuple[int, str], LoRAPair] = {}
    for (block, projection), sides in sorted(parts.items()):
        down, up = sides["down"], sides["up"]
        if tuple(down.shape) != (rank, dim) or tuple(up.shape) != (dim, rank):
            raise StandInFileError(
                f"{source}: blocks.{block}.self_attn.{projection}_loras has down {tuple(down.shape)} and up "
                f"{tuple(up.shape)}, expected ({rank}, {dim}) and ({dim}, {rank}) like block 0."
            )
        if not (down.is_floating_point() and up.is_floating_point()):
            raise StandInFileError(f"{source}: blocks.{block} {projection} LoRA is not floating point.")
        pairs[(block, projection)] = LoRAPair(down=down.detach(), up=up.detach())
    return StandInLoRA(pairs=pairs, num_blocks=num_blocks, rank=rank, dim=dim, source=source)


def _example_key() -> str:
    return repr(standin_key(0, "q", "down"))


def read_standin_file(path: str) -> StandInLoRA:
    """Read a Stand-In file (``.safetensors`` or a plain-tensor ``.ckpt``/``.pt``); never runs a pickle."""
    name = os.path.basename(path)
    try:
        loaded = read_tensor_file(path, torch_suffixes=TORCH_FILE_SUFFIXES)
    except CheckpointError as error:
        raise StandInFileError(f"{name} cannot be used as a Stand-In file: {error}") from error
    lora = parse_standin_state_dict(loaded.tensors, source=name)
    logger.info("Stand-In file %s: %d blocks, rank %d, width %d", name, lora.num_blocks, lora.rank, lora.dim)
    return lora
