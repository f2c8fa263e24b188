"""The cost of a reference, counted: the FLOP counter on a sampling step against the floor written by hand.

``benchmarks/real_size.py`` prints, at real size, FLOPs measured by ``FlopCounterMode`` next to the floor
``benchmarks/_floor.py`` counts from token counts alone. Here both meet on small models of ComfyUI's own
classes (fake tensors, ``real_size.py --tiny``'s sizes), pass by pass: the counter and the formula must
agree within 1 % in absolute FLOPs, so the real-size ratios read against the floor are ratios of the same
count. Attention runs on ComfyUI's SDPA backend (``attention_pytorch``, bound for the test) so that it is
counted apart. A negative pass that does not see the pack's reference costs exactly the base pass — also
when ComfyUI runs it as a call of its own (it does at real size, when memory is short): then the plain
model runs, with the plain model's output.
"""

from __future__ import annotations

import sys

import pytest
import torch
from harness import REPO_ROOT

TOLERANCE = 0.01


@pytest.fixture(scope="module")
def real_size(comfy_host):
    sys.path.append(str(REPO_ROOT / "benchmarks"))
    import real_size

    return real_size


@pytest.fixture
def sdpa(monkeypatch):
    """The DiT modules call ComfyUI's SDPA backend (restored after the test)."""
    import importlib

    import comfy.ldm.modules.attention as attention

    for module in ("comfy.ldm.wan.model", "comfy.ldm.cogvideo.model"):
        monkeypatch.setattr(
            importlib.import_module(module), "optimized_attention", attention.attention_pytorch
        )


def assert_floor(measured, floor, what: str) -> None:
    assert measured.total == pytest.approx(floor.total, rel=TOLERANCE), (what, measured, floor)
    assert measured.attention == pytest.approx(floor.attention, rel=TOLERANCE), (what, measured, floor)


def variant(real_size, label: str):
    return next(v for v in real_size.VARIANTS if v.label == label)


@pytest.mark.parametrize("key", ["tiny-cogvideox", "tiny-wan"])
def test_counter_meets_the_floor_pass_by_pass(real_size, pack_module, sdpa, key):
    model = real_size.TINY_MODELS[key]
    bench = real_size.Bench(pack_module, model, real_size.fake_mode())
    labels = [v.label for v in real_size.VARIANTS if model.is_wan or not v.wan_only]
    base = bench.measure(variant(real_size, "no reference"))
    checked = 0
    for label in labels:
        measured = base if label == "no reference" else bench.measure(variant(real_size, label))
        conditional, negative, step = real_size.floors(model, label)
        assert_floor(measured.step, step, f"{key} {label}: step")
        if measured.conditional is None:  # Phantom's three passes: the step only
            continue
        assert_floor(measured.conditional, conditional, f"{key} {label}: conditional pass")
        negative_pass = measured.step - measured.conditional
        assert_floor(negative_pass, negative, f"{key} {label}: negative pass")
        if label.startswith("reference"):  # the negative does not see the pack's reference: the base pass
            assert negative_pass == base.conditional, (label, negative_pass, base.conditional)
        checked += 1
    assert checked == len(labels) - model.is_wan  # every row but Phantom's, pass by pass


def test_the_floor_counts_tokens_as_the_issue_states(real_size):
    """CogVideoX-5B with one reference frame: 226 text + 17,550 video + 1,350 reference tokens per layer."""
    model = real_size.MODELS["cogvideox-5b"]
    assert model.tokens()[:2] == (17_550, 1_350)
    dims = model.dims()
    base, joint = dims.pass_flops(226, 17_550), dims.pass_flops(226, 17_550 + 1_350)
    tokens = 226 + 17_550
    assert joint.attention / base.attention == pytest.approx(((tokens + 1_350) / tokens) ** 2)
    per_token = 42 * 24 * 3072**2  # 42 layers of q, k, v, out (8·D²) and the 4× feed-forward (16·D²)
    assert joint.linear - base.linear == pytest.approx(1_350 * per_token, rel=1e-3)


def test_a_call_no_row_of_which_sees_the_reference_is_the_plain_model(real_size, pack, pack_module, sdpa):
    """ComfyUI's negative in a call of its own: the patched model's output and FLOPs are the plain model's
    (real tiny weights)."""
    import _host_models as host_models
    import comfy.patcher_extension
    from _fake_models import flop_counter, weights_stay_put

    generator = torch.Generator().manual_seed(0)
    arguments = host_models.wan_arguments(heads=2, head_dim=128, layers=2, ffn_dim=256)
    plain = host_models.build_model("wan", arguments, torch.float32)
    patched = pack.patch.apply_reference_patch(
        plain,
        host_models.reference_latents(pack_module, 64, 96, generator=generator),
        tab=pack.tab.TABSchedule(shape="constant", peak=2.0),
        erae=None,
        uncond_sees_reference=False,
    )
    x = torch.randn(1, 16, 3, 8, 12, generator=generator)
    context = torch.randn(1, 16, 4096, generator=generator)

    def negative_call(model):
        options = dict(model.model_options.get("transformer_options", {}))
        options["wrappers"] = comfy.patcher_extension.copy_nested_dicts(model.wrappers)
        options["cond_or_uncond"] = [1]
        counter = flop_counter()
        with weights_stay_put(), counter, torch.inference_mode():
            out = model.model.diffusion_model(
                x, torch.full((1,), 500.0), context, transformer_options=options
            )
        return out, counter.get_total_flops()

    plain_out, plain_flops = negative_call(plain)
    patched_out, patched_flops = negative_call(patched)
    assert patched_flops == plain_flops
    assert torch.equal(patched_out, plain_out)
