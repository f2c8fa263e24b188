"""Reference preparation: where a known red square lands, white padding, mask compositing, errors."""

import pytest
import torch

from customvideox_core.reference import prepare_reference

RED = torch.tensor([1.0, 0.0, 0.0])
GREY = torch.tensor([0.5, 0.5, 0.5])
WHITE = torch.tensor([1.0, 1.0, 1.0])


def red_square_image(height: int = 10, width: int = 20, top: int = 2, left: int = 8, size: int = 4):
    """``[1, H, W, 3]`` grey image with a red ``size`` square at ``(top, left)``."""
    image = GREY.expand(1, height, width, 3).clone()
    image[:, top : top + size, left : left + size] = RED
    return image


def test_pad_scales_to_fit_and_pads_white_with_zero_mask() -> None:
    image = red_square_image()  # 10 x 20 (H x W) -> scale 2 -> 20 x 40, centred in 40 x 40
    images, masks = prepare_reference(image, None, width=40, height=40, fit="pad")
    assert images.shape == (1, 40, 40, 3) and masks.shape == (1, 40, 40)
    torch.testing.assert_close(images[0, :10], WHITE.expand(10, 40, 3))  # top padding
    torch.testing.assert_close(images[0, 30:], WHITE.expand(10, 40, 3))  # bottom padding
    assert torch.all(masks[0, :10] == 0) and torch.all(masks[0, 30:] == 0)
    assert torch.all(masks[0, 10:30] == 1)
    # The square (rows 2..5, cols 8..11) lands at rows 10 + 4..11, cols 16..23; its interior is pure red.
    torch.testing.assert_close(images[0, 15:21, 17:23], RED.expand(6, 6, 3))
    torch.testing.assert_close(images[0, 12, 2], GREY)
    torch.testing.assert_close(images[0, 27, 36], GREY)


def test_pad_on_the_sides_for_a_tall_image() -> None:
    image = red_square_image(height=20, width=10, top=8, left=3)  # 20 x 10 -> fits 10 x 5 in 10 x 10
    images, masks = prepare_reference(image, None, width=10, height=10, fit="pad")
    torch.testing.assert_close(images[0, :, :2], WHITE.expand(10, 2, 3))  # left padding: (10 - 5) // 2
    torch.testing.assert_close(images[0, :, 7:], WHITE.expand(10, 3, 3))
    assert (
        torch.all(masks[0, :, :2] == 0)
        and torch.all(masks[0, :, 2:7] == 1)
        and torch.all(masks[0, :, 7:] == 0)
    )


def test_crop_without_resize_is_an_exact_centre_crop() -> None:
    image = red_square_image()  # 10 x 20 -> covers 10 x 10 at scale 1, crop columns 5..14
    images, masks = prepare_reference(image, None, width=10, height=10, fit="crop")
    assert images.shape == (1, 10, 10, 3)
    assert torch.equal(images, image[:, :, 5:15])
    torch.testing.assert_close(images[0, 2:6, 3:7], RED.expand(4, 4, 3))
    assert torch.all(masks == 1)


def test_crop_with_downscale() -> None:
    image = red_square_image(height=40, width=80, top=8, left=32, size=16)  # scale 0.25 -> 10 x 20
    images, _ = prepare_reference(image, None, width=10, height=10, fit="crop")
    # The square becomes rows 2..5, cols 8..11 before the crop of columns 5..14: cols 3..6 after it.
    torch.testing.assert_close(images[0, 3:5, 4:6], RED.expand(2, 2, 3))
    torch.testing.assert_close(images[0, 8, 0], GREY)


def test_mask_puts_subject_on_white_background() -> None:
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 6, 8, 3, generator=generator) * 0.8
    mask = torch.zeros(1, 6, 8)
    mask[:, 1:4, 2:6] = 1.0
    mask[:, 5, 0] = 0.25  # soft edge: blended with the background
    images, masks = prepare_reference(image, mask, width=8, height=6)
    inside = mask[0] == 1
    torch.testing.assert_close(images[0][inside], image[0][inside])
    outside = (mask[0] == 0).nonzero()
    for y, x in outside.tolist():
        torch.testing.assert_close(images[0, y, x], WHITE)
    torch.testing.assert_close(images[0, 5, 0], 0.25 * image[0, 5, 0] + 0.75)
    torch.testing.assert_close(masks, mask)


def test_background_value_and_mask_clamp() -> None:
    image = torch.full((1, 4, 4, 3), 0.5)
    mask = torch.full((1, 4, 4), -0.5)
    mask[:, :2] = 1.5
    images, masks = prepare_reference(image, mask, width=4, height=4, background=0.0)
    torch.testing.assert_close(images[0, :2], torch.full((2, 4, 3), 0.5))
    torch.testing.assert_close(images[0, 2:], torch.zeros(2, 4, 3))
    assert masks.min() >= 0.0 and masks.max() <= 1.0
    torch.testing.assert_close(masks[0, :2], torch.ones(2, 4))


