"""No host sync in a step: every reference source runs a sampling step on fake tensors, reading nothing
back from the step's data.

A fake tensor (``torch._subclasses.fake_tensor.FakeTensorMode``) has a shape, a dtype and a device but no
data, so any read of its values on the host — ``.item()``, ``.tolist()``, ``bool(tensor)``, ``float()``,
a data-dependent shape such as ``nonzero`` — raises ``DataDependentOutputException``. On a GPU each such
read is a host sync that stalls the step. Here the model's weights, the noisy latent the sampler hands the
model, the text conditioning, and the reference of every source are fake:

- appended: the pack's own reference frames (Apply's patch), TAB 2 + ERAE, so the biased lse-merge path
  and the entity measurement run;
- conditioning frames: core's Phantom conditioning (``time_dim_concat`` on the positive, none on the
  negative), biased through Apply without a reference, TAB 2; the positive carries the subject's frames;
- cached branch: Stand-In (its LoRA fake too), TAB 2 + ERAE: the reference branch runs and is cached.

What stays real is the host's own input, known before the step: the sampler's clock (ComfyUI's samplers
read the sigmas on the host at every step themselves) and the subject masks (the user's MASK input). One
step through core's ``CFGGuider`` with a sampler that hands the model a fake latent at the schedule's
first sigma. The models are ComfyUI's own classes at the sizes of ``benchmarks/real_size.py --tiny``
(``benchmarks/_fake_models.py`` builds them).
"""

from __future__ import annotations

import sys

import pytest
import torch
from harness import REPO_ROOT

TEXT_TOKENS = 16


@pytest.fixture(scope="module")
def fake(comfy_host):
    """The benchmarks' fake-model helpers (imported once ComfyUI is, as the module docstring says)."""
    sys.path.append(str(REPO_ROOT / "benchmarks"))
    import _fake_models
    import _host_models

    return _fake_models, _host_models


def fake_wan(fake, mode):
    fake_models, host_models = fake
    arguments = host_models.wan_arguments(heads=2, head_dim=128, layers=2, ffn_dim=256)
    return fake_models.fake_model(mode, "wan", arguments, torch.float32)


def fake_cogvideox(fake, mode):
    fake_models, host_models = fake
    arguments = host_models.cogvideox_arguments(heads=2, head_dim=64, layers=2, text_dim=64)
    return fake_models.fake_model(mode, "cogvideox", arguments, torch.float32)


