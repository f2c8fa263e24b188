"""Training data shared by the host tests of both reference layouts (no ComfyUI import at module level)."""

from __future__ import annotations

from pathlib import Path

import torch

COPY_ITEMS = 32
COPY_FRAME_NOISE = 0.1  # per-frame noise on the video latent: the clip is the reference, not bit for bit


def copy_dataset(train_data, base, *, width: int, height: int, length: int):
    """``COPY_ITEMS`` items built directly as latents, where copying the reference IS the solution: each
    reference ``[1, C, 1, h, w]`` (model space) is a different zero-mean, unit-variance Gaussian colour (a
    random C-vector, the same at every position), its video that reference repeated over the latent frames
    plus ``COPY_FRAME_NOISE`` Gaussian noise. The dataset mean is zero, so beyond denoising the only way to
    predict an item's video is to read its reference. (A spatially structured pattern — 2 × 3 cells of
    2 × 2 tokens — gave no right/wrong gap in 600–1,500 steps: position-by-position copying is out of reach
    of this tiny model in a test's budget; see docs/TRAINING.md §5.) Entries hold raw VAE latents
    (``process_latent_out`` of model space), as ``prepare_dataset`` returns them.

    ``train_data``: the pack's ``nodes.train_data`` module; ``base``: the ComfyUI model (``patcher.model``).
    """
    settings = train_data.TrainDataSettings(width, height, length)
    channels = base.latent_format.latent_channels
    frames = (length - 1) // 4 + 1
    latent_height, latent_width = height // 8, width // 8
    generator = torch.Generator().manual_seed(77)
    entries, names = [], []
    for index in range(COPY_ITEMS):
        pattern = torch.randn((1, channels, 1, 1, 1), generator=generator).expand(
            -1, -1, -1, latent_height, latent_width
        )
        noise = torch.randn((1, channels, frames, latent_height, latent_width), generator=generator)
        video = pattern.expand(-1, -1, frames, -1, -1) + COPY_FRAME_NOISE * noise
        entries.append(
            train_data.LatentCacheEntry(
                video_latents=base.process_latent_out(video.clone()),
                reference_latents=base.process_latent_out(pattern.clone()),
            )
        )
        names.append(f"copy{index:02d}")
    return train_data.PreparedDataset(
        folder=Path("synthetic_copy"), settings=settings, entries=tuple(entries), names=tuple(names)
    )


def copy_settings(train_run, train_data, *, adapter_name: str, size: tuple[int, int, int], **values):
    """The copy proofs' ``TrainAdapterSettings``: ``size`` = (width, height, length), a 20-step warmup,
    no intermediate saves, float32, no checkpointing; ``values``: rank, alpha, steps, learning rate, …"""
    return train_run.TrainAdapterSettings(
        adapter_name=adapter_name,
        data=train_data.TrainDataSettings(*size),
        warmup_steps=20,
        save_every=0,
        gradient_checkpointing=False,
        bf16=False,
        overwrite=True,
        **values,
    )
