"""Reference image preparation: subject on a white background, fitted to the video's size.

ComfyUI layouts throughout: images ``[N, H, W, C]`` float in ``[0, 1]``, masks ``[N, H, W]`` (1 = subject).
Several images are several reference frames; ``N`` is kept.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from .constants import SIZE_STEP

FitMode = Literal["pad", "crop"]
FIT_MODES: tuple[str, ...] = get_args(FitMode)
IMAGE_CHANNELS = (1, 3, 4)
"""Channel counts of the images a reference is prepared from (grey, RGB, RGBA)."""


def check_finite(tensor: Tensor, what: str, remedy: str) -> None:
    """Raise ``ValueError`` naming ``what`` and how many values are NaN / infinite, then ``remedy``.

    Nothing downstream may run on such values: attention would sample NaN silently (or fail far from
    the cause, e.g. in ERAE's entity activation).
    """
    finite = torch.isfinite(tensor)
    if bool(finite.all()):
        return
    nan = int(torch.isnan(tensor).sum())
    infinite = int((~finite).sum()) - nan
    raise ValueError(
        f"{what} contains {nan} NaN and {infinite} infinite value(s) out of {tensor.numel()}; {remedy}"
    )


def check_pixel_size(width: int, height: int, *, what: str = "width and height") -> None:
    """Raise ``ValueError`` unless ``width`` and ``height`` are multiples of ``SIZE_STEP`` (8× VAE × patch
    2): the one size rule of the video and its reference (Sample, ReferenceEncode and Train agree)."""
    if width % SIZE_STEP or height % SIZE_STEP:
        near = sorted({max(SIZE_STEP, (width // SIZE_STEP + step) * SIZE_STEP) for step in (0, 1)})
        tall = sorted({max(SIZE_STEP, (height // SIZE_STEP + step) * SIZE_STEP) for step in (0, 1)})
        raise ValueError(
            f"{what} must be multiples of {SIZE_STEP} pixels (the VAE's 8× times the patch size 2), got "
            f"{width}x{height}; use e.g. {near[0]} or {near[-1]} wide and {tall[0]} or {tall[-1]} high, the "
            "same in ReferenceEncode and in Sample (or the empty latent)"
        )


def check_images(images: Tensor, label: str = "images", channels: tuple[int, ...] = IMAGE_CHANNELS) -> None:
    """Raise a ``ValueError`` naming ``label`` unless ``images`` is a non-empty float ``[N, H, W, C]``
    batch (ComfyUI IMAGE) with ``C`` in ``channels``. Shared by the reference preparation and the scores.
    """
    if images.ndim != 4:
        raise ValueError(
            f"{label} has shape {tuple(images.shape)}, expected (N, H, W, C) with C in {channels} "
            "(ComfyUI IMAGE layout; RGB images are expected (N, H, W, 3))."
        )
    if images.shape[0] == 0:
        raise ValueError(f"{label} is an empty batch (N = 0): it holds no image; give at least one.")
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise ValueError(
            f"{label} has shape {tuple(images.shape)}; it holds no image (height and width must be positive)."
        )
    if images.shape[-1] not in channels:
        raise ValueError(
            f"{label} has {images.shape[-1]} channels (shape {tuple(images.shape)}), expected one of "
            f"{channels} in the last dimension (N, H, W, C)."
        )
    if not images.is_floating_point():
        raise ValueError(f"{label} must be a float tensor in [0, 1], got dtype {images.dtype}.")


def subject_masks(
    masks: Tensor | None, *, invert: bool, instead: str = "the whole image is the subject"
) -> tuple[Tensor | None, str | None]:
    """The subject masks ReferenceEncode uses, and a note for the user when a mask was set aside.

    ``masks [N, H, W]`` as connected (1 = subject, or 1 = background with ``invert``). A mask that is all
    zero *as connected* is no mask: it is what LoadImage outputs for an image without transparency (a
    64×64 placeholder of zeros, whatever the image's size), and it selects nothing. When every mask is
    empty this returns ``None`` (the whole image is the subject) with a note saying so; when only some
    are, those become all ones. A mask that selects nothing only after ``invert`` (a mask of all ones:
    the image is fully transparent) is refused. Returns ``(masks or None, note or None)``; ``instead``
    says in the note what is used when every mask is set aside.
    """
    if masks is None:
        return None, None
    if masks.ndim != 3 or masks.shape[0] == 0 or not bool(torch.isfinite(masks).all()):
        return (1.0 - masks if invert else masks), None  # prepare_reference says what is wrong
    empty = (masks.flatten(1) <= 0).all(dim=1)
    if bool(empty.all()):
        return None, (
            f"the mask ({masks.shape[-1]}x{masks.shape[-2]}) is all zero, so it selects no subject; it is "
            f"ignored and {instead}. LoadImage outputs such a mask for an image without "
            "transparency: disconnect it, or give a mask with the subject at 1."
        )
    used = 1.0 - masks if invert else masks
    selects_nothing = (used.flatten(1) <= 0).all(dim=1) & ~empty
    if bool(selects_nothing.any()):
        raise ValueError(
            f"mask(s) {_numbers(selects_nothing)} select no subject once inverted (invert_mask is on and the "
            "mask is 1 everywhere: a fully transparent image?). Turn invert_mask off, or give a mask with the "
            "subject at 1."
        )
    if not bool(empty.any()):
        return used, None
    note = (
        f"mask(s) {_numbers(empty)} are all zero, so they select no subject; for those images the whole image "
        "is the subject."
    )
    return torch.where(empty[:, None, None], torch.ones_like(used), used), note


def _numbers(flags: Tensor) -> list[int]:
    """1-based indices of the true entries of a ``[N]`` bool tensor."""
    return [index + 1 for index in flags.nonzero().flatten().tolist()]


def _check_inputs(images: Tensor, masks: Tensor | None, width: int, height: int, fit: str) -> None:
    check_images(images)
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images contains NaN or infinite values; expected floats in [0, 1].")
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer (pixels), got {value!r}.")
    if fit not in FIT_MODES:
        raise ValueError(f"Unknown fit mode {fit!r}; expected one of {', '.join(FIT_MODES)}.")
    if masks is None:
        return
    if masks.ndim != 3:
        raise ValueError(f"masks has shape {tuple(masks.shape)}, expected (N, H, W) or (1, H, W).")
    count = images.shape[0]
    if masks.shape[0] not in (1, count):
        raise ValueError(
            f"masks has a batch of {masks.shape[0]}, expected 1 (shared) or {count} (one per image)."
        )
    image_size = tuple(images.shape[1:3])
    mask_size = tuple(masks.shape[1:3])
    if mask_size != image_size:
        raise ValueError(
            f"mask size (H, W) = {mask_size} differs from the image size (H, W) = {image_size}. "
            "Resize the mask to the image first (the pack never resizes it silently)."
        )
    if not bool(torch.isfinite(masks).all()):
        raise ValueError("masks contains NaN or infinite values; expected floats in [0, 1].")


def _fitted_size(source: tuple[int, int], target: tuple[int, int], fit: FitMode) -> tuple[int, int]:
    """Size ``(h, w)`` of ``source`` scaled, keeping its aspect, to fit inside (pad) or cover (crop) ``target``."""
    (source_height, source_width), (target_height, target_width) = source, target
    ratios = (target_height / source_height, target_width / source_width)
    scale = min(ratios) if fit == "pad" else max(ratios)
    height = max(1, round(source_height * scale))
    width = max(1, round(source_width * scale))
    if fit == "pad":
        return min(height, target_height), min(width, target_width)
    return max(height, target_height), max(width, target_width)


def _resize(planes: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of ``[N, C, H, W]``, antialiased when shrinking; exact copy when the size is unchanged."""
    if tuple(planes.shape[-2:]) == size:
        return planes
    shrinking = planes.shape[-2] > size[0] or planes.shape[-1] > size[1]
    return F.interpolate(planes, size=size, mode="bilinear", align_corners=False, antialias=shrinking)


def prepare_reference(
    images: Tensor,
    masks: Tensor | None,
    *,
    width: int,
    height: int,
    fit: FitMode = "pad",
    background: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Put the subject on a ``background`` (white) canvas of ``height x width``, keeping its aspect.

    Args:
        images: ``[N, H, W, C]`` float in ``[0, 1]`` (``C`` in 1, 3, 4); ``N`` images = ``N`` reference frames.
        masks: ``[N, H, W]`` or ``[1, H, W]`` (shared) subject mask, 1 = subject, same ``H, W`` as the
            images; values are clamped to ``[0, 1]``. None = all ones (the image is kept as it is).
        width, height: output size in pixels.
        fit: ``"pad"`` scales to fit inside and pads with ``background`` (mask 0 in the padding);
            ``"crop"`` scales to cover and centre-crops.
        background: fill value outside the mask and in the padding (1.0 = white).

    Returns:
        ``(images [N, height, width, C], masks [N, height, width])``: images are
        ``image * mask + background * (1 - mask)`` after fitting, in the input's float dtype.
    """
    _check_inputs(images, masks, width, height, fit)
    count, source_height, source_width, _ = images.shape
    if masks is None:
        masks = torch.ones(count, source_height, source_width, dtype=images.dtype, device=images.device)
    masks = masks.to(device=images.device, dtype=images.dtype).clamp(0.0, 1.0).expand(count, -1, -1)

    mask_planes = masks[:, None]
    image_planes = rearrange(images, "n h w c -> n c h w")
    image_planes = image_planes * mask_planes + background * (1.0 - mask_planes)

    fitted = _fitted_size((source_height, source_width), (height, width), fit)
    image_planes = _resize(image_planes, fitted)
    mask_planes = _resize(mask_planes, fitted).clamp(0.0, 1.0)

    if fit == "pad":
        top, left = (height - fitted[0]) // 2, (width - fitted[1]) // 2
        canvas = image_planes.new_full((count, image_planes.shape[1], height, width), float(background))
        mask_canvas = mask_planes.new_zeros((count, 1, height, width))
        canvas[:, :, top : top + fitted[0], left : left + fitted[1]] = image_planes
        mask_canvas[:, :, top : top + fitted[0], left : left + fitted[1]] = mask_planes
    else:
        top, left = (fitted[0] - height) // 2, (fitted[1] - width) // 2
        canvas = image_planes[:, :, top : top + height, left : left + width]
        mask_canvas = mask_planes[:, :, top : top + height, left : left + width]
    return rearrange(canvas, "n c h w -> n h w c").contiguous(), mask_canvas[:, 0].contiguous()
