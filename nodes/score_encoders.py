"""ComfyUI's encoder objects as the plain functions the metrics core takes.

- CLIP_VISION (``comfy.clip_vision.ClipVisionModel``, from core's Load CLIP Vision): ``encode_image``
  → ``image_embeds``: the projected embedding for CLIP/SigLIP, the normed CLS token for DINOv2/v3.
- CLIP (``comfy.sd.CLIP``): the prompt's *unprojected* pooled feature, then the text model's own
  ``text_projection`` (see ``customvideox_core/metrics/text.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from ..customvideox_core.metrics.text import project_text, select_text_projection

ENCODER_FAMILIES: dict[str, tuple[str, ...]] = {
    "clip_vision": ("clip_vision_model", "siglip_vision_model", "siglip2_vision_model"),
    "dino_vision": ("dinov2", "dinov3"),
}
"""Which ``ClipVisionModel.model_type`` each input of the score node takes."""


def check_family(encoder: object, slot: str) -> None:
    """Refuse a CLIP-vision object of the wrong family for ``slot`` (e.g. a DINOv2 on ``clip_vision``)."""
    model_type = getattr(encoder, "model_type", "clip_vision_model")
    expected = ENCODER_FAMILIES[slot]
    if model_type not in expected:
        other = next(name for name, families in ENCODER_FAMILIES.items() if name != slot)
        hint = f"; wire it to {other}" if model_type in ENCODER_FAMILIES[other] else ""
        raise ValueError(
            f"{slot} got a '{model_type}' model, but it takes {', '.join(expected)}{hint}. "
            "Load CLIP Vision loads both kinds; CLIP-I/T.Cons use clip_vision, DINO-I uses dino_vision."
        )


def image_encoder(encoder: object, *, center_crop: bool) -> Callable[[Tensor], Tensor]:
    """``[N, H, W, 3] → [N, D]`` through ``encoder.encode_image`` (its own resize and normalisation)."""

    def encode(images: Tensor) -> Tensor:
        return encoder.encode_image(images, crop=center_crop)["image_embeds"]

    return encode


def image_embedding_width(encoder: object) -> int:
    """Width of ``encoder``'s ``image_embeds`` (encodes one grey 64×64 image)."""
    import torch

    return int(encoder.encode_image(torch.full((1, 64, 64, 3), 0.5), crop=True)["image_embeds"].shape[-1])


def text_embedding(clip: object, prompt: str, embed_width: int) -> Tensor:
    """The prompt's ``[D]`` embedding in the CLIP joint space (text projection of the pooled feature)."""
    if not prompt.strip():
        raise ValueError("CLIP-T needs the prompt: write it in the prompt input (or disconnect clip).")
    if getattr(clip, "cond_stage_model", None) is None:
        raise ValueError("this CLIP object has no text encoder (tokenizer only); load one with Load CLIP.")
    tokens = clip.tokenize(prompt)
    _, pooled = clip.encode_from_tokens(tokens, return_pooled="unprojected")
    if pooled is None:
        raise ValueError(
            "this text encoder gives no pooled prompt feature, so it has no CLIP text embedding; "
            "CLIP-T needs a CLIP text model (e.g. clip_l or clip_g), not T5/umT5."
        )
    projection = select_text_projection(clip.get_sd(), int(pooled.shape[-1]), embed_width)
    return project_text(pooled, projection)
