"""Training data glue: decode a dataset folder with ComfyUI's libraries and cache its latents.

The core (``customvideox_core.training.data``) pairs the files and checks what was decoded; this module
supplies the decoders (PyAV for video files, Pillow for frame images, subject images and masks), fits the
clips to the training size, prepares the subject exactly as ``CustomVideoXReferenceEncode`` does (white
background outside the mask, aspect-preserving ``pad`` fit), encodes both through the host's VAE and
caches the raw VAE latents.

Cache: one safetensors file per item under ComfyUI's temp folder (``<temp>/customvideox_cache/<key of the
dataset folder>/``), never in the dataset folder; ComfyUI empties its temp folder when it starts, so a
restarted server encodes the items once again. The file name carries a key over the
item's file contents, the training size, the reference fit and a fingerprint of the VAE weights, so a
changed file, size or VAE is re-encoded and an unchanged one is read back.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import comfy.utils
import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from ..customvideox_core.constants import TEMPORAL_COMPRESSION
from ..customvideox_core.reference import check_pixel_size, prepare_reference
from ..customvideox_core.training.data import (
    DatasetItem,
    DatasetItemError,
    Decoders,
    LatentCacheEntry,
    decode_item,
    load_latent_cache,
    save_latent_cache,
    scan_dataset,
)
from .reference_node import encode_frames

logger = logging.getLogger(__name__)

CACHE_FOLDER = "customvideox_cache"
CACHE_VERSION = "1"
REFERENCE_FIT = "pad"
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class TrainDataSettings:
    """Pixel size every clip is fitted to, and how many frames of each clip are used."""

    width: int
    height: int
    length: int

    def __post_init__(self) -> None:
        for name in ("width", "height", "length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        check_pixel_size(self.width, self.height)
        if (self.length - 1) % TEMPORAL_COMPRESSION:
            raise ValueError(
                f"length must be 1 + {TEMPORAL_COMPRESSION}·k frames (the video VAE compresses time 4×), got "
                f"{self.length}; use e.g. 49"
            )


@dataclass(frozen=True)
class PreparedDataset:
    """Encoded items ready for training, and what was left out.

    ``entries[i]`` holds raw VAE latents: ``video_latents [1, C, t, h, w]`` and ``reference_latents
    [1, C, 1, h, w]``; ``names[i]`` is its item name. ``skipped``: ``(path, reason)`` of every file or item
    not used. ``encoded`` / ``from_cache``: how many entries were encoded now / read from the cache.
    """

    folder: Path
    settings: TrainDataSettings
    entries: tuple[LatentCacheEntry, ...]
    names: tuple[str, ...]
    skipped: tuple[tuple[Path, str], ...] = field(default=())
    encoded: int = 0
    from_cache: int = 0

    def summary(self, max_chars: int = 900) -> str:
        """One line for logs and adapter metadata: items, size, and what was skipped and why."""
        size = f"{self.settings.width}x{self.settings.height}x{self.settings.length}"
        text = f"{len(self.entries)} items from {self.folder.name} at {size} ({', '.join(self.names)})"
        if self.skipped:
            reasons = "; ".join(_skip_text(path, reason) for path, reason in self.skipped)
            text += f"; skipped {len(self.skipped)}: {reasons}"
        return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def _skip_text(path: Path, reason: str) -> str:
    """``"name: reason"`` without repeating the name when the reason already starts with it."""
    prefix = f"{path.name}: "
    return reason if reason.startswith(prefix) else f"{prefix}{reason}"


# ---------------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------------


def decode_image(path: Path) -> Tensor:
    """Image file → ``[H, W, 3]`` float in ``[0, 1]`` (EXIF orientation applied, alpha dropped)."""
    with Image.open(path) as image:
        rgb = ImageOps.exif_transpose(image).convert("RGB")
        return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0)


def decode_mask(path: Path) -> Tensor:
    """Mask image → ``[H, W]`` float in ``[0, 1]``: its luminance, white = subject."""
    with Image.open(path) as image:
        grey = ImageOps.exif_transpose(image).convert("L")
        return torch.from_numpy(np.asarray(grey, dtype=np.float32) / 255.0)


def decode_video(path: Path, max_frames: int) -> Tensor:
    """Video file → its first ``max_frames`` frames ``[T, H, W, 3]`` float in ``[0, 1]`` (PyAV)."""
    import av  # ComfyUI ships PyAV; imported here so that the pack loads without it

    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path.name} has no video stream")
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"{path.name} has no decodable frames")
    return torch.from_numpy(np.stack(frames).astype(np.float32) / 255.0)


def comfy_decoders(settings: TrainDataSettings) -> Decoders:
    """The decoders the core calls; video files stop decoding after ``settings.length`` frames."""
    return Decoders(
        video=lambda path: decode_video(path, settings.length), image=decode_image, mask=decode_mask
    )


def fit_frames(frames: Tensor, width: int, height: int) -> Tensor:
    """``[T, H, W, 3]`` → ``[T, height, width, 3]``: centre-crop to the target aspect, then resize
    (bilinear, as ComfyUI's ``common_upscale`` with ``crop="center"``)."""
    if tuple(frames.shape[1:3]) == (height, width):
        return frames
    planes = frames.movedim(-1, 1)
    fitted = comfy.utils.common_upscale(planes, width, height, "bilinear", "center")
    return fitted.movedim(1, -1).clamp(0.0, 1.0)


# ---------------------------------------------------------------------------------------------------
# Cache keys
# ---------------------------------------------------------------------------------------------------


def _file_digest(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.digest()


def _item_files(item: DatasetItem) -> list[Path]:
    if item.video_kind == "frames":
        video_files = sorted(p for p in item.video.iterdir() if p.is_file() and not p.name.startswith("."))
    else:
        video_files = [item.video]
    extras = [p for p in (item.subject_image, item.subject_mask) if p is not None]
    return [*video_files, *extras]


def vae_fingerprint(vae) -> str:
    """Short hash of the VAE's weights: names, shapes, dtypes and the first and last values of each."""
    digest = hashlib.sha256()
    module = getattr(vae, "first_stage_model", None)
    if module is None:
        raise ValueError("this VAE has no first_stage_model; connect the video model's VAE (VAELoader)")
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        edge = torch.cat([flat[:16], flat[-16:]]).to("cpu", torch.float64)
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(edge.numpy().tobytes())
    return digest.hexdigest()[:16]


def cache_key(item: DatasetItem, settings: TrainDataSettings, vae_id: str) -> str:
    """Hex key over the item's file contents (and which role each file plays), the size and the VAE."""
    digest = hashlib.sha256()
    digest.update(
        f"v{CACHE_VERSION}|{settings.width}x{settings.height}x{settings.length}|{REFERENCE_FIT}|{vae_id}".encode()
    )
    digest.update(f"|subject:{item.subject_image is not None}|mask:{item.subject_mask is not None}".encode())
    for path in _item_files(item):
        digest.update(f"|{path.name}|".encode())
        digest.update(_file_digest(path))
    return digest.hexdigest()[:24]


def cache_folder(dataset: Path) -> Path:
    """``<ComfyUI temp>/customvideox_cache/<hash of the dataset's resolved path>``: never inside the
    dataset folder (nothing is written outside ComfyUI's own folders)."""
    import folder_paths

    temp_root = Path(folder_paths.get_temp_directory())
    key = hashlib.sha256(str(dataset.resolve()).encode()).hexdigest()[:16]
    folder = temp_root / CACHE_FOLDER / key
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ---------------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------------


def encode_item(vae, item: DatasetItem, settings: TrainDataSettings) -> tuple[Tensor, Tensor]:
    """Decode, fit and encode one item: ``(video_latents [1, C, t, h, w], reference [1, C, 1, h, w])``.

    Raises :class:`DatasetItemError` for anything wrong with the item itself.
    """
    sample = decode_item(item, comfy_decoders(settings))
    frames = sample.frames
    if frames.shape[0] < settings.length:
        raise DatasetItemError(
            f"{item.name}: the clip has {frames.shape[0]} frames, {settings.length} are needed; "
            "lower length or use a longer clip"
        )
    frames = fit_frames(frames[: settings.length], settings.width, settings.height)
    try:
        subject, _ = prepare_reference(
            sample.subject[None],
            sample.subject_mask[None],
            width=settings.width,
            height=settings.height,
            fit=REFERENCE_FIT,
        )
    except ValueError as error:
        raise DatasetItemError(f"{item.name}: subject cannot be prepared ({error})") from error
    video_latents = vae.encode(frames)
    if video_latents.ndim != 5:
        raise ValueError(
            f"this VAE returned a {video_latents.ndim}-D latent {tuple(video_latents.shape)}; training "
            "needs the video model's VAE (CogVideoX or Wan VAE, [B, C, T, H, W] latents)"
        )
    reference_latents = encode_frames(vae, subject)
    return video_latents, reference_latents


def prepare_dataset(
    vae,
    dataset: Path,
    settings: TrainDataSettings,
    *,
    on_item: Callable[[int, int], None] | None = None,
) -> PreparedDataset:
    """Scan ``dataset``, encode what is not cached yet, and return every usable item's raw latents.

    Bad or unreadable items are logged as warnings and listed in ``skipped``; they are never used.
    ``on_item(done, total)`` reports progress.
    """
    scan = scan_dataset(dataset)
    skipped: list[tuple[Path, str]] = list(scan.skipped)
    if not scan.items:
        return PreparedDataset(
            folder=dataset, settings=settings, entries=(), names=(), skipped=tuple(skipped)
        )
    folder = cache_folder(dataset)
    vae_id = vae_fingerprint(vae)
    entries: list[LatentCacheEntry] = []
    names: list[str] = []
    encoded = from_cache = 0
    for index, item in enumerate(scan.items):
        path = folder / f"{item.name}-{cache_key(item, settings, vae_id)}.safetensors"
        entry = _read_cache(path)
        if entry is not None:
            from_cache += 1
        else:
            try:
                video_latents, reference_latents = encode_item(vae, item, settings)
            except DatasetItemError as error:
                logger.warning("dataset: skipping %s: %s", item.video, error)
                skipped.append((item.video, str(error)))
                if on_item is not None:
                    on_item(index + 1, len(scan.items))
                continue
            meta = {"item": item.name, "size": f"{settings.width}x{settings.height}x{settings.length}"}
            save_latent_cache(path, video_latents, reference_latents, meta)
            entry = LatentCacheEntry(
                video_latents=video_latents, reference_latents=reference_latents, meta=meta
            )
            encoded += 1
        entries.append(entry)
        names.append(item.name)
        if on_item is not None:
            on_item(index + 1, len(scan.items))
    _report(skipped)
    return PreparedDataset(
        folder=dataset,
        settings=settings,
        entries=tuple(entries),
        names=tuple(names),
        skipped=tuple(skipped),
        encoded=encoded,
        from_cache=from_cache,
    )


def _read_cache(path: Path) -> LatentCacheEntry | None:
    if not path.is_file():
        return None
    try:
        return load_latent_cache(path)
    except (ValueError, OSError) as error:
        logger.warning("latent cache %s is unreadable (%s); encoding the item again", path, error)
        return None


def _report(skipped: Iterable[tuple[Path, str]]) -> None:
    skipped = list(skipped)
    if skipped:
        logger.warning(
            "CustomVideoX training data: %d files or items skipped:\n%s",
            len(skipped),
            "\n".join(f"  {path}: {reason}" for path, reason in skipped),
        )
