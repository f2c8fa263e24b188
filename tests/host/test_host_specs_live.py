"""The host-spec table against the real ComfyUI: class names, argument positions, detection."""

from __future__ import annotations

import importlib
import inspect

import pytest
from nodes_support import load_model


@pytest.fixture(scope="module")
def specs(pack_module):
    return importlib.import_module(f"{pack_module.__name__}.customvideox_core.host_specs")


def dit_class(qualified: str) -> type:
    module, _, name = qualified.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_every_named_class_exists_in_this_comfyui(comfy_host, specs):
    for spec in specs.HOST_SPECS.values():
        for qualified in spec.dit_classes + spec.branch_dit_classes:
            assert inspect.isclass(dit_class(qualified)), qualified


def test_argument_positions_match_the_wrapped_forward(comfy_host, specs):
    """The DIFFUSION_MODEL wrapper receives ``_forward``'s positional arguments (without ``self``)."""
    for spec in specs.HOST_SPECS.values():
        for qualified in spec.dit_classes:
            names = list(inspect.signature(dit_class(qualified)._forward).parameters)[1:]
            assert names.index("transformer_options") == spec.transformer_options_index, qualified
            assert names[spec.context_index] == "context", qualified
            if spec.reference_input is not None:
                assert names.index(spec.reference_input.name) == spec.reference_input.index, qualified


def test_tiny_models_are_detected_by_the_table(comfy_host, pack, tiny_models):
    for variant, name in tiny_models.cogvideox.items():
        model = load_model(tiny_models.diffusion_models_dir, name)
        assert pack.patch.host_signature(model).family == "cogvideox", variant
    wan = load_model(tiny_models.diffusion_models_dir, tiny_models.wan)
    assert pack.patch.host_signature(wan).family == "wan"
    sd15 = load_model(tiny_models.diffusion_models_dir, tiny_models.sd15)
    with pytest.raises(ValueError, match="cannot patch this model.*Supported: CogVideoX"):
        pack.patch.host_signature(sd15)
