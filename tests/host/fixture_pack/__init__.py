"""Test-only ComfyUI node pack: stand-ins for what tiny test models cannot have.

Loaded only by the host test harness (``tests/host/harness.py``), never by users. Real T5/umT5 text
encoders have billions of parameters, so host tests feed the tiny transformers random
conditioning, and get a CLIP object that holds only a real tokenizer (enough for tokenising
entity words; it cannot encode).

- ``CVXTestRandomConditioning``: seed, length, dim → ``CONDITIONING [[tensor [1, length, dim], {}]]``.
- ``CVXTestTokenizerCLIP``: family → a ``comfy.sd.CLIP`` with the family's real tokenizer and no
  encoder. CogVideoX: ComfyUI's T5 tokenizer (``CogVideoXTokenizer``). Wan: ComfyUI's umT5 tokenizer
  classes (``WanT5Tokenizer``) over the sentencepiece model that ships with ComfyUI
  (``t5_pile_tokenizer``), because the real umT5 vocabulary lives inside the umT5 checkpoint.
- ``CVXTestLatentSummary``: output node reporting a LATENT's shape and statistics in the UI/history,
  so HTTP tests can compare results without downloading tensors.
- ``CVXTestEmptyImage``: an IMAGE batch of zero images (no core node makes one), for bad-input tests.
- ``CVXTestTinyClipVisionLoader``: a tiny CLIP-vision / DINOv2 file of ``models/clip_vision`` (written by
  ``tests/host/tiny_models.py``) → the ``comfy.clip_vision.ClipVisionModel`` core's Load CLIP Vision would
  return, built from the tiny config in the file's metadata (core's loader only knows full-size configs).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import ClassVar

import comfy.model_patcher
import comfy.sd
import comfy.text_encoders.cogvideo
import comfy.text_encoders.wan
import folder_paths
import torch
from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

TOKENIZER_FAMILIES = ["cogvideox", "wan"]
CATEGORY = "_for_testing/customvideox"
"""Where the test nodes stand in the node library."""


def _tokenizer_only_clip(family: str) -> comfy.sd.CLIP:
    """A ``comfy.sd.CLIP`` carrying the family's real tokenizer and no text encoder.

    Its patcher is ComfyUI's own ``ModelPatcher`` over an empty module: the server's output cache asks
    every cached CLIP's patcher (``CLIP.is_dynamic`` in 0.33's RAM release), and a ``None`` there ended
    the prompt worker after the first graph that used this node.
    """
    if family == "cogvideox":
        tokenizer = comfy.text_encoders.cogvideo.CogVideoXTokenizer()
    elif family == "wan":
        spiece_model = os.path.join(
            os.path.dirname(os.path.realpath(comfy.text_encoders.wan.__file__)),
            "t5_pile_tokenizer",
            "tokenizer.model",
        )
        tokenizer = comfy.text_encoders.wan.WanT5Tokenizer(tokenizer_data={"spiece_model": spiece_model})
    else:
        raise ValueError(f"Tokenizer family {family!r} is unknown; expected one of {TOKENIZER_FAMILIES}.")
    clip = comfy.sd.CLIP(no_init=True)
    clip.tokenizer = tokenizer
    clip.cond_stage_model = None
    cpu = torch.device("cpu")
    clip.patcher = comfy.model_patcher.ModelPatcher(torch.nn.Module(), load_device=cpu, offload_device=cpu)
    clip.layer_idx = None
    clip.tokenizer_options = {}
    clip.use_clip_schedule = False
    clip.apply_hooks_to_conds = None
    return clip


def _tiny_models_module():
    """``tests/host/tiny_models.py`` (the one home of the tiny-file format), loaded by path."""
    name = "cvx_fixture_tiny_models"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).resolve().parents[1] / "tiny_models.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


class _FixtureNode(io.ComfyNode):
    """A test node declared by its class attributes: its id is the class name, its description the
    docstring, ``INPUTS`` and ``OUTPUTS`` its sockets and widgets in order."""

    DISPLAY_NAME: ClassVar[str]
    INPUTS: ClassVar[tuple[io.Input, ...]] = ()
    OUTPUTS: ClassVar[tuple[io.Output, ...]] = ()
    IS_OUTPUT_NODE: ClassVar[bool] = False

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=cls.__name__,
            display_name=cls.DISPLAY_NAME,
            category=CATEGORY,
            description=cls.__doc__,
            inputs=list(cls.INPUTS),
            outputs=list(cls.OUTPUTS),
            is_output_node=cls.IS_OUTPUT_NODE,
        )


class CVXTestRandomConditioning(_FixtureNode):
    """Seeded standard-normal text embeddings for tiny test models (test scaffolding)."""

    DISPLAY_NAME = "CVX Test Random Conditioning"
    INPUTS = (
        io.Int.Input("seed", default=0, min=0, max=2**31 - 1, tooltip="Seed of the random embeddings."),
        io.Int.Input("length", default=8, min=1, max=4096, tooltip="Number of text tokens."),
        io.Int.Input("dim", default=32, min=1, max=8192, tooltip="Embedding width (the model's text dim)."),
    )
    OUTPUTS = (io.Conditioning.Output(),)

    @classmethod
    def execute(cls, seed: int, length: int, dim: int) -> io.NodeOutput:
        generator = torch.Generator().manual_seed(seed)
        embeddings = torch.randn((1, length, dim), generator=generator)
        return io.NodeOutput([[embeddings, {}]])


class CVXTestTokenizerCLIP(_FixtureNode):
    """A CLIP holding only a real tokenizer (no encoder weights); it tokenises, it cannot encode."""

    DISPLAY_NAME = "CVX Test Tokenizer-only CLIP"
    INPUTS = (
        io.Combo.Input(
            "family", options=TOKENIZER_FAMILIES, default="cogvideox", tooltip="Tokenizer family."
        ),
    )
    OUTPUTS = (io.Clip.Output(),)

    @classmethod
    def execute(cls, family: str) -> io.NodeOutput:
        return io.NodeOutput(_tokenizer_only_clip(family))


class CVXTestLatentSummary(_FixtureNode):
    """Reports a latent's shape and float64 statistics in the UI output (history)."""

    DISPLAY_NAME = "CVX Test Latent Summary"
    INPUTS = (io.Latent.Input("samples", tooltip="Latent to summarise."),)
    IS_OUTPUT_NODE = True

    @classmethod
    def execute(cls, samples: dict) -> io.NodeOutput:
        values = samples["samples"].detach().to(device="cpu", dtype=torch.float64)
        summary = {
            "shape": list(values.shape),
            "mean": float(values.mean()),
            "std": float(values.std()) if values.numel() > 1 else 0.0,
            "abs_max": float(values.abs().max()),
            "finite": bool(torch.isfinite(values).all()),
        }
        return io.NodeOutput(ui={"cvx_latent_summary": [summary]})