def test_several_images_share_one_mask() -> None:
    colours = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    images = colours[:, None, None, :].expand(3, 4, 4, 3).clone()
    mask = torch.zeros(1, 4, 4)
    mask[:, :, :2] = 1.0
    prepared, masks = prepare_reference(images, mask, width=8, height=8, fit="pad")
    assert prepared.shape == (3, 8, 8, 3) and masks.shape == (3, 8, 8)
    for index in range(3):
        torch.testing.assert_close(prepared[index, :, :3], colours[index].expand(8, 3, 3))
        torch.testing.assert_close(prepared[index, :, 5:], WHITE.expand(8, 3, 3))


def test_no_mask_leaves_image_untouched_and_keeps_channels() -> None:
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(2, 5, 7, 4, generator=generator, dtype=torch.float64)
    prepared, masks = prepare_reference(image, None, width=7, height=5)
    assert torch.equal(prepared, image) and prepared.dtype == torch.float64
    assert torch.equal(masks, torch.ones(2, 5, 7, dtype=torch.float64))


@pytest.mark.parametrize(
    ("images", "masks", "kwargs", "message"),
    [
        (torch.ones(0, 4, 4, 3), None, {}, "empty batch"),
        (torch.ones(4, 4, 3), None, {}, r"expected \(N, H, W, C\)"),
        (torch.ones(1, 4, 4, 2), None, {}, "has 2 channels"),
        (torch.ones(3, 4, 4, 3), torch.ones(2, 4, 4), {}, "batch of 2, expected 1 .* or 3"),
        (
            torch.ones(1, 4, 6, 3),
            torch.ones(1, 6, 4),
            {},
            r"\(6, 4\) differs from the image size .* \(4, 6\)",
        ),
        (torch.ones(1, 4, 4, 3), torch.ones(4, 4), {}, r"masks has shape \(4, 4\)"),
        (torch.ones(1, 4, 4, 3), None, {"fit": "stretch"}, "Unknown fit mode 'stretch'"),
        (torch.ones(1, 4, 4, 3), None, {"width": 0}, "width must be a positive integer"),
        (torch.full((1, 4, 4, 3), float("nan")), None, {}, "NaN"),
    ],
)
def test_errors(images, masks, kwargs: dict, message: str) -> None:
    arguments = {"width": 4, "height": 4} | kwargs
    with pytest.raises(ValueError, match=message):
        prepare_reference(images, masks, **arguments)


def test_check_finite_counts_nan_and_inf_and_names_the_input():
    from customvideox_core.reference import check_finite

    check_finite(torch.zeros(3), "fine", "never shown")
    values = torch.tensor([0.0, float("nan"), float("inf"), float("-inf"), float("nan")])
    with pytest.raises(
        ValueError, match=r"^the latents contains 2 NaN and 2 infinite value\(s\) out of 5; fix it"
    ):
        check_finite(values, "the latents", "fix it")


def test_an_all_zero_mask_is_no_mask_and_says_so() -> None:
    """LoadImage's placeholder (64×64 zeros for an image without transparency; issue 21, cases 8 and 17):
    set aside with a note, whatever its size and the invert setting; never a white reference."""
    from customvideox_core.reference import subject_masks

    placeholder = torch.zeros(1, 64, 64)
    for invert in (False, True):
        masks, note = subject_masks(placeholder, invert=invert)
        assert masks is None and "64x64" in note and "all zero" in note and "LoadImage" in note
        assert "Resize" not in note
    assert subject_masks(None, invert=False) == (None, None)


def test_subject_masks_invert_and_refuse_masks_that_select_nothing() -> None:
    from customvideox_core.reference import subject_masks

    drawn = torch.zeros(2, 4, 4)
    drawn[:, 1:3, 1:3] = 1.0
    masks, note = subject_masks(drawn, invert=False)
    assert note is None and torch.equal(masks, drawn)
    masks, note = subject_masks(drawn, invert=True)
    assert note is None and torch.equal(masks, 1.0 - drawn)
    mixed = torch.stack([drawn[0], torch.zeros(4, 4)])
    masks, note = subject_masks(mixed, invert=False)
    assert torch.equal(masks[0], drawn[0]) and torch.equal(masks[1], torch.ones(4, 4))
    assert note.startswith("mask(s) [2] are all zero")
    with pytest.raises(ValueError, match=r"mask\(s\) \[1\] select no subject once inverted"):
        subject_masks(torch.stack([torch.ones(4, 4), drawn[0]]), invert=True)


@pytest.mark.parametrize(("width", "height"), [(72, 64), (20, 64), (96, 40)])
def test_pixel_sizes_must_be_multiples_of_16_with_sizes_that_work(width, height) -> None:
    """Issue 21, case 14: the suggestion must be a size ReferenceEncode accepts."""
    from customvideox_core.reference import check_pixel_size

    with pytest.raises(ValueError, match=f"multiples of 16 pixels .* got {width}x{height}") as caught:
        check_pixel_size(width, height)
    suggested = [
        int(word)
        for word in str(caught.value).split("use e.g. ")[1].replace(",", " ").split()
        if word.isdigit()
    ]
    assert suggested and all(value % 16 == 0 and value >= 16 for value in suggested)
    check_pixel_size(96, 64)
