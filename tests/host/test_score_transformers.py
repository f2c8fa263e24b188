"""CLIP-I and DINO-I against an independent implementation: ``transformers``' CLIPVisionModelWithProjection
and Dinov2Model with the same tiny random weights, fed by their own image processors.

The weights are the ones ComfyUI's ``ClipVisionModel`` holds (``get_sd()``: ComfyUI keeps image encoders
in float16 and computes in float32), saved as a Hugging Face folder and loaded with ``from_pretrained`` in
float32 — the path a real ``facebook/dinov2-large`` or CLIP checkpoint takes. What differs, and is
documented in ``docs/METRICS.md`` ("Checked against transformers"):

- at the encoder's own size (no resize) the two pipelines see the same pixels: scores agree to 1e-4;
- a resized frame goes through two bicubic resamplers (torch with antialias on floats, then rounded to
  8 bits, in ComfyUI; Pillow on 8-bit images in transformers), so pixels may differ by one 8-bit level;
- DINOv2: ComfyUI shows the model a 518×518 view (its config's ``image_size``), transformers' processor
  for ``facebook/dinov2-*`` a 224×224 crop of a 256 resize. With the processor set to 518 the scores
  agree to 1e-4; with its default they differ.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.fixture(scope="module")
def encoders(comfy_host, pack_module, tiny_encoders):
    from tiny_models import load_tiny_clip_vision

    clip = load_tiny_clip_vision(tiny_encoders.folder / tiny_encoders.clip_vision)
    dino = load_tiny_clip_vision(tiny_encoders.folder / tiny_encoders.dinov2)
    return clip, dino


def hugging_face_twin(model, model_class, config, folder):
    """``model``'s weights (as ComfyUI holds them) in ``model_class``, loaded from a saved folder."""
    import safetensors.torch

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.contiguous() for name, tensor in model.get_sd().items()}
    safetensors.torch.save_file(tensors, str(folder / "model.safetensors"))
    config.save_pretrained(folder)
    return model_class.from_pretrained(folder, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def twins(encoders, tmp_path_factory):
    from tiny_models import TINY_CLIP_VISION_CONFIG, TINY_DINOV2_CONFIG
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, Dinov2Config, Dinov2Model

    clip, dino = encoders
    folder = tmp_path_factory.mktemp("hf_twins")
    clip_config = CLIPVisionConfig(**{k: v for k, v in TINY_CLIP_VISION_CONFIG.items() if k != "model_type"})
    dropped = ("model_type", "image_mean", "image_std")
    dino_config = Dinov2Config(**{k: v for k, v in TINY_DINOV2_CONFIG.items() if k not in dropped})
    return (
        hugging_face_twin(clip, CLIPVisionModelWithProjection, clip_config, folder / "clip"),
        hugging_face_twin(dino, Dinov2Model, dino_config, folder / "dino"),
    )


def eight_bit(count: int, height: int, width: int, seed: int) -> torch.Tensor:
    """Images whose values are 8-bit levels, so a PIL image holds them exactly."""
    noise = torch.rand(count, height, width, 3, generator=torch.Generator().manual_seed(seed))
    return (noise * 255).round() / 255


def pil_images(images: torch.Tensor) -> list:
    from PIL import Image

    return [Image.fromarray((image.numpy() * 255).round().astype("uint8")) for image in images]


def clip_processor(side: int):
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})


def dino_processor(resize: int, crop: int):
    from transformers import BitImageProcessor

    return BitImageProcessor(
        size={"shortest_edge": resize},
        crop_size={"height": crop, "width": crop},
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )


def transformers_identity(model, processor, references, frames, output: str) -> list[float]:
    """Per frame, the mean over references of the cosine of ``model``'s embeddings (float64)."""
    with torch.no_grad():
        embeds = [
            getattr(
                model(pixel_values=processor(images=pil_images(batch), return_tensors="pt").pixel_values),
                output,
            )
            .double()
            .tolist()
            for batch in (references, frames)
        ]

    def cos(a, b):
        dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
        return dot / math.sqrt(math.fsum(x * x for x in a) * math.fsum(y * y for y in b))

    reference_embeds, frame_embeds = embeds
    return [sum(cos(r, f) for r in reference_embeds) / len(reference_embeds) for f in frame_embeds]


def pack_scores(comfy_host, frames, references, clip, dino) -> dict:
    node = comfy_host.node_class("CustomVideoXScore")
    output = node.execute(frames, references, clip, "full", 1, True, dino_vision=dino)
    return json.loads(output.args[4])


def test_at_the_encoders_own_size_clip_i_and_dino_i_agree_to_1e_4(comfy_host, encoders, twins) -> None:
    clip, dino = encoders
    hf_clip, hf_dino = twins
    side = clip.image_size
    frames, references = eight_bit(4, side, side, seed=1), eight_bit(2, side, side, seed=2)
    summary = pack_scores(comfy_host, frames, references, clip, dino)
    expected_clip = transformers_identity(hf_clip, clip_processor(side), references, frames, "image_embeds")
    assert summary["per_frame"]["clip_i"] == pytest.approx(expected_clip, abs=1e-4)
    dino_side = dino.image_size  # 518: ComfyUI's DINOv2 view
    frames = eight_bit(3, dino_side, dino_side, seed=3)
    references = eight_bit(1, dino_side, dino_side, seed=4)
    summary = pack_scores(comfy_host, frames, references, clip, dino)
    expected_dino = transformers_identity(
        hf_dino, dino_processor(dino_side, dino_side), references, frames, "pooler_output"
    )
    assert summary["per_frame"]["dino_i"] == pytest.approx(expected_dino, abs=1e-4)


def test_resized_frames_differ_by_the_two_resamplers_only(comfy_host, encoders, twins) -> None:
    """480×720 frames: both scale the short side to the encoder's size (same output size) with bicubic
    antialiasing; the pixels may differ by one 8-bit level, so the scores agree only to about 1e-3."""
    import comfy.clip_model

    clip, dino = encoders
    hf_clip, hf_dino = twins
    frames, references = eight_bit(3, 480, 720, seed=5), eight_bit(1, 480, 720, seed=6)
    side = clip.image_size
    ours = comfy.clip_model.clip_preprocess(frames, size=side)
    theirs = clip_processor(side)(images=pil_images(frames), return_tensors="pt").pixel_values
    assert ours.shape == theirs.shape
    one_level = 1 / 255 / min(clip.image_std)
    assert float((ours - theirs).abs().max()) <= one_level + 1e-6
    summary = pack_scores(comfy_host, frames, references, clip, dino)
    expected = transformers_identity(hf_clip, clip_processor(side), references, frames, "image_embeds")
    assert summary["per_frame"]["clip_i"] == pytest.approx(expected, abs=1e-3)
    # DINOv2 with transformers' own default view (256 → 224 crop) is another picture: another score.
    default_view = transformers_identity(
        hf_dino, dino_processor(256, 224), references, frames, "pooler_output"
    )
    comfy_view = transformers_identity(hf_dino, dino_processor(518, 518), references, frames, "pooler_output")
    assert summary["per_frame"]["dino_i"] == pytest.approx(comfy_view, abs=1e-3)
    assert max(abs(a - b) for a, b in zip(default_view, summary["per_frame"]["dino_i"], strict=True)) > 1e-3