class CVXTestEmptyImage(_FixtureNode):
    """An IMAGE batch holding no image, [0, height, width, 3]."""

    DISPLAY_NAME = "CVX Test Empty Image Batch"
    INPUTS = (
        io.Int.Input("width", default=64, min=1, max=4096, tooltip="Width of the (absent) images."),
        io.Int.Input("height", default=64, min=1, max=4096, tooltip="Height of the (absent) images."),
    )
    OUTPUTS = (io.Image.Output(),)

    @classmethod
    def execute(cls, width: int, height: int) -> io.NodeOutput:
        return io.NodeOutput(torch.zeros(0, height, width, 3))


class CVXTestTinyClipVisionLoader(_FixtureNode):
    """Loads a tiny CLIP-vision/DINOv2 test file as comfy.clip_vision.ClipVisionModel."""

    DISPLAY_NAME = "CVX Test Tiny CLIP Vision Loader"
    INPUTS = (
        # A plain string, not a combo: a server started before the test wrote the file keeps
        # a stale cached file list for a models folder that did not exist yet.
        io.String.Input("clip_name", tooltip="A file in models/clip_vision written by tiny_models.py."),
    )
    OUTPUTS = (io.ClipVision.Output(),)

    @classmethod
    def execute(cls, clip_name: str) -> io.NodeOutput:
        # Looked up on disk, not through folder_paths' cached file lists (see the input's comment).
        folders = folder_paths.get_folder_paths("clip_vision")
        found = [
            os.path.join(folder, clip_name)
            for folder in folders
            if os.path.isfile(os.path.join(folder, clip_name))
        ]
        if not found:
            raise FileNotFoundError(f"{clip_name} is in none of the clip_vision folders {folders}")
        path = found[0]
        return io.NodeOutput(_tiny_models_module().load_tiny_clip_vision(path))


class CVXTestFixtureExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [
            CVXTestRandomConditioning,
            CVXTestTokenizerCLIP,
            CVXTestLatentSummary,
            CVXTestEmptyImage,
            CVXTestTinyClipVisionLoader,
        ]


async def comfy_entrypoint() -> CVXTestFixtureExtension:
    return CVXTestFixtureExtension()
