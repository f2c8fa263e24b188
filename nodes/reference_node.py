"""ReferenceEncode: VAE + IMAGE (+ MASK) → reference latent frames and subject masks."""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io, ui

from ..customvideox_core.reference import check_finite, check_pixel_size, prepare_reference, subject_masks
from .finite_inputs import finite_float_inputs
from .types import ReferenceLatents, ReferenceType
from .widgets import size_inputs

logger = logging.getLogger(__name__)


def encode_frames(vae, images: torch.Tensor) -> torch.Tensor:
    """Encode each image as one latent frame: images ``[R, H, W, 3]`` → latents ``[1, C, R, h, w]``."""
    frames = []
    for index in range(images.shape[0]):
        latent = vae.encode(images[index : index + 1, :, :, :3])
        if latent.ndim != 5:
            raise ValueError(
                f"this VAE returned a {latent.ndim}-D latent {tuple(latent.shape)}; CustomVideoX needs the "
                "video VAE of the model (CogVideoX or Wan VAE, [B, C, T, H, W] latents)"
            )
        frames.append(latent[:, :, :1])
    latents = torch.cat(frames, dim=2)
    check_finite(
        latents,
        f"the latents this VAE ({vae_description(vae)}) encoded from the reference image(s)",
        "the VAE's weights are broken or it overflowed in its precision (fp16 VAEs do): load the VAE in "
        "bfloat16 or float32 (ComfyUI's --bf16-vae / --fp32-vae, or a VAE loader's dtype option) or use "
        "another VAE file",
    )
    return latents


def vae_description(vae) -> str:
    """``"AutoencoderKLCogVideoX, torch.float16"``: the VAE's model class and the dtype it runs in."""
    model = getattr(vae, "first_stage_model", vae)
    dtype = getattr(vae, "vae_dtype", None)
    if dtype is None:
        dtype = next((parameter.dtype for parameter in model.parameters()), "unknown dtype")
    return f"{type(model).__name__}, {dtype}"


@finite_float_inputs
class CustomVideoXReferenceEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CustomVideoXReferenceEncode",
            display_name="CustomVideoX ReferenceEncode",
            category="CustomVideoX",
            description=(
                "Encodes the subject's reference image(s) with the model's own VAE. The subject is put on a "
                "white background outside its mask and fitted to the video size; several images become "
                "several reference frames."
            ),
            inputs=[
                io.Vae.Input("vae", tooltip="The video model's VAE (the same one that decodes the video)."),
                io.Image.Input("image", tooltip="One or more reference images of the subject."),
                *size_inputs(max_size=4096, width_note=" (the reference is fitted to it)"),
                io.Combo.Input(
                    "fit",
                    options=["pad", "crop"],
                    default="pad",
                    tooltip="pad: keep the whole image, pad with white; crop: fill and centre-crop.",
                ),
                io.Boolean.Input(
                    "invert_mask",
                    default=False,
                    tooltip="Turn this on when the mask is 1 on the background, e.g. the mask "
                    "output of LoadImage for a cut-out PNG (its alpha is the subject).",
                ),
                io.Mask.Input(
                    "mask",
                    optional=True,
                    tooltip="Subject mask (1 = subject), same size as the image. "
                    "Without one (or with an all-zero mask, as LoadImage gives for an image without "
                    "transparency) the whole image is the subject.",
                ),
            ],
            outputs=[ReferenceType.Output("reference", tooltip="Reference latents and subject masks.")],
        )

    @classmethod
    def execute(
        cls, vae, image, width: int, height: int, fit: str, invert_mask: bool, mask=None
    ) -> io.NodeOutput:
        check_pixel_size(width, height)
        mask, note = subject_masks(mask, invert=invert_mask)
        if note:
            logger.warning("CustomVideoX ReferenceEncode: %s", note)
        images, masks = prepare_reference(image, mask, width=width, height=height, fit=fit)
        latents = encode_frames(vae, images)
        reference = ReferenceLatents(
            latents=latents, masks=masks, source_size=tuple(image.shape[1:3]), fit=fit
        )
        preview = ui.PreviewImage(images, cls=cls).as_dict()
        return io.NodeOutput(reference, ui={**preview, "text": (note,)} if note else preview)
