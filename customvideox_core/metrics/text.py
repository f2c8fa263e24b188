"""CLIP-T's text side: put a CLIP text model's pooled output into the joint image–text space.

A CLIP text tower ends with ``text_projection`` (``[D_joint, D_text]``, no bias), which maps the pooled
end-of-text feature into the space its vision twin's ``visual_projection`` maps images into. ComfyUI's
text encoders hand out the pooled feature either projected or not depending on the model type (SD1's
CLIP-L: unprojected; SDXL's CLIP-G: projected), so the pack always asks for the *unprojected* feature
and applies the projection it finds among the text model's weights. Only a projection whose shape fits
both the pooled width and the image-embedding width is accepted; none, or more than one, is an error.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

PROJECTION_SUFFIX = "text_projection.weight"


def select_text_projection(weights: Mapping[str, Tensor], pooled_width: int, embed_width: int) -> Tensor:
    """The ``[embed_width, pooled_width]`` ``*text_projection.weight`` among ``weights``.

    Raises ``ValueError`` saying what was found when no projection, or several, fit.
    """
    found = {name: tensor for name, tensor in weights.items() if name.endswith(PROJECTION_SUFFIX)}
    fitting = {
        name: tensor for name, tensor in found.items() if tuple(tensor.shape) == (embed_width, pooled_width)
    }
    if len(fitting) == 1:
        return next(iter(fitting.values()))
    if not found:
        raise ValueError(
            "this text encoder has no CLIP text projection (no '*text_projection.weight'), so its prompt "
            "embedding is not in any CLIP image space; CLIP-T needs the text tower of the same CLIP model "
            "as the vision encoder (e.g. SDXL's clip_g with clip_vision_g, or CLIP ViT-L/14's text model "
            "with a ViT-L/14 vision model). T5/umT5 encoders (CogVideoX, Wan) cannot give CLIP-T."
        )
    shapes = ", ".join(f"{name} {tuple(tensor.shape)}" for name, tensor in sorted(found.items()))
    if not fitting:
        raise ValueError(
            f"no text projection maps the prompt's pooled feature (width {pooled_width}) to the image "
            f"embedding width {embed_width}; found {shapes}. The text model and the CLIP vision model "
            "must be the two towers of the same CLIP."
        )
    raise ValueError(
        f"several text projections fit ({shapes}); cannot tell which tower made the prompt feature."
    )


def project_text(pooled: Tensor, projection: Tensor) -> Tensor:
    """``[1, D_text] or [D_text]`` pooled feature × ``[D_joint, D_text]`` → ``[D_joint]`` (float64)."""
    pooled = pooled.detach().to(device="cpu", dtype=torch.float64).reshape(-1)
    return projection.detach().to(device="cpu", dtype=torch.float64) @ pooled
