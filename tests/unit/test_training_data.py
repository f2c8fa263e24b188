"""Dataset scanning, decoding through given decoders, and the latent cache."""

import os
import pickle
from pathlib import Path

import pytest
import torch

from customvideox_core.training import (
    DatasetItemError,
    Decoders,
    LatentCacheEntry,
    decode_item,
    iter_decoded,
    load_latent_cache,
    save_latent_cache,
    scan_dataset,
)


def touch(folder: Path, name: str, content: bytes = b"data") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


@pytest.fixture
def dataset(tmp_path):
    touch(tmp_path, "dog.mp4")
    touch(tmp_path, "dog.png")
    touch(tmp_path, "dog_mask.png")
    touch(tmp_path, "dog.txt", b"  a corgi running on a beach \n")
    touch(tmp_path, "cat.webm")  # video alone + mask: first frame is the subject
    touch(tmp_path, "cat_mask.png")
    touch(tmp_path, "bird/frame_10.png")  # frame folder, natural order
    touch(tmp_path, "bird/frame_2.png")
    touch(tmp_path, "bird/frame_1.png")
    touch(tmp_path, "bird.jpg")
    touch(tmp_path, "fish.gif")  # video alone, no mask: unusable
    touch(tmp_path, "lonely.png")  # image without a video
    touch(tmp_path, "twin.mp4")  # two videos with one name
    touch(tmp_path, "twin.webm")
    touch(tmp_path, "twin.png")
    touch(tmp_path, "empty.mp4", b"")  # unreadable
    touch(tmp_path, "empty.png")
    touch(tmp_path, "few/frame_1.png")  # one frame is not a video
    touch(tmp_path, "few.png")
    touch(tmp_path, "notes.md")
    touch(tmp_path, ".hidden.mp4")
    return tmp_path


def test_scan_pairs_items_and_reports_everything_else(dataset):
    scan = scan_dataset(dataset)
    items = {item.name: item for item in scan.items}
    assert sorted(items) == ["bird", "cat", "dog"]

    dog = items["dog"]
    assert (dog.video, dog.video_kind) == (dataset / "dog.mp4", "file")
    assert (dog.subject_image, dog.subject_mask) == (dataset / "dog.png", dataset / "dog_mask.png")
    assert dog.caption == "a corgi running on a beach"
    cat = items["cat"]
    assert cat.subject_image is None and cat.subject_mask == dataset / "cat_mask.png" and cat.caption is None
    bird = items["bird"]
    assert (bird.video, bird.video_kind, bird.subject_image) == (
        dataset / "bird",
        "frames",
        dataset / "bird.jpg",
    )

    skipped = {path.name: reason for path, reason in scan.skipped}
    assert set(skipped) == {
        "fish.gif",
        "lonely.png",
        "twin.mp4",
        "twin.webm",
        "twin.png",
        "empty.mp4",
        "few",
        "notes.md",
    }
    assert "no subject image fish.png and no mask fish_mask.png" in skipped["fish.gif"]
    assert "no video named 'lonely'" in skipped["lonely.png"]
    assert "several videos" in skipped["twin.mp4"] and "several videos" in skipped["twin.png"]
    assert "empty file" in skipped["empty.mp4"]
    assert "1 frame images" in skipped["few"]
    assert "not a video" in skipped["notes.md"]


def test_scan_of_a_missing_folder_says_so(tmp_path):
    with pytest.raises(NotADirectoryError, match="nowhere"):
        scan_dataset(tmp_path / "nowhere")


def test_scan_reports_duplicate_subject_images(tmp_path):
    touch(tmp_path, "dog.mp4")
    touch(tmp_path, "dog.png")
    touch(tmp_path, "dog.jpg")
    scan = scan_dataset(tmp_path)
    assert scan.items == ()
    assert {path.name for path, _ in scan.skipped} == {"dog.mp4", "dog.png", "dog.jpg"}
    assert all("several subject images" in reason for _, reason in scan.skipped)


