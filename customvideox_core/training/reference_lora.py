"""The cached layout's trainable LoRA: rank-r pairs on q, k and v of every block, on the reference only.

In the ``cached`` reference layout (:mod:`customvideox_core.reference_layouts`) the reference runs as
its own branch (:func:`customvideox_core.standin.branch.reference_kv`) and the LoRA acts on the
reference tokens' projections there; the video's tokens go through the untouched DiT. So this LoRA is
not injected into the DiT's modules (as peft does for the ``joint`` layout): it is a module of its own
whose pairs the branch adds::

    q_ref = W_q x + (alpha / rank) · up_q(down_q(x))      (likewise k and v; x the reference tokens)

``down`` ``[rank, dim]`` starts as peft's ``lora_A`` does (Kaiming uniform, ``a = √5``) and ``up``
``[dim, rank]`` at zero, so an untrained adapter changes nothing. Files hold the pairs in Stand-In's key
form, ``blocks.{i}.self_attn.{q,k,v}_loras.{down,up}.weight``, with ``alpha / rank`` folded into ``up``:
Stand-In's own reader (:func:`~customvideox_core.standin.lora_file.parse_standin_state_dict`) reads them,
and a generic LoRA loader matches none of them, so it cannot apply them to every token by mistake.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..standin.lora_file import PROJECTIONS, LoRAPair, StandInLoRA, standin_key


def _name(block: int, projection: str) -> str:
    return f"{block}_{projection}"


class ReferenceBranchLoRA(nn.Module):
    """Trainable reference-only LoRA of a ``num_blocks``-block DiT of width ``dim``.

    ``TARGETS`` name the projections in the adapter's metadata (Wan's module names). The last block's
    ``q`` pair never gets a gradient: the branch reads only that block's keys and values (Stand-In's
    files carry the pair all the same, so it is kept, at its initial value).

    Args:
        num_blocks, dim: the DiT's block count and hidden width.
        rank, alpha: the LoRA shape; the deltas are scaled by ``alpha / rank``.
        init_seed: seed of the ``down`` init (a generator of its own; the global RNG is untouched).
        device: where the weights live (the DiT's device); float32 weights.
    """

    TARGETS: tuple[str, ...] = tuple(f"self_attn.{projection}" for projection in PROJECTIONS)

    def __init__(
        self,
        *,
        num_blocks: int,
        dim: int,
        rank: int,
        alpha: float,
        init_seed: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if min(num_blocks, dim, rank) < 1 or alpha <= 0:
            raise ValueError(
                f"ReferenceBranchLoRA needs positive num_blocks, dim, rank and alpha; got {num_blocks}, "
                f"{dim}, {rank}, {alpha}"
            )
        self.num_blocks, self.dim, self.rank, self.alpha = num_blocks, dim, rank, float(alpha)
        generator = torch.Generator().manual_seed(init_seed)
        self.down = nn.ParameterDict()
        self.up = nn.ParameterDict()
        for block in range(num_blocks):
            for projection in PROJECTIONS:
                down = torch.empty(rank, dim)
                nn.init.kaiming_uniform_(down, a=math.sqrt(5), generator=generator)
                self.down[_name(block, projection)] = nn.Parameter(down.to(device))
                self.up[_name(block, projection)] = nn.Parameter(torch.zeros(dim, rank, device=device))

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def as_standin_lora(self, source: str = "training") -> StandInLoRA:
        """The pairs as the reference branch reads them (``up`` scaled), differentiable in the weights."""
        pairs = {
            (block, projection): LoRAPair(
                down=self.down[_name(block, projection)], up=self.up[_name(block, projection)] * self.scale
            )
            for block in range(self.num_blocks)
            for projection in PROJECTIONS
        }
        return StandInLoRA(
            pairs=pairs, num_blocks=self.num_blocks, rank=self.rank, dim=self.dim, source=source
        )

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())

    def adapter_state_dict(self) -> dict[str, Tensor]:
        """The file's tensors: Stand-In keys, ``alpha / rank`` folded into ``up`` (detached copies)."""
        state: dict[str, Tensor] = {}
        for block in range(self.num_blocks):
            for projection in PROJECTIONS:
                name = _name(block, projection)
                state[standin_key(block, projection, "down")] = self.down[name].detach().clone()
                state[standin_key(block, projection, "up")] = (self.up[name].detach() * self.scale).clone()
        return state

    @torch.no_grad()
    def load_standin(self, lora: StandInLoRA) -> None:
        """Continue from a saved adapter (read by ``parse_standin_state_dict``): ``up`` is unscaled."""
        if (lora.num_blocks, lora.dim, lora.rank) != (self.num_blocks, self.dim, self.rank):
            raise ValueError(
                f"{lora.source} has {lora.num_blocks} blocks of width {lora.dim} at rank {lora.rank}; this "
                f"adapter has {self.num_blocks} blocks of width {self.dim} at rank {self.rank}"
            )
        for (block, projection), pair in lora.pairs.items():
            name = _name(block, projection)
            self.down[name].copy_(pair.down)
            self.up[name].copy_(pair.up / self.scale)
