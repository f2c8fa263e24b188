"""Sample: the all-in-one sampler — patch the model with the reference, sample, return the video latent."""

from __future__ import annotations

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch
from comfy_api.latest import io

from ..customvideox_core.constants import SEED_MAX
from .settings import patch_model
from .widgets import reference_inputs, size_inputs

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


def sample_video(
    model,
    latent: dict,
    *,
    positive,
    negative,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    denoise: float,
) -> dict:
    """What core KSampler does (noise, previews, progress bar), on an already patched model."""
    latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    noise = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
    callback = latent_preview.prepare_callback(model, steps)
    samples = comfy.sample.sample(
        model,
        noise,
        steps,
        cfg,
        sampler_name,
        scheduler,
        positive,
        negative,
        latent_image,
        denoise=denoise,
        noise_mask=latent.get("noise_mask"),
        callback=callback,
        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED,
        seed=seed,
    )
    out = {
        k: v for k, v in latent.items() if k not in ("downscale_ratio_spacial", "downscale_ratio_temporal")
    }
    out["samples"] = samples
    return out


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
                io.Model.Input(
                    "model", tooltip="From Load CustomVideoX (or any supported CogVideoX/Wan model)."
                ),
                io.Conditioning.Input("positive", tooltip="The prompt describing the subject in motion."),
                io.Conditioning.Input("negative", tooltip="What to avoid."),
                *reference_inputs(),
                io.Latent.Input(
                    "latent",
                    optional=True,
                    tooltip="Start latent (for denoise < 1); without it width/height/length are used.",
                ),
                *size_inputs(max_size=MAX_SIZE),
                io.Int.Input(
                    "length", default=49, min=1, max=MAX_SIZE, step=4, tooltip="Number of video frames."
                ),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=SEED_MAX,
                    control_after_generate=True,
                    tooltip="Noise seed.",
                ),
                io.Int.Input("steps", default=50, min=1, max=10000, tooltip="Denoising steps."),
                io.Float.Input(
                    "cfg",
                    default=6.0,
                    min=0.0,
                    max=100.0,
                    step=0.1,
                    round=0.01,
                    tooltip="Classifier-free guidance scale.",
                ),
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
                io.Float.Input(
                    "denoise", default=1.0, min=0.0, max=1.0, step=0.01, tooltip="Denoising strength."
                ),
                io.Boolean.Input(
                    "uncond_sees_reference",
                    default=False,
                    tooltip="Off: the negative pass runs without the reference, so guidance pushes "
                    "toward the subject. On: both passes see it.",
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
        uncond_sees_reference: bool,
        tab=None,
        erae=None,
        latent=None,
        **sampling,
    ) -> io.NodeOutput:
        """``sampling``: seed, steps, cfg, sampler_name, scheduler, denoise (see :func:`sample_video`)."""
        patched = patch_model(model, reference, tab, erae, uncond_sees_reference)
        if latent is None:
            latent = empty_video_latent(patched, width, height, length)
        return io.NodeOutput(sample_video(patched, latent, positive=positive, negative=negative, **sampling))