def fake_decoders(frame_size=(4, 6), subject_size=(4, 6), mask_size=(4, 6), fail_on=None):
    def check(path):
        if fail_on is not None and Path(path).name == fail_on:
            raise RuntimeError("corrupt stream")

    def video(path):
        check(path)
        return torch.full((5, *frame_size, 3), 0.25)

    def image(path):
        check(path)
        size = frame_size if Path(path).parent.name == "bird" else subject_size
        return torch.full((*size, 3), 0.75)

    def mask(path):
        check(path)
        return torch.zeros(mask_size)

    return Decoders(video=video, image=image, mask=mask)


def test_decode_uses_first_frame_when_no_subject_image(dataset):
    items = {item.name: item for item in scan_dataset(dataset).items}
    cat = decode_item(items["cat"], fake_decoders())
    assert cat.frames.shape == (5, 4, 6, 3)
    assert torch.equal(cat.subject, cat.frames[0])
    assert torch.equal(cat.subject_mask, torch.zeros(4, 6))
    bird = decode_item(items["bird"], fake_decoders())
    assert bird.frames.shape == (3, 4, 6, 3)
    assert torch.equal(bird.subject_mask, torch.ones(4, 6))  # no mask: all of the subject counts


def test_decode_refuses_mismatched_masks_and_failing_decoders(dataset):
    items = {item.name: item for item in scan_dataset(dataset).items}
    with pytest.raises(DatasetItemError, match="mask is"):
        decode_item(items["dog"], fake_decoders(mask_size=(8, 8)))
    with pytest.raises(DatasetItemError, match="corrupt stream"):
        decode_item(items["dog"], fake_decoders(fail_on="dog.mp4"))


def test_iter_decoded_skips_and_reports_bad_items(dataset):
    scan = scan_dataset(dataset)
    reported = []
    samples = list(
        iter_decoded(scan.items, fake_decoders(fail_on="cat.webm"), lambda p, r: reported.append((p, r)))
    )
    assert [sample.item.name for sample in samples] == ["bird", "dog"]
    assert [path.name for path, _ in reported] == ["cat.webm"]


def test_latent_cache_round_trip(tmp_path):
    video = torch.randn(1, 4, 3, 2, 2)
    reference = torch.randn(1, 4, 1, 2, 2)
    context = torch.randn(1, 7, 8)
    path = save_latent_cache(
        tmp_path / "dog.safetensors",
        video,
        reference,
        {"caption": "a corgi"},
        extra_tensors={"context": context},
    )
    entry = load_latent_cache(path)
    assert isinstance(entry, LatentCacheEntry)
    assert torch.equal(entry.video_latents, video) and torch.equal(entry.reference_latents, reference)
    assert dict(entry.meta) == {"caption": "a corgi"}
    assert torch.equal(entry.extra_tensors["context"], context)


def test_latent_cache_refuses_foreign_files_and_reserved_keys(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        save_latent_cache(tmp_path / "x.safetensors", torch.zeros(1), torch.zeros(1), {"format": "mine"})
    from safetensors.torch import save_file

    save_file({"video_latents": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a CustomVideoX latent cache"):
        load_latent_cache(tmp_path / "other.safetensors")
    (tmp_path / "cache.pt").write_bytes(pickle.dumps({"video_latents": 1}))
    with pytest.raises(ValueError, match="pickle"):
        load_latent_cache(tmp_path / "cache.pt")


@pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")
def test_scan_skips_links_that_lead_outside_the_dataset(tmp_path):
    """A dataset inside an allowed folder cannot pull in files from elsewhere through links."""
    outside = tmp_path / "outside"
    secret_frame = touch(outside, "secret.png")
    root = tmp_path / "dataset"
    touch(root, "dog.mp4")
    touch(root, "dog.png")
    (root / "cat.mp4").symlink_to(touch(outside, "cat.mp4"))
    touch(root, "cat.png")
    touch(root, "bird/1.png")
    touch(root, "bird/2.png")
    (root / "bird" / "3.png").symlink_to(secret_frame)
    touch(root, "bird.png")
    scan = scan_dataset(root)
    assert [item.name for item in scan.items] == ["bird", "dog"]
    assert (
        root / "cat.mp4",
        "a link that leads outside the dataset folder; copy the file in instead",
    ) in scan.skipped
    from customvideox_core.training.data import _frame_files

    assert [path.name for path in _frame_files(root / "bird")] == ["1.png", "2.png"]
