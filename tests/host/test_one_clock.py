"""One clock (issue 22): TAB reads the model's own time, so a schedule split over samplers is one run.

Tiny random-weight Wan 2.1 (flow, shift) and CogVideoX-5B (DDPM v-prediction sigmas) built with ComfyUI's
own classes. Oracles: one 6-step sampling against the same schedule run as two KSamplerAdvanced (steps 0–3
and 3–6); the TAB value each model call applies against a float64 closed-form mean of the parabola over
the stretch of the model's time that its step covers.
"""

from __future__ import annotations

import logging

import pytest
import torch
from nodes_support import (
    LATENT_SHAPE,
    STANDIN_MODULES,
    VIDEO_HEIGHT,
    VIDEO_WIDTH,
    conditioning,
    load_model,
    pack_modules,
    reference_images,
)

STEPS, SPLIT = 6, 3
SPLIT_ATOL = 1e-5
"""One run and its split compute the same numbers in the same order; only sampler bookkeeping differs."""


@pytest.fixture(scope="module")
def mods(pack_module) -> dict:
    return vars(pack_modules(pack_module, STANDIN_MODULES))


@pytest.fixture(scope="module")
def models(tiny_models) -> dict:
    return {
        "wan": load_model(tiny_models.diffusion_models_dir, tiny_models.wan),
        "cogvideox-5b": load_model(tiny_models.diffusion_models_dir, tiny_models.cogvideox["5b"]),
    }


@pytest.fixture(scope="module")
def references(comfy_host, vae) -> dict:
    node = comfy_host.node_class("CustomVideoXReferenceEncode")
    return {
        size: node.execute(
            vae, reference_images(1, height=size[1], width=size[0]), *size, "pad", False, None
        ).args[0]
        for size in ((VIDEO_WIDTH, VIDEO_HEIGHT), (64, 64))
    }


def schedules(tab) -> dict:
    return {
        "parabolic": tab.TABSchedule(peak=3.0),
        "parabolic-window": tab.TABSchedule(peak=3.0, floor=0.5, start=0.1, end=0.7),
        "linear": tab.TABSchedule("linear", peak=3.0, floor=-1.0),
        "custom": tab.TABSchedule("custom", values=(0.0, 4.0, 1.0, 2.0)),
        "constant": tab.TABSchedule("constant", peak=2.0),
    }


SHAPES = ["parabolic", "parabolic-window", "linear", "custom", "constant"]


def run(model, *, start=None, last=None, latent=None, disable_noise=False, force_full_denoise=False):
    import comfy.sample

    empty = torch.zeros(LATENT_SHAPE)
    # KSamplerAdvanced's add_noise "disable" passes zero noise (comfy.sample.sample does not read disable_noise)
    noise = torch.zeros(LATENT_SHAPE) if disable_noise else comfy.sample.prepare_noise(empty, 3)
    return comfy.sample.sample(
        model,
        noise,
        STEPS,
        2.0,
        "euler",
        "simple",
        conditioning(1),
        conditioning(2),
        empty if latent is None else latent,
        start_step=start,
        last_step=last,
        force_full_denoise=force_full_denoise,
        disable_pbar=True,
        seed=3,
    )


def split_run(first, second):
    """KSamplerAdvanced twice over one schedule: steps 0–3 with leftover noise, then 3–6 (Wan 2.2's experts)."""
    half = run(first, start=0, last=SPLIT)
    return run(second, start=SPLIT, last=STEPS, latent=half, disable_noise=True, force_full_denoise=True)


def assert_close(split, whole):
    difference = (split - whole).abs().max().item()
    assert difference < SPLIT_ATOL, f"split sampling differs from one run by {difference:.3g}"


def apply(mods, model, reference, schedule):
    return mods["patch"].apply_reference_patch(
        model, reference, tab=schedule, erae=None, uncond_sees_reference=True
    )


class TABSpy:
    """Records the TAB value of every model call's biased rows, as the DiT's ``forward_orig`` receives the
    call (inside every ``DIFFUSION_MODEL`` wrapper, the pack's included: they run innermost)."""

    def __init__(self, runtime_key: str) -> None:
        self.runtime_key = runtime_key
        self.values: list[float] = []

    def record(self, options: dict) -> None:
        # The one runtime of the call: b(s) of each row for each term of every reference source.
        self.values.append(float(options[self.runtime_key].plan.term_tab.max()))