def fake_reference(pack_module, mode, height: int, width: int):
    """ReferenceEncode's output with fake latents (its mask, the user's input, real)."""
    types = pack_module_of(pack_module, "nodes.types")
    with mode:
        latents = torch.empty(1, 16, 1, height // 8, width // 8)
    return types.ReferenceLatents(
        latents=latents, masks=torch.ones(1, height, width), source_size=(height, width), fit="pad"
    )


def pack_module_of(pack_module, name: str):
    import importlib

    return importlib.import_module(f"{pack_module.__name__}.{name}")


def fake_conditioning(mode, text_dim: int, extra: dict | None = None) -> list:
    with mode:
        context = torch.empty(1, TEXT_TOKENS, text_dim)
    return [[context, dict(extra or {})]]


def fake_step(fake, mode, model, positive, negative, latent_shape: tuple[int, ...]):
    """One cfg-6 step through core's CFGGuider; the sampler gives the model a fake latent."""
    import comfy.samplers

    fake_models, _ = fake
    handed = []

    def one_call(model_wrap, x, sigmas, extra_args=None, callback=None, disable=None):
        fake_x = mode.from_tensor(x)
        handed.append(fake_x)
        return model_wrap(fake_x, sigmas[0] * x.new_ones([x.shape[0]]), **(extra_args or {}))

    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(6.0)
    sigmas = comfy.samplers.KSampler(model, steps=4, device="cpu", sampler="euler", scheduler="simple").sigmas
    latent = torch.zeros(latent_shape)
    with fake_models.weights_stay_put(), torch.inference_mode():
        out = guider.sample(
            torch.randn(latent_shape),
            latent,
            comfy.samplers.KSAMPLER(one_call),
            sigmas,
            disable_pbar=True,
            seed=0,
        )
    assert handed, "the sampler never called the model"
    return out


def assert_ran_fake(out, latent_shape) -> None:
    from torch._subclasses.fake_tensor import FakeTensor

    assert isinstance(out, FakeTensor), type(out)
    assert tuple(out.shape) == tuple(latent_shape)


WAN_LATENT = (1, 16, 3, 8, 12)  # 96×64 pixels, 9 frames


@pytest.mark.parametrize("family", ["cogvideox", "wan"])
def test_appended_reference_step_reads_nothing_back(fake, pack, pack_module, family):
    from torch._subclasses.fake_tensor import FakeTensorMode

    fake_models, _ = fake
    mode = fake_models.fake_mode()
    assert isinstance(mode, FakeTensorMode)
    model = fake_wan(fake, mode) if family == "wan" else fake_cogvideox(fake, mode)
    text_dim = 4096 if family == "wan" else 64
    patched = pack.patch.apply_reference_patch(
        model,
        fake_reference(pack_module, mode, 64, 96),
        tab=pack.tab.TABSchedule(shape="constant", peak=2.0),
        erae=pack.erae.ERAEConfig(entity_positions=(3, 7), gamma=1.0),
        uncond_sees_reference=False,
    )
    out = fake_step(
        fake, mode, patched, fake_conditioning(mode, text_dim), fake_conditioning(mode, text_dim), WAN_LATENT
    )
    assert_ran_fake(out, WAN_LATENT)


def test_conditioning_frames_step_reads_nothing_back(fake, pack, pack_module):
    import node_helpers

    fake_models, _ = fake
    mode = fake_models.fake_mode()
    settings = pack_module_of(pack_module, "nodes.patch_model")
    model = settings.patch_model(
        fake_wan(fake, mode),
        None,
        pack.tab.TABSchedule(shape="constant", peak=2.0),
        None,
        False,
        allow_host_reference=True,
    )
    with mode:
        frames = torch.empty(1, 16, 1, *WAN_LATENT[-2:])
    positive = node_helpers.conditioning_set_values(
        fake_conditioning(mode, 4096), {"time_dim_concat": frames}
    )
    out = fake_step(fake, mode, model, positive, fake_conditioning(mode, 4096), WAN_LATENT)
    assert_ran_fake(out, WAN_LATENT)


def test_cached_branch_step_reads_nothing_back(fake, pack, pack_module, monkeypatch):
    fake_models, _ = fake
    mode = fake_models.fake_mode()
    model = fake_wan(fake, mode)
    lora_file = pack_module_of(pack_module, "customvideox_core.standin.lora_file")
    # Loading a Stand-In file reads its values once, by design (NaN weights are refused at load, not per
    # step); the fake file has no values, so that load-time check is left out: this test is about the step.
    monkeypatch.setattr(lora_file, "check_finite_weights", lambda tensors, source: None)
    state = {}
    with mode:
        for block in range(2):
            for projection in "qkv":
                prefix = f"blocks.{block}.self_attn.{projection}_loras"
                state[f"{prefix}.down.weight"] = torch.empty(4, 256)
                state[f"{prefix}.up.weight"] = torch.empty(256, 4)
    types = pack_module_of(pack_module, "nodes.types")
    patched = pack_module_of(pack_module, "nodes.standin_nodes").apply_standin(
        model,
        lora_file.parse_standin_state_dict(state, source="test"),
        fake_reference(pack_module, mode, 32, 32),
        strength=1.0,
        tab=pack.tab.TABSchedule(shape="constant", peak=2.0),
        erae=types.ERAESettings(config=pack.erae.ERAEConfig(entity_positions=(3, 7), gamma=1.0)),
        uncond_sees_reference=True,
    )
    out = fake_step(
        fake, mode, patched, fake_conditioning(mode, 4096), fake_conditioning(mode, 4096), WAN_LATENT
    )
    assert_ran_fake(out, WAN_LATENT)


def test_a_read_back_fails_the_step(fake, pack):
    """The oracle can fail: a wrapper that reads the latent back (``.item()``) stops the same step."""
    import comfy.patcher_extension
    from torch._subclasses.fake_tensor import DataDependentOutputException

    fake_models, _ = fake
    mode = fake_models.fake_mode()
    model = fake_wan(fake, mode).clone()

    def reads_back(executor, *args, **kwargs):
        float(args[0].abs().max())
        return executor(*args, **kwargs)

    model.add_wrapper_with_key(
        comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "cvx_test_read", reads_back
    )
    with pytest.raises(DataDependentOutputException):
        fake_step(fake, mode, model, fake_conditioning(mode, 4096), fake_conditioning(mode, 4096), WAN_LATENT)
