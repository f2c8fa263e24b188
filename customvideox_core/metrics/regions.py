"""What part of each image is scored: all of it, the subject inside its mask, or a crop around it.

ComfyUI layouts: images ``[N, H, W, C]`` float in ``[0, 1]``, masks ``[N, H, W]`` or ``[H, W]`` (1 = subject).

- ``full``: the image as it is.
- ``mask``: ``image · m + fill · (1 − m)`` — outside the mask every pixel becomes ``fill`` (white by
  default, like the pack's reference preparation), so changes there cannot move the score.
- ``crop``: the masked image, cut to the bounding box of ``m > 0.5``, padded to a square with ``fill``
  and resized to ``size × size`` — the subject fills the encoder's view whatever its size in the frame.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from ..reference import check_images as check_reference_images

RegionMode = Literal["full", "mask", "crop"]
REGION_MODES: tuple[str, ...] = get_args(RegionMode)
MASK_THRESHOLD = 0.5
"""A pixel belongs to the subject's bounding box (and makes a mask non-empty) when ``m > 0.5``."""


SCORED_CHANNELS = (3, 4)
"""Channel counts of the images scored (RGB, RGBA; the alpha is dropped)."""


def check_images(images: Tensor, label: str) -> None:
    """Raise a clear error unless ``images`` is a non-empty float ``[N, H, W, C]`` batch with C ∈ {3, 4}
    (:func:`customvideox_core.reference.check_images` with :data:`SCORED_CHANNELS`) of finite values.

    A NaN is blamed on the input that holds it (the frames or the reference), before any encoder runs.
    """
    check_reference_images(images, label, channels=SCORED_CHANNELS)
    finite = torch.isfinite(images).flatten(1).all(dim=1)
    if not bool(finite.all()):
        bad = [int(i) for i in torch.nonzero(~finite).flatten()]
        listed = ", ".join(map(str, bad[:8])) + (" …" if len(bad) > 8 else "")
        raise ValueError(
            f"the {label} input holds NaN or infinite pixel values (image(s) {listed} of {images.shape[0]}); "
            f"scores need finite pixels in [0, 1]. Check the node that made the {label} (a sampler that "
            "diverged gives a NaN latent, which decodes to NaN frames)."
        )


def masks_for(masks: Tensor, count: int, height: int, width: int, label: str) -> Tensor:
    """``masks`` as ``[count, height, width]`` float in ``[0, 1]``.

    One mask serves every image; otherwise there must be one per image. A mask of another size is
    resized (bilinear) to the image's size.
    """
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise ValueError(f"{label} has shape {tuple(masks.shape)}, expected (N, H, W) (ComfyUI MASK).")
    if masks.shape[0] not in (1, count):
        raise ValueError(
            f"{label} holds {masks.shape[0]} masks for {count} images; give one mask for all of them "
            f"or one per image ({count})."
        )
    if not bool(torch.isfinite(masks).all()):
        raise ValueError(f"{label} holds NaN or infinite values; a mask takes values in [0, 1].")
    masks = masks.to(torch.float32).clamp(0.0, 1.0)
    if tuple(masks.shape[1:]) != (height, width):
        masks = F.interpolate(masks[:, None], size=(height, width), mode="bilinear", align_corners=False)[
            :, 0
        ]
    return masks.expand(count, height, width)


def mask_box(mask: Tensor) -> tuple[int, int, int, int] | None:
    """Bounding box ``(top, bottom, left, right)`` (ends exclusive) of the pixels of ``mask`` ``[H, W]``
    above :data:`MASK_THRESHOLD`; ``None`` when there is none."""
    inside = mask > MASK_THRESHOLD
    rows = torch.nonzero(inside.any(dim=1)).flatten()
    cols = torch.nonzero(inside.any(dim=0)).flatten()
    if not rows.numel():
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _square_crop(image: Tensor, mask: Tensor, fill: float, size: int) -> Tensor:
    """``[H, W, C]`` masked image → ``[size, size, C]`` square crop around the mask's bounding box
    (``mask`` has a pixel above the threshold)."""
    top, bottom, left, right = mask_box(mask)  # type: ignore[misc]
    box = image[top:bottom, left:right]
    side = max(box.shape[0], box.shape[1])
    canvas = torch.full((side, side, image.shape[-1]), fill, dtype=image.dtype, device=image.device)
    offset_y, offset_x = (side - box.shape[0]) // 2, (side - box.shape[1]) // 2
    canvas[offset_y : offset_y + box.shape[0], offset_x : offset_x + box.shape[1]] = box
    planes = rearrange(canvas, "h w c -> 1 c h w")
    resized = F.interpolate(planes, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return rearrange(resized, "1 c h w -> h w c").clamp(0.0, 1.0)


def select_region(
    images: Tensor,
    masks: Tensor | None,
    mode: RegionMode,
    *,
    size: int = 224,
    fill: float = 1.0,
    label: str = "images",
) -> Tensor:
    """The part of ``images`` ``[N, H, W, C]`` to score (see the module doc).

    ``full`` → ``images[..., :3]``; ``mask`` → ``[N, H, W, 3]``; ``crop`` → ``[N, size, size, 3]``.
    ``masks``: ``[N | 1, H', W']``, required unless ``mode == "full"``; every mask must have a pixel
    above 0.5. Raises ``ValueError`` naming the input and image that is wrong.
    """
    if mode not in REGION_MODES:
        raise ValueError(f"region {mode!r} is unknown; expected one of {', '.join(REGION_MODES)}.")
    check_images(images, label)
    rgb = images[..., :3].to(torch.float32)
    if mode == "full":
        return rgb
    if masks is None:
        raise ValueError(
            f"region {mode!r} scores inside the subject's mask, but no mask was given for {label}."
        )
    count, height, width = rgb.shape[:3]
    weights = masks_for(masks.to(rgb.device), count, height, width, f"the mask of {label}")
    empty = [index for index in range(count) if not bool((weights[index] > MASK_THRESHOLD).any())]
    if empty:
        raise ValueError(
            f"the mask of {label} is empty (no pixel above {MASK_THRESHOLD}) for image(s) {empty}; "
            "paint the subject, or score the full image (region = full)."
        )
    masked = rgb * weights[..., None] + fill * (1.0 - weights[..., None])
    if mode == "mask":
        return masked
    return torch.stack([_square_crop(masked[i], weights[i], fill, size) for i in range(count)])
