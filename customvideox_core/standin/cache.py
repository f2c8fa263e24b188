"""The reference K/V cache: one :class:`~.branch.ReferenceKV` per sampling and expert.

One cache belongs to one Stand-In patch (one reference, one LoRA file, one strength), so those are not
part of the key. What else the reference K/V depend on (see :mod:`.branch`): the DiT module (Wan 2.2's two
experts are two modules: two entries), the video's token grid (RoPE offsets), and the device and dtype it
ran in. The prompt is not in the key: the reference tokens never read the text. The node glue clears the
cache at the start of every sampling, so weights patched between two samplings are picked up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from .branch import ReferenceKV

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReferenceKVKey:
    model: int
    video_grid: tuple[int, int, int]
    device: str
    dtype: str


class ReferenceKVCache:
    """Compute-once store of reference K/V; ``computed`` / ``reused`` count what happened."""

    def __init__(self) -> None:
        self._entries: dict[ReferenceKVKey, ReferenceKV] = {}
        self.computed = 0
        self.reused = 0

    def get(self, key: ReferenceKVKey, compute: Callable[[], ReferenceKV]) -> ReferenceKV:
        entry = self._entries.get(key)
        if entry is None:
            entry = compute()
            self._entries[key] = entry
            self.computed += 1
            logger.debug("Stand-In reference K/V computed for %s", key)
        else:
            self.reused += 1
        return entry

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
