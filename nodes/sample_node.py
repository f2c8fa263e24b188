"""Sample: the all-in-one sampler — patch the model with the reference, sample, return the video latent."""

from __future__ import annotations

from dataclasses import dataclass

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch
from comfy_api.latest import io

from ..customvideox_core.constants import SEED_MAX
from ..customvideox_core.guidance import ReferenceGuidance
from ..customvideox_core.ranges import GUIDANCE_SCALE
from ..customvideox_core.reference import check_pixel_size
from .finite_inputs import finite_float_inputs
from .patch_model import patch_model
from .reference_guider import reference_guider
from .types import ReferenceType
from .widgets import Bounds, bias_inputs, float_input, length_input, model_input, size_inputs, uncond_input

MAX_SIZE = 8192


def empty_video_latent(model, width: int, height: int, length: int) -> dict:
    """``{"samples": [1, C, T, H/s, W/s]}`` for the model's latent format (T = (length − 1) / t + 1)."""
    latent_format = model.get_model_object("latent_format")
    spatial = getattr(latent_format, "spacial_downscale_ratio", 8)
    temporal = getattr(latent_format, "temporal_downscale_ratio", 4)
    frames = (length - 1) // temporal + 1
    samples = torch.zeros(
        [1, latent_format.latent_channels, frames, height // spatial, width // spatial],
        device=comfy.model_management.intermediate_device(),
    )
    return {"samples": samples}


@dataclass(frozen=True)
class SamplerSettings:
    """Sample's sampler widgets. ``cfg`` is the text guidance scale; ``image_cfg`` is used by the
    ``phantom`` guidance only."""

    seed: int
    steps: int
    cfg: float
    sampler_name: str
    scheduler: str
    denoise: float
    image_cfg: float = 5.0


def _cfg_guider(model, positive, negative, settings: SamplerSettings):
    """Classifier-free guidance, as core KSampler runs it."""
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(settings.cfg)
    return guider


def _phantom_guider(model, positive, negative, settings: SamplerSettings):
    """Phantom's three-pass guidance, the Reference Guider's with constant scales over the whole run:

        neg + image_cfg · (pos_img − neg) + cfg · (pos_img_text − pos_img)

    ``neg`` is the negative prompt without the reference, ``pos_img`` the negative prompt with it and
    ``pos_img_text`` the positive prompt with it; who sees the reference is set on each conditioning.
    """
    guidance = ReferenceGuidance.constant(settings.cfg, settings.image_cfg)
    return reference_guider(model, positive, negative, guidance)


GUIDERS = {"cfg": _cfg_guider, "phantom": _phantom_guider}
"""Sample's ``guidance`` choice → the core guider it runs."""
GUIDANCE_MODES = tuple(GUIDERS)


def sample_video(
    model, latent: dict, *, positive, negative, settings: SamplerSettings, guidance: str
) -> dict:
    """What core KSampler does (noise, sigmas with denoise, previews, progress bar), on an already patched
    model, with the guider of ``guidance``."""
    if guidance not in GUIDERS:
        raise ValueError(f"guidance must be one of {', '.join(GUIDANCE_MODES)}, got {guidance!r}")
    guider = GUIDERS[guidance](model, positive, negative, settings)
    sigmas = comfy.samplers.KSampler(
        model,
        steps=settings.steps,
        device=model.load_device,
        sampler=settings.sampler_name,
        scheduler=settings.scheduler,
        denoise=settings.denoise,
        model_options=model.model_options,
    ).sigmas
    latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    noise = comfy.sample.prepare_noise(latent_image, settings.seed, latent.get("batch_index"))
    samples = guider.sample(
        noise,
        latent_image,
        comfy.samplers.sampler_object(settings.sampler_name),
        sigmas,
        denoise_mask=latent.get("noise_mask"),
        callback=latent_preview.prepare_callback(model, sigmas.shape[-1] - 1),
        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED,
        seed=settings.seed,
    )
    out = {
        k: v for k, v in latent.items() if k not in ("downscale_ratio_spacial", "downscale_ratio_temporal")
    }
    out["samples"] = samples.to(comfy.model_management.intermediate_device())
    return out


@finite_float_inputs
class CustomVideoXSample(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CustomVideoXSample",
            display_name="CustomVideoX Sample",
            category="CustomVideoX",
            description=(
                "Generates a video of the reference subject: the reference frames join the model's attention "
                "with the time-aware bias and ERAE; the output LATENT holds the video frames only."
            ),
            inputs=[
                model_input(),
                io.Conditioning.Input("positive", tooltip="The prompt describing the subject in motion."),
                io.Conditioning.Input("negative", tooltip="What to avoid."),
                ReferenceType.Input("reference", tooltip="From CustomVideoX ReferenceEncode."),
                *bias_inputs(),
                io.Latent.Input(
                    "latent",
                    optional=True,
                    tooltip="Start latent (for denoise < 1); without it width/height/length are used.",
                ),
                *size_inputs(max_size=MAX_SIZE),
                length_input(max_frames=MAX_SIZE, tooltip="Number of video frames."),
                io.Int.Input(
                    "seed", default=0, min=0, max=SEED_MAX, control_after_generate=True, tooltip="Noise seed."
                ),
                io.Int.Input("steps", default=50, min=1, max=10000, tooltip="Denoising steps."),
                float_input("cfg", 6.0, GUIDANCE_SCALE, "Classifier-free guidance scale."),
                io.Combo.Input(
                    "sampler_name",
                    options=comfy.samplers.KSampler.SAMPLERS,
                    default="euler",
                    tooltip="Sampling algorithm.",
                ),
                io.Combo.Input(
                    "scheduler",
                    options=comfy.samplers.KSampler.SCHEDULERS,
                    default="simple",
                    tooltip="Noise schedule.",
                ),
                float_input("denoise", 1.0, Bounds(0.0, 1.0, 0.01), "Denoising strength."),
                uncond_input(
                    default=False,
                    tooltip="Off: the negative pass runs without the reference, so guidance pushes "
                    "toward the subject. On: both passes see it. (cfg guidance only.)",
                ),
                io.Combo.Input(
                    "guidance",
                    options=list(GUIDANCE_MODES),
                    default="cfg",
                    optional=True,
                    tooltip="cfg: classifier-free guidance with the cfg scale. phantom: Phantom's three "
                    "passes, neg + image_cfg·(pos_img − neg) + cfg·(pos_img_text − pos_img), where cfg is "
                    "the text guidance (Phantom: 7.5) and the negative pass runs without the reference.",
                ),
                float_input(
                    "image_cfg",
                    5.0,
                    GUIDANCE_SCALE,
                    "Image (reference) guidance scale of the phantom guidance (Phantom: 5.0).",
                    optional=True,
                ),
            ],
            outputs=[
                io.Latent.Output(tooltip="The video latent (reference frames removed); decode with the VAE.")
            ],
        )

    @classmethod
    def execute(
        cls,
        model,
        positive,
        negative,
        reference,
        width: int,
        height: int,
        length: int,
        seed: int,
        steps: int,
        cfg: float,
        sampler_name: str,
        scheduler: str,
        denoise: float,
        uncond_sees_reference: bool,
        tab=None,
        erae=None,
        latent=None,
        guidance: str = "cfg",
        image_cfg: float = 5.0,
    ) -> io.NodeOutput:
        if latent is None:
            check_pixel_size(width, height)
        patched = patch_model(model, reference, tab, erae, uncond_sees_reference)
        if latent is None:
            latent = empty_video_latent(patched, width, height, length)
        settings = SamplerSettings(seed, steps, cfg, sampler_name, scheduler, denoise, image_cfg)
        out = sample_video(
            patched, latent, positive=positive, negative=negative, settings=settings, guidance=guidance
        )
        return io.NodeOutput(out)