def spied(model, runtime_key: str) -> tuple[object, TABSpy]:
    """A clone of a Wan ``model`` whose DiT's ``forward_orig`` (an object patch) reports each call to a spy."""
    spy = TABSpy(runtime_key)
    clone = model.clone()
    dit = clone.get_model_object("diffusion_model")
    original = type(dit).forward_orig  # the class's: another clone's object patch may still be on the module

    def forward_orig(*args, **kwargs):
        spy.record(kwargs["transformer_options"])
        return original(dit, *args, **kwargs)

    clone.add_object_patch("diffusion_model.forward_orig", forward_orig)
    return clone, spy


@pytest.mark.parametrize("host", ["wan", "cogvideox-5b"])
@pytest.mark.parametrize("shape", SHAPES)
def test_split_samplers_equal_one_run(mods, models, references, host, shape):
    """Steps 0–3 and 3–6 of one schedule in two samplers give one 6-step run, at every TAB shape."""
    patched = apply(
        mods, models[host], references[(VIDEO_WIDTH, VIDEO_HEIGHT)], schedules(mods["tab"])[shape]
    )
    assert_close(split_run(patched, patched), run(patched))


@pytest.mark.parametrize("shape", ["parabolic", "custom"])
def test_two_experts_each_patched_with_apply_equal_one_run(mods, tiny_models, models, references, shape):
    """Wan 2.2's two experts: two model objects, each patched with its own Apply, read one clock. With equal
    weights the split equals one run of either."""
    schedule = schedules(mods["tab"])[shape]
    reference = references[(VIDEO_WIDTH, VIDEO_HEIGHT)]
    high = apply(mods, models["wan"], reference, schedule)
    low = apply(mods, load_model(tiny_models.diffusion_models_dir, tiny_models.wan), reference, schedule)
    assert_close(split_run(high, low), run(high))


def test_two_experts_with_apply_standin_equal_one_run(mods, tiny_models, models, references):
    from standin_oracle import lora_state

    lora = mods["lora"].parse_standin_state_dict(lora_state(), source="test")
    schedule = schedules(mods["tab"])["parabolic"]

    def standin(model):
        return mods["standin_nodes"].apply_standin(
            model,
            lora,
            references[(64, 64)],
            strength=1.0,
            tab=schedule,
            erae=None,
            uncond_sees_reference=True,
        )

    high = standin(models["wan"])
    low = standin(load_model(tiny_models.diffusion_models_dir, tiny_models.wan))
    assert_close(split_run(high, low), run(high))


def test_experts_with_different_weights_apply_the_one_run_curve(mods, tiny_models, models, references):
    """Different experts (Apply and Apply Stand-In): the TAB value of every call is the one run's."""
    from standin_oracle import lora_state
    from tiny_models import write_tiny_wan

    name = "cvx_tiny_wan21_t2v_expert2.safetensors"
    write_tiny_wan(tiny_models.diffusion_models_dir / name, seed=7)
    other = load_model(tiny_models.diffusion_models_dir, name)
    schedule = schedules(mods["tab"])["parabolic"]
    lora = mods["lora"].parse_standin_state_dict(lora_state(), source="test")
    patches = (
        lambda m: apply(mods, m, references[(VIDEO_WIDTH, VIDEO_HEIGHT)], schedule),
        lambda m: mods["standin_nodes"].apply_standin(
            m, lora, references[(64, 64)], strength=1.0, tab=schedule, erae=None, uncond_sees_reference=True
        ),
    )
    runtime_key = mods["patch"].RUNTIME_KEY  # one runtime for every reference source
    for patch in patches:
        whole, whole_spy = spied(patch(models["wan"]), runtime_key)
        run(whole)
        high, high_spy = spied(patch(models["wan"]), runtime_key)
        low, low_spy = spied(patch(other), runtime_key)
        split_run(high, low)
        assert high_spy.values + low_spy.values == pytest.approx(whole_spy.values, abs=1e-6)
        assert len(whole_spy.values) == STEPS


