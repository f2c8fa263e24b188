"""Stand-In nodes: load a Stand-In file, apply it with a reference face to a native Wan MODEL."""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io, ui

from ..customvideox_core.constants import STANDIN_SUFFIXES
from ..customvideox_core.erae import reference_token_weights
from ..customvideox_core.host_specs import check_branch_dit
from ..customvideox_core.ranges import STANDIN_STRENGTH
from ..customvideox_core.standin.branch import reference_grid
from ..customvideox_core.standin.lora_file import StandInLoRA, read_standin_file
from .finite_inputs import finite_float_inputs
from .host_model import diffusion_model_of, host_signature
from .standin_patch import StandInPatch, install_standin
from .types import ReferenceType, fit_replacement_mask
from .widgets import bias_inputs, float_input, patched_model_output, uncond_input

STANDIN_FOLDER = "loras"
StandInType = io.Custom("CVX_STANDIN")


def standin_choices() -> list[str]:
    """Files in models/loras that could be Stand-In files (safetensors, ckpt, pt, pth, bin)."""
    try:
        names = folder_paths.get_filename_list(STANDIN_FOLDER)
    except KeyError:
        return []
    return [name for name in names if name.lower().endswith(STANDIN_SUFFIXES)]


@finite_float_inputs
class CustomVideoXLoadStandIn(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CustomVideoXLoadStandIn",
            display_name="Load Stand-In",
            category="CustomVideoX/Stand-In",
            description=(
                "Reads a Stand-In identity LoRA (WeChatCV) from models/loras: the LoRA that acts on the "
                "reference face's tokens only. Published .ckpt files are read as plain tensors only."
            ),
            inputs=[
                io.Combo.Input(
                    "standin_name",
                    options=standin_choices(),
                    tooltip="Stand-In_wan2.1_T2V_14B_ver1.0.ckpt for Wan 2.1 T2V 14B; "
                    "Stand-In_wan2.2_T2V_A14B_high.ckpt / _low.ckpt for the Wan 2.2 A14B experts "
                    "(or safetensors conversions of them).",
                ),
            ],
            outputs=[StandInType.Output("standin", tooltip="For Apply Stand-In.")],
        )

    @classmethod
    def execute(cls, standin_name: str) -> io.NodeOutput:
        path = folder_paths.get_full_path(STANDIN_FOLDER, standin_name)
        if path is None:
            raise FileNotFoundError(
                f"Stand-In file '{standin_name}' is not in models/loras; put it there and refresh (press R)."
            )
        lora = read_standin_file(path)
        summary = f"{os.path.basename(path)}: {lora.num_blocks} blocks, rank {lora.rank}, width {lora.dim}"
        return io.NodeOutput(lora, ui=ui.PreviewText(summary))


@finite_float_inputs
class CustomVideoXApplyStandIn(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CustomVideoXApplyStandIn",
            display_name="Apply Stand-In",
            category="CustomVideoX/Stand-In",
            description=(
                "Stand-In identity control on a native Wan T2V model: the reference face joins the "
                "self-attention as its own branch (timestep 0, its own positions, attends to itself only, "
                "LoRA on its tokens only); its keys and values are computed once per sampling and reused. "
                "TAB and ERAE act on the video → face logits. Use one node per Wan 2.2 expert."
            ),
            inputs=[
                io.Model.Input("model", tooltip="Native Wan 2.1 T2V 14B, or one Wan 2.2 T2V A14B expert."),
                StandInType.Input("standin", tooltip="From Load Stand-In (the file matching this model)."),
                ReferenceType.Input(
                    "reference",
                    tooltip="From CustomVideoX ReferenceEncode: ONE face crop on white, 512x512 as published.",
                ),
                float_input(
                    "strength",
                    1.0,
                    STANDIN_STRENGTH,
                    "Multiplier of the Stand-In LoRA on the face tokens: 1 = as published, "
                    "0 = the face branch without its LoRA.",
                ),
                *bias_inputs(
                    tab="From TimeAwareBias: bias on the video → face logits. Unconnected: no bias "
                    "(the published Stand-In).",
                    erae="From ERAEMask (needs a TAB to act on).",
                ),
                uncond_input(
                    default=True,
                    tooltip="On (as published): the negative pass sees the face too. Off: it runs without it.",
                ),
            ],
            outputs=[patched_model_output()],
        )

    @classmethod
    def execute(
        cls,
        model,
        standin: StandInLoRA,
        reference,
        strength: float,
        uncond_sees_reference: bool,
        tab=None,
        erae=None,
    ) -> io.NodeOutput:
        patched = apply_standin(
            model,
            standin,
            reference,
            strength=strength,
            tab=tab,
            erae=erae,
            uncond_sees_reference=uncond_sees_reference,
        )
        return io.NodeOutput(patched)


def apply_standin(
    model, standin: StandInLoRA | None, reference, *, strength, tab, erae, uncond_sees_reference
):
    """Clone ``model`` and install the Stand-In patch (the input model is left untouched)."""
    host = host_signature(model)
    if host.family != "wan":
        raise ValueError(f"Stand-In runs on Wan models only; this model is {host.variant}.")
    dit = diffusion_model_of(model)
    check_branch_dit(dit)
    if reference is None:
        raise ValueError(
            "connect a reference (CustomVideoX ReferenceEncode with one face image) to Apply Stand-In"
        )
    if reference.count != 1:
        raise ValueError(
            f"Stand-In takes one reference image, this reference has {reference.count}: encode one face crop."
        )
    if standin is not None:
        standin.check_model(num_blocks=len(dit.blocks), dim=int(dit.dim), model_name=f"this {host.variant}")
    if erae is not None and erae.reference_mask is not None:
        reference = fit_replacement_mask(reference, erae.reference_mask)
    latent = model.model.process_latent_in(reference.latents.clone())
    if latent.shape[1] != dit.patch_embedding.in_channels:
        raise ValueError(
            f"the reference latent has {latent.shape[1]} channels but this Wan takes "
            f"{dit.patch_embedding.in_channels}: Stand-In needs a text-to-video Wan and its own VAE."
        )
    rows, cols = reference_grid(latent, tuple(dit.patch_size))
    weights = reference_token_weights(
        reference.masks[:1], latent_size=tuple(latent.shape[-2:]), patch_size=int(dit.patch_size[-1])
    ).reshape(-1)
    if weights.numel() != rows * cols:
        raise ValueError(f"reference mask pooled to {weights.numel()} tokens, expected {rows * cols}")
    patch = StandInPatch(
        lora=standin,
        strength=float(strength),
        reference_latent=latent,
        reference_weights=weights,
        tab=tab,
        erae=erae.config if erae is not None else None,
        uncond_sees_reference=bool(uncond_sees_reference),
    )
    patched = model.clone()
    install_standin(patched, patch)
    return patched
