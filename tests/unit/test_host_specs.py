"""The host-spec table: one entry per family, looked up by name or by a DiT's class."""

from __future__ import annotations

import types

import pytest

from customvideox_core.host_signature import signature_of_dit
from customvideox_core.host_specs import (
    HOST_SPECS,
    SUPPORTED_HOSTS,
    UnsupportedHostError,
    check_branch_dit,
    spec_for,
    spec_of_dit,
)


def fake_class(qualified: str, base: type = object) -> type:
    module, _, name = qualified.rpartition(".")
    return type(name, (base,), {"__module__": module})


def test_every_family_is_named_in_the_supported_hosts_message():
    assert set(HOST_SPECS) == {"cogvideox", "wan"}
    for spec in HOST_SPECS.values():
        assert spec.supported in SUPPORTED_HOSTS
        assert spec_for(spec.family) is spec


@pytest.mark.parametrize("family", ["sd15", None, 3, "CogVideoX"])
def test_an_unknown_family_is_refused_naming_what_is_supported(family):
    with pytest.raises(UnsupportedHostError, match="expected one of cogvideox, wan"):
        spec_for(family)


def test_a_dit_is_recognised_by_its_class_or_a_base_class_name():
    wan_model = fake_class("comfy.ldm.wan.model.WanModel")
    vace = fake_class("comfy.ldm.wan.model.VaceWanModel", wan_model)
    cogvideox = fake_class("comfy.ldm.cogvideo.model.CogVideoXTransformer3DModel")
    assert spec_of_dit(wan_model()) is HOST_SPECS["wan"]
    assert spec_of_dit(vace()) is HOST_SPECS["wan"]
    assert spec_of_dit(cogvideox()) is HOST_SPECS["cogvideox"]
    assert spec_of_dit(fake_class("somewhere.else.WanModel")()) is None
    assert spec_of_dit(object()) is None


def test_the_reference_branch_runs_on_the_plain_wan_class_only():
    wan_model = fake_class("comfy.ldm.wan.model.WanModel")
    check_branch_dit(wan_model())
    for dit in (
        fake_class("comfy.ldm.wan.model.VaceWanModel", wan_model)(),
        fake_class("comfy.ldm.cogvideo.model.CogVideoXTransformer3DModel")(),
        fake_class("somewhere.else.WanModel")(),
    ):
        qualified = f"{type(dit).__module__}.{type(dit).__qualname__}"
        with pytest.raises(ValueError, match=r"runs only on comfy\.ldm\.wan\.model\.WanModel") as error:
            check_branch_dit(dit)
        assert qualified in str(error.value) and "VACE" in str(error.value)


def test_vace_takes_apply_without_a_reference_and_the_number_of_its_prefix_frames():
    wan = HOST_SPECS["wan"]
    wan_model = fake_class("comfy.ldm.wan.model.WanModel")
    vace = fake_class("comfy.ldm.wan.model.VaceWanModel", wan_model)()
    wan.check_route(vace, own_reference=False, prefix_frames=1)
    with pytest.raises(
        ValueError, match=r"VaceWanModel\) with a reference of its own: .*reference_prefix_frames"
    ):
        wan.check_route(vace, own_reference=True, prefix_frames=1)
    with pytest.raises(
        ValueError, match=r"connect WanVaceToVideo's trim_latent to Apply's reference_prefix_frames"
    ):
        wan.check_route(vace, own_reference=False, prefix_frames=0)
    with pytest.raises(
        ValueError, match=r"reference_prefix_frames is 2, but this model \(WanModel\) puts no"
    ):
        wan.check_route(wan_model(), own_reference=False, prefix_frames=2)
    with pytest.raises(ValueError, match=r"reference_prefix_frames is -1; expected 0 or more"):
        wan.check_route(vace, own_reference=False, prefix_frames=-1)
    wan.check_route(wan_model(), own_reference=True)
    cogvideox = HOST_SPECS["cogvideox"]
    with pytest.raises(
        ValueError, match=r"puts no reference frames in front of the video\. Set reference_prefix_frames to 0"
    ):
        cogvideox.check_route(
            fake_class("comfy.ldm.cogvideo.model.CogVideoXTransformer3DModel")(), prefix_frames=1
        )