def parabola_mean(peak: float, start: float, end: float) -> float:
    """Closed form of the mean of peak · 4s(1 − s) over [start, end] (float64 oracle)."""
    integral = 4.0 * ((end**2 - start**2) / 2.0 - (end**3 - start**3) / 3.0)
    return peak * integral / (end - start)


def flow_percents(model, steps: int) -> list[float]:
    """The model's time of each sigma of Wan's "simple" schedule, by the closed-form inverse of the shifted
    flow's percent_to_sigma (sigma = shift·t / (1 + (shift − 1)·t), percent = 1 − t)."""
    import comfy.samplers

    sampling = model.get_model_object("model_sampling")
    shift = float(sampling.shift)
    sigmas = comfy.samplers.calculate_sigmas(sampling, "simple", steps).double().tolist()
    return [1.0 - sigma / (shift - (shift - 1.0) * sigma) for sigma in sigmas]


@pytest.mark.parametrize("steps", [2, 6])
def test_one_sampler_applies_the_mean_over_each_steps_stretch(mods, models, references, steps):
    """The saved single-sampler graph's new behaviour: Wan's "simple" schedule spaces its steps evenly on the
    model's time (to the table's 1/1000), so step i applies the parabola's mean over about [i/n, (i+1)/n] —
    with 2 steps, about 2/3 of the peak at both (the old clock read 0 at both and the TAB did nothing)."""
    import comfy.sample

    schedule = mods["tab"].TABSchedule(peak=3.0)
    patched, spy = spied(
        apply(mods, models["wan"], references[(VIDEO_WIDTH, VIDEO_HEIGHT)], schedule), "cvx_runtime"
    )
    empty = torch.zeros(LATENT_SHAPE)
    noise = comfy.sample.prepare_noise(empty, 3)
    common = ("euler", "simple", conditioning(1), conditioning(2), empty)
    biased = comfy.sample.sample(patched, noise, steps, 2.0, *common, disable_pbar=True, seed=3)
    percents = flow_percents(patched, steps)
    assert percents == pytest.approx([i / steps for i in range(steps + 1)], abs=0.01)  # evenly spaced
    expected = [parabola_mean(3.0, a, b) for a, b in zip(percents, percents[1:], strict=False)]
    assert spy.values == pytest.approx(expected, abs=1e-5)
    zero = apply(
        mods, models["wan"], references[(VIDEO_WIDTH, VIDEO_HEIGHT)], mods["tab"].TABSchedule(peak=0.0)
    )
    plain = comfy.sample.sample(zero, noise, steps, 2.0, *common, disable_pbar=True, seed=3)
    assert (biased - plain).abs().max().item() > 1e-3, "the TAB must act with few steps"


def test_a_tab_that_misses_every_step_warns(mods, models, references, caplog):
    """Steps 3–6 of 6 cover the model's time 0.5–1; a TAB window of 0–0.3 gives no bias there: warn."""
    reference = references[(VIDEO_WIDTH, VIDEO_HEIGHT)]
    early = apply(mods, models["wan"], reference, mods["tab"].TABSchedule(peak=3.0, start=0.0, end=0.3))
    with caplog.at_level(logging.WARNING):
        run(early, start=SPLIT, last=STEPS, disable_noise=False, force_full_denoise=True)
    assert "is 0 at every step" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        run(early)
    assert "is 0 at every step" not in caplog.text


def test_tab_node_gives_custom_values_the_range_of_peak(comfy_host):
    """Issue 21, case 11: custom_values 1e30 is refused like peak 1e30 (both within ±20)."""
    node = comfy_host.node_class("CustomVideoXTimeAwareBias")
    with pytest.raises(ValueError, match=r"custom value at index 1 must lie in \[-20, 20\]"):
        node.execute("custom", 1.0, 0.0, 0.0, 1.0, "0, 1e30")
    schedule = node.execute("custom", 1.0, 0.0, 0.0, 1.0, "0, -20, 20").args[0]
    assert schedule.values == (0.0, -20.0, 20.0)
    peak = next(spec for spec in node.GET_NODE_INFO_V1()["input"]["required"].items() if spec[0] == "peak")
    assert (peak[1][1]["min"], peak[1][1]["max"]) == (-20.0, 20.0)
