"""Core's other Wan routes (issue #20): CustomVideoX Apply refuses each at the node, with its reason.

S2V, HuMo, Animate and the other Wan variants that run blocks or streams of their own sized to the
video's tokens cannot take the pack's appended reference frames. Each is refused by Apply (and by Sample,
which patches through the same ``apply_reference_patch``), before any sampling, with a message naming the
route and what to do instead; the plain Wan the same file loads is still patched. The DiT of each route
is ComfyUI's own class, built tiny and put in a loaded tiny Wan. VACE, whose reference Apply biases, has
its own file (``test_vace.py``).
"""

from __future__ import annotations

import importlib

import pytest
from nodes_support import VIDEO_HEIGHT, VIDEO_WIDTH, load_model, reference_images
from tiny_models import TINY_WAN

ROUTES = {
    "comfy.ldm.wan.model.WanModel_S2V": ("S2V", {}),
    "comfy.ldm.wan.model.HumoWanModel": ("HuMo", {}),
    "comfy.ldm.wan.model_animate.AnimateWanModel": ("Animate", {}),
}


def tiny_dit(qualified: str, extra: dict):
    from comfy.ops import disable_weight_init

    module, name = qualified.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    return cls(model_type="t2v", **TINY_WAN.model_kwargs(), operations=disable_weight_init, **extra)


@pytest.fixture(scope="module")
def reference(comfy_host, vae):
    encode = comfy_host.node_class("CustomVideoXReferenceEncode")
    return encode.execute(vae, reference_images(1), VIDEO_WIDTH, VIDEO_HEIGHT, "pad", False, None).args[0]


@pytest.mark.parametrize("qualified", list(ROUTES))
def test_apply_and_sample_refuse_the_route_naming_it(comfy_host, tiny_models, reference, qualified):
    route, extra = ROUTES[qualified]
    model = load_model(tiny_models.diffusion_models_dir, tiny_models.wan)
    apply = comfy_host.node_class("CustomVideoXApply")
    apply.execute(model, reference)  # the plain Wan of this file is patched
    model.model.diffusion_model = tiny_dit(qualified, extra)
    for given in (reference, None):
        with pytest.raises(ValueError, match=rf"CustomVideoX cannot run on this model .*{route}.*Instead"):
            apply.execute(model, given)


def test_every_refused_route_names_a_class_of_this_comfyui(pack_module, comfyui_path):
    """A misspelt name in the table would refuse nothing; routes newer than a ComfyUI are absent there."""
    from harness import read_comfyui_version

    wan = importlib.import_module(f"{pack_module.__name__}.customvideox_core.host_specs.wan")
    missing = []
    for qualified in (*wan.REFUSED_ROUTES, *wan.PREFIX_ROUTES):
        module, name = qualified.rsplit(".", 1)
        try:
            found = getattr(importlib.import_module(module), name, None)
        except ModuleNotFoundError:
            found = None
        if found is None:
            missing.append(qualified)
    newer_than_0_21 = {"comfy.ldm.wan.model.SCAIL2WanModel", "comfy.ldm.wan.model_animate2.WanAnimate2Model"}
    allowed = newer_than_0_21 if read_comfyui_version(comfyui_path) < (0, 33, 0) else set()
    assert set(missing) <= allowed, missing