def test_families_with_the_cached_layout_name_the_classes_its_branch_runs_on():
    for spec in HOST_SPECS.values():
        assert bool(spec.branch_dit_classes) == ("cached" in spec.reference_layouts), spec.family
        assert set(spec.branch_dit_classes) <= set(spec.dit_classes), spec.family


def test_signature_of_a_wan_dit_is_read_from_its_attributes():
    wan_model = fake_class("comfy.ldm.wan.model.WanModel")
    dit = wan_model()
    dit.__dict__.update(dim=1536, num_heads=12, blocks=[None] * 30, patch_size=(1, 2, 2))
    signature = signature_of_dit(dit)
    assert (signature.family, signature.hidden_size, signature.head_dim, signature.patch_size) == (
        "wan",
        1536,
        128,
        2,
    )
    assert signature.patch_size_t is None
    assert signature.variant == "Wan 2.1/2.2 1.3B"


@pytest.mark.parametrize(
    ("positions", "rotary", "learned"),
    [("rope", True, False), ("sincos", False, False), ("learned", False, True)],
)
def test_signature_of_a_cogvideox_dit_names_its_positions(positions, rotary, learned):
    dit = fake_class("comfy.ldm.cogvideo.model.CogVideoXTransformer3DModel")()
    dit.__dict__.update(
        dim=3072,
        num_attention_heads=48,
        attention_head_dim=64,
        blocks=[None] * 42,
        patch_size=2,
        patch_size_t=None,
        use_rotary_positional_embeddings=rotary,
        patch_embed=types.SimpleNamespace(use_learned_positional_embeddings=learned),
    )
    signature = signature_of_dit(dit)
    assert signature.positions == positions
    assert signature.variant == "CogVideoX-5B"


@pytest.mark.parametrize(
    ("family", "diffusers", "native"),
    [
        ("cogvideox", "transformer_blocks.2.attn1.to_out.0", "blocks.2.attn_out"),
        ("cogvideox", "transformer_blocks.0.attn1.processor.to_k", "blocks.0.k"),
        ("cogvideox", "transformer_blocks.0.attn2.to_k", None),
        ("wan", "blocks.1.attn1.to_q", "blocks.1.self_attn.q"),
        ("wan", "blocks.1.attn2.add_k_proj", "blocks.1.cross_attn.k_img"),
        ("wan", "blocks.1.attn1.add_k_proj", None),
        ("wan", "blocks.3.cross_attn.v", "blocks.3.cross_attn.v"),
    ],
)
def test_diffusers_module_paths(family, diffusers, native):
    assert spec_for(family).diffusers_module_path(diffusers) == native


def test_layouts_put_text_in_self_attention_only_where_the_spec_says():
    cogvideox = HOST_SPECS["cogvideox"].make_layout(226, 13, 1, 1350)
    wan = HOST_SPECS["wan"].make_layout(512, 21, 1, 1560)
    assert (cogvideox.text, cogvideox.video, cogvideox.reference) == (226, 13 * 1350, 1350)
    assert (wan.text, wan.video, wan.reference) == (0, 21 * 1560, 1560)
    assert HOST_SPECS["cogvideox"].entity_source == "joint_attention"
    assert HOST_SPECS["wan"].entity_source == "cross_attention"


def test_only_wan_has_a_reference_input_of_its_own():
    assert HOST_SPECS["cogvideox"].reference_input is None
    reference_input = HOST_SPECS["wan"].reference_input
    assert (reference_input.name, reference_input.index) == ("time_dim_concat", 4)
    assert HOST_SPECS["wan"].transformer_options_index == reference_input.index + 1
