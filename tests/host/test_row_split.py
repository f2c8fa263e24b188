"""Rows that do not see the reference run as the plain model, in a call of their own.

When a model call's rows disagree (cfg with ``uncond_sees_reference`` off: the positive sees the
reference, the negative does not), the reference wrapper runs the seeing rows with the reference frames
appended and the others as the unpatched DiT, so they carry no reference token through any layer. The
oracle is the same wrapper with the split turned off (one call, the blind rows dropping the reference keys
in attention — itself checked against the unpatched model in ``test_nodes_patch``), and the frames each
call hands the DiT are recorded at the DiT's own ``_forward`` (the reference wrapper runs innermost, below
every other ``DIFFUSION_MODEL`` wrapper; ``test_composition`` checks what those see).
"""

from __future__ import annotations

import importlib

import pytest
import torch
from nodes_support import (
    LATENT_SHAPE,
    VIDEO_HEIGHT,
    VIDEO_WIDTH,
    constant_tab_patch,
    load_model,
    reference_images,
    sample,
)

HOSTS = ["cogvideox-5b", "cogvideox-1.5", "wan"]
SPLIT_ATOL = 5e-4  # two calls instead of one change the kernels' summation order, not the math


class FrameSpy:
    """Stands in for the DiT's ``_forward``: records (rows, frames) of every DiT call, then runs it."""

    def __init__(self, forward):
        self.calls = []
        self.forward = forward

    def __call__(self, x, *args, **kwargs):
        self.calls.append((x.shape[0], x.shape[2]))
        return self.forward(x, *args, **kwargs)


@pytest.fixture(scope="module")
def patch_module(pack_module):
    return importlib.import_module(f"{pack_module.__name__}.nodes.patch")


def patched_with_spy(comfy_host, pack, vae, tiny_models, host: str, monkeypatch):
    name = tiny_models.wan if host == "wan" else tiny_models.cogvideox[host.split("-")[1]]
    model = load_model(tiny_models.diffusion_models_dir, name)
    node = comfy_host.node_class("CustomVideoXReferenceEncode")
    reference = node.execute(vae, reference_images(1), VIDEO_WIDTH, VIDEO_HEIGHT, "pad", False, None).args[0]
    patched = constant_tab_patch(pack, model, reference, 2.0)
    dit = patched.model.diffusion_model
    spy = FrameSpy(dit._forward)
    monkeypatch.setattr(dit, "_forward", spy)
    return patched, spy


@pytest.mark.parametrize("host", HOSTS)
def test_blind_rows_run_without_reference_frames_and_give_the_same_video(
    comfy_host, pack, vae, tiny_models, patch_module, host, monkeypatch
):
    patched, spy = patched_with_spy(comfy_host, pack, vae, tiny_models, host, monkeypatch)
    split = sample(patched)
    frames = LATENT_SHAPE[2]
    # two sampling steps; each is a seeing call (1 row, video + reference frames) and a blind call
    # (1 row, the video's frames only), in that order
    temporal = 2 if host == "cogvideox-1.5" else 1
    reference_frames = temporal
    video_frames = -(-frames // temporal) * temporal
    assert spy.calls == [(1, video_frames + reference_frames), (1, frames)] * 2, spy.calls

    spy.calls.clear()
    monkeypatch.setattr(patch_module.RowSplit, "of", classmethod(lambda cls, *args: None))
    single = sample(patched)
    assert spy.calls == [(2, video_frames + reference_frames)] * 2, spy.calls
    assert (split - single).abs().max().item() < SPLIT_ATOL


def test_no_split_when_an_argument_is_a_container(patch_module):
    """A dict argument (a ControlNet's ``control``) may hold per-row tensors: the call stays whole."""
    x = torch.zeros(2, 4, 1, 2, 2)
    options = {"cond_or_uncond": [0, 1]}
    args = (x, torch.zeros(2), torch.zeros(2, 3, 4), None, options)
    assert patch_module.RowSplit.of([True, False], args, {}, options, 4) is not None
    assert patch_module.RowSplit.of([True, False], args, {"control": {"output": []}}, options, 4) is None
    assert patch_module.RowSplit.of([True, True], args, {}, options, 4) is None


def test_only_the_per_row_options_are_cut(patch_module):
    """``sigmas`` (one per row) and the per-chunk lists follow the rows; ``sample_sigmas`` (the whole
    schedule) stays whole even when its length happens to equal the batch."""
    x = torch.arange(2.0).reshape(2, 1, 1, 1, 1)
    options = {
        "cond_or_uncond": [0, 1],
        "uuids": ["cond", "uncond"],
        "sigmas": torch.tensor([0.75, 0.75]),
        "sample_sigmas": torch.tensor([0.75, 0.0]),
        patch_module.SETTINGS_KEY: "patch",
    }
    split = patch_module.RowSplit.of([False, True], (x, torch.tensor([5.0, 6.0]), options), {}, options, 2)
    args, _ = split._call_args(split.seeing, patched=True)
    assert args[0].flatten().tolist() == [1.0] and args[1].tolist() == [6.0]
    seen_options = args[2]
    assert seen_options["cond_or_uncond"] == [1] and seen_options["uuids"] == ["uncond"]
    assert seen_options["sigmas"].tolist() == [0.75]
    assert seen_options["sample_sigmas"].tolist() == [0.75, 0.0]
    assert seen_options[patch_module.SETTINGS_KEY] == "patch"
    args, _ = split._call_args(split.blind, patched=False)
    assert args[2]["cond_or_uncond"] == [0] and patch_module.SETTINGS_KEY not in args[2]
