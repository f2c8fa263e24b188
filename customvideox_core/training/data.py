"""Training data: scan a dataset folder, decode items through given decoders, cache latents.

Folder layout (flat; names are matched by stem):

- ``<name>.mp4|.webm|.gif|.mov|.mkv`` or a folder ``<name>/`` of at least two frame images: the video;
- ``<name>.png|.jpg|.jpeg|.webp``: the subject image (optional when a mask is given);
- ``<name>_mask.png``: the subject mask (optional with a subject image; with a video alone, the subject
  is the video's first frame inside this mask);
- ``<name>.txt``: the caption (optional).

Anything that does not fit is reported in :attr:`DatasetScan.skipped` with a reason, never used; so is a
link that leads out of the dataset folder (the folder itself is confined by ``safe_paths``).
Decoding is done by callables the caller passes in (the node passes ComfyUI's decoders), so the core
needs no video library.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from ..adapter_file import read_safetensors, write_safetensors_atomic
from ..safe_paths import is_inside

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".webm", ".gif", ".mov", ".mkv"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
CAPTION_SUFFIX = ".txt"
MASK_SUFFIX = "_mask"
LATENT_CACHE_FORMAT = "customvideox.latent_cache.v1"
_FORMAT_KEY = "format"
_EXTRA_TENSOR_PREFIX = "extra."


@dataclass(frozen=True)
class DatasetItem:
    """One training sample on disk. ``subject_image`` is ``None`` when the first frame is the subject."""

    name: str
    video: Path
    video_kind: Literal["file", "frames"]
    subject_image: Path | None = None
    subject_mask: Path | None = None
    caption: str | None = None


@dataclass(frozen=True)
class DatasetScan:
    """Usable items (sorted by name) and ``(path, reason)`` for everything skipped."""

    items: tuple[DatasetItem, ...]
    skipped: tuple[tuple[Path, str], ...] = field(default=())


def _natural_key(path: Path) -> list[object]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _frame_files(folder: Path) -> list[Path]:
    """The frame images of a frame folder; links that lead out of it are left out."""
    return sorted(
        (
            p
            for p in folder.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and is_inside(p, folder)
        ),
        key=_natural_key,
    )


def _unreadable_reason(path: Path) -> str | None:
    try:
        if path.stat().st_size == 0:
            return "empty file"
        with path.open("rb") as stream:
            stream.read(1)
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    return None


def scan_dataset(root: str | os.PathLike[str]) -> DatasetScan:
    """Pair videos with subject images, masks and captions under ``root`` (see module docstring)."""
    folder = Path(root)
    if not folder.is_dir():
        raise NotADirectoryError(f"dataset folder {folder} does not exist or is not a folder")
    videos: dict[str, list[Path]] = {}
    images: dict[str, list[Path]] = {}
    masks: dict[str, list[Path]] = {}
    captions: dict[str, Path] = {}
    skipped: list[tuple[Path, str]] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if not is_inside(entry, folder):
            skipped.append((entry, "a link that leads outside the dataset folder; copy the file in instead"))
            continue
        suffix = entry.suffix.lower()
        if entry.is_dir():
            videos.setdefault(entry.name, []).append(entry)
        elif suffix in VIDEO_SUFFIXES:
            videos.setdefault(entry.stem, []).append(entry)
        elif suffix in IMAGE_SUFFIXES and entry.stem.endswith(MASK_SUFFIX):
            masks.setdefault(entry.stem[: -len(MASK_SUFFIX)], []).append(entry)
        elif suffix in IMAGE_SUFFIXES:
            images.setdefault(entry.stem, []).append(entry)
        elif suffix == CAPTION_SUFFIX:
            captions[entry.stem] = entry
        else:
            skipped.append((entry, "not a video, frame folder, image, mask or caption"))

    items: list[DatasetItem] = []
    for name in sorted(set(videos) | set(images) | set(masks)):
        item, reasons = _pair(name, videos.get(name, []), images.get(name, []), masks.get(name, []), captions)
        skipped.extend(reasons)
        if item is not None:
            items.append(item)
    for name, caption in captions.items():
        if name not in videos:
            skipped.append((caption, f"caption without a video named {name!r}"))
    for path, reason in skipped:
        logger.info("dataset: skipping %s: %s", path, reason)
    return DatasetScan(items=tuple(items), skipped=tuple(skipped))


def _pair(
    name: str,
    videos: list[Path],
    images: list[Path],
    masks: list[Path],
    captions: Mapping[str, Path],
) -> tuple[DatasetItem | None, list[tuple[Path, str]]]:
    """One item from the files sharing ``name``, or ``None`` and the reasons it was refused."""
    every_file = [*videos, *images, *masks]
    if len(videos) != 1:
        reason = f"several videos are named {name!r}; keep one" if videos else f"no video named {name!r}"
        return None, [(path, reason) for path in every_file]
    for kind, found in (("subject images", images), ("masks", masks)):
        if len(found) > 1:
            return None, [(path, f"several {kind} for {name!r}; keep one") for path in every_file]
    video = videos[0]
    if video.is_dir():
        frames = _frame_files(video)
        if len(frames) < 2:
            return None, [(video, f"frame folder has {len(frames)} frame images; at least 2 are needed")]
        problems = [reason for reason in map(_unreadable_reason, frames) if reason]
        video_kind: Literal["file", "frames"] = "frames"
    else:
        problems = [reason for reason in [_unreadable_reason(video)] if reason]
        video_kind = "file"
    for path in (*images, *masks):
        reason = _unreadable_reason(path)
        if reason:
            problems.append(f"{path.name}: {reason}")
    if problems:
        return None, [(video, f"unreadable: {'; '.join(problems)}")]
    if not images and not masks:
        return None, [(video, f"no subject image {name}.png and no mask {name}_mask.png; add one of them")]
    caption = None
    if name in captions:
        caption = captions[name].read_text(encoding="utf-8", errors="replace").strip() or None
    item = DatasetItem(
        name=name,
        video=video,
        video_kind=video_kind,
        subject_image=images[0] if images else None,
        subject_mask=masks[0] if masks else None,
        caption=caption,
    )
    return item, []


@dataclass(frozen=True)
class Decoders:
    """Decoding callables supplied by the host.

    ``video(path) -> [T, H, W, 3]``, ``image(path) -> [H, W, 3]``, ``mask(path) -> [H, W]``; floats in
    ``[0, 1]``. Each raises on a file it cannot decode.
    """

    video: Callable[[Path], Tensor]
    image: Callable[[Path], Tensor]
    mask: Callable[[Path], Tensor]


@dataclass(frozen=True)
class DecodedSample:
    """``frames [T, H, W, 3]``, ``subject [H', W', 3]``, ``subject_mask [H', W']`` (ones when none)."""

    item: DatasetItem
    frames: Tensor
    subject: Tensor
    subject_mask: Tensor


class DatasetItemError(ValueError):
    """A dataset item whose files decode but do not fit together (or do not decode at all)."""


def decode_item(item: DatasetItem, decoders: Decoders) -> DecodedSample:
    """Decode one item and check that its parts fit; raises :class:`DatasetItemError` saying why not."""
    try:
        if item.video_kind == "frames":
            images = [decoders.image(path) for path in _frame_files(item.video)]
            sizes = {tuple(image.shape) for image in images}
            if len(sizes) != 1:
                raise DatasetItemError(f"frames of {item.video} differ in size: {sorted(sizes)}")
            frames = torch.stack(images)
        else:
            frames = decoders.video(item.video)
        subject = frames[0] if item.subject_image is None else decoders.image(item.subject_image)
        mask = None if item.subject_mask is None else decoders.mask(item.subject_mask)
    except DatasetItemError:
        raise
    except Exception as error:  # decoders are host code: any failure means "this item is unusable"
        raise DatasetItemError(f"{item.name}: could not decode ({type(error).__name__}: {error})") from error
    if frames.ndim != 4 or frames.shape[0] < 1 or frames.shape[-1] != 3:
        raise DatasetItemError(
            f"{item.name}: video decoded to shape {tuple(frames.shape)}, expected [T, H, W, 3]"
        )
    if subject.ndim != 3 or subject.shape[-1] != 3:
        raise DatasetItemError(
            f"{item.name}: subject decoded to shape {tuple(subject.shape)}, expected [H, W, 3]"
        )
    if mask is None:
        mask = torch.ones(subject.shape[:2], dtype=subject.dtype)
    elif tuple(mask.shape) != tuple(subject.shape[:2]):
        raise DatasetItemError(
            f"{item.name}: mask is {tuple(mask.shape)} but the subject is {tuple(subject.shape[:2])}; "
            "the mask must have the subject image's size"
        )
    return DecodedSample(item=item, frames=frames, subject=subject, subject_mask=mask)


def iter_decoded(
    items: tuple[DatasetItem, ...] | list[DatasetItem],
    decoders: Decoders,
    on_skip: Callable[[Path, str], None] | None = None,
) -> Iterator[DecodedSample]:
    """Decode ``items`` one at a time, skipping (and reporting through ``on_skip``) those that fail."""
    for item in items:
        try:
            yield decode_item(item, decoders)
        except DatasetItemError as error:
            logger.warning("dataset: skipping %s: %s", item.video, error)
            if on_skip is not None:
                on_skip(item.video, str(error))


@dataclass(frozen=True)
class LatentCacheEntry:
    """Encoded sample: ``video_latents [B, C, T, H, W]``, ``reference_latents [B, C, R, H, W]``, string
    metadata, and any extra tensors (e.g. text embeddings) the host wants to keep with it."""

    video_latents: Tensor
    reference_latents: Tensor
    meta: Mapping[str, str] = field(default_factory=dict)
    extra_tensors: Mapping[str, Tensor] = field(default_factory=dict)


def save_latent_cache(
    path: str | os.PathLike[str],
    video_latents: Tensor,
    reference_latents: Tensor,
    meta: Mapping[str, str],
    *,
    extra_tensors: Mapping[str, Tensor] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write one cache entry as safetensors (atomically). ``meta`` must map strings to strings."""
    if _FORMAT_KEY in meta:
        raise ValueError(f"latent cache metadata may not use the reserved key {_FORMAT_KEY!r}")
    if not all(isinstance(key, str) and isinstance(value, str) for key, value in meta.items()):
        raise ValueError("latent cache metadata must map strings to strings")
    tensors = {"video_latents": video_latents, "reference_latents": reference_latents}
    tensors.update({f"{_EXTRA_TENSOR_PREFIX}{key}": tensor for key, tensor in (extra_tensors or {}).items()})
    header = {_FORMAT_KEY: LATENT_CACHE_FORMAT, **meta}
    return write_safetensors_atomic(path, tensors, header, overwrite=overwrite)


def load_latent_cache(path: str | os.PathLike[str]) -> LatentCacheEntry:
    """Read an entry written by :func:`save_latent_cache`; ``ValueError`` naming the file otherwise."""
    tensors, header = read_safetensors(path)
    if header.get(_FORMAT_KEY) != LATENT_CACHE_FORMAT or not {"video_latents", "reference_latents"} <= set(
        tensors
    ):
        raise ValueError(
            f"{path} is not a CustomVideoX latent cache ({LATENT_CACHE_FORMAT}); delete it to re-encode"
        )
    meta = {key: value for key, value in header.items() if key != _FORMAT_KEY}
    extra = {
        key[len(_EXTRA_TENSOR_PREFIX) :]: tensor
        for key, tensor in tensors.items()
        if key.startswith(_EXTRA_TENSOR_PREFIX)
    }
    return LatentCacheEntry(
        video_latents=tensors["video_latents"],
        reference_latents=tensors["reference_latents"],
        meta=meta,
        extra_tensors=extra,
    )
