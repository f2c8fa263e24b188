"""Host signatures: names, metadata round trip, validation, attention target names."""

import re

import pytest
from host_signatures import COGVIDEOX_2B, COGVIDEOX_5B, COGVIDEOX_15, WAN_1_3B, WAN_14B, WAN_22_5B
from hypothesis import given, settings
from hypothesis import strategies as st

from customvideox_core.host_signature import (
    SUPPORTED_HOSTS,
    HostSignature,
    UnsupportedHostError,
    attention_module_regex,
    attention_targets,
)


@pytest.mark.parametrize(
    ("signature", "variant"),
    [
        (COGVIDEOX_2B, "CogVideoX-2B"),
        (COGVIDEOX_5B, "CogVideoX-5B"),
        (COGVIDEOX_15, "CogVideoX-1.5-5B"),
        (WAN_1_3B, "Wan 2.1/2.2 1.3B"),
        (WAN_14B, "Wan 2.1/2.2 14B"),
        (WAN_22_5B, "Wan 2.2 5B"),
        (HostSignature("cogvideox", 64, 2, 2, 32, 2), "cogvideox (64 wide, 2 layers)"),
        (HostSignature("wan", 48, 3, 3, 16, 1), "wan (48 wide, 3 layers)"),
    ],
)
def test_variant_names(signature, variant):
    assert signature.variant == variant


def test_description_names_sizes_once():
    assert COGVIDEOX_2B.description == "CogVideoX-2B (1920 wide, 30 layers)"
    assert HostSignature("wan", 48, 3, 3, 16, 1).description == "wan (48 wide, 3 layers)"


signatures = st.builds(
    lambda family, heads, head_dim, layers, patch, patch_t, positions: HostSignature(
        family, heads * head_dim, layers, heads, head_dim, patch, patch_t, positions
    ),
    st.sampled_from(["cogvideox", "wan"]),
    st.integers(1, 64),
    st.integers(1, 256),
    st.integers(1, 64),
    st.integers(1, 4),
    st.one_of(st.none(), st.integers(1, 4)),
    st.sampled_from(["rope", "sincos", "learned"]),
)


@settings(max_examples=40, deadline=None)
@given(signatures)
def test_metadata_round_trip(signature):
    metadata = signature.to_metadata()
    assert all(isinstance(key, str) and isinstance(value, str) for key, value in metadata.items())
    assert HostSignature.from_metadata(metadata) == signature


def test_unsupported_family_names_what_was_given_and_what_is_supported():
    with pytest.raises(UnsupportedHostError) as caught:
        HostSignature("hunyuan", 3072, 42, 48, 64, 2)
    assert "hunyuan" in str(caught.value)
    assert SUPPORTED_HOSTS in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hidden_size": 3000},  # 48 * 64 != 3000
        {"num_layers": 0},
        {"patch_size": -1},
        {"patch_size_t": 0},
        {"positions": "alibi"},
        {"num_heads": 48.0},
    ],
)
def test_invalid_signatures_are_refused(kwargs):
    base = {"family": "cogvideox", "hidden_size": 3072, "num_layers": 42, "num_heads": 48, "head_dim": 64}
    base["patch_size"] = 2
    base.update(kwargs)
    with pytest.raises(ValueError, match="HostSignature"):
        HostSignature(**base)


def test_from_metadata_names_missing_and_malformed_keys():
    metadata = COGVIDEOX_5B.to_metadata()
    del metadata["host.num_layers"]
    with pytest.raises(ValueError, match="host.num_layers"):
        HostSignature.from_metadata(metadata)
    metadata = COGVIDEOX_5B.to_metadata() | {"host.hidden_size": "wide"}
    with pytest.raises(ValueError, match="'wide'"):
        HostSignature.from_metadata(metadata)


def test_attention_targets_are_comfyui_module_names():
    assert attention_targets("cogvideox") == ("q", "k", "v", "attn_out")
    assert attention_targets("wan") == ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o")
    with pytest.raises(UnsupportedHostError, match="ltx"):
        attention_targets("ltx")


@pytest.mark.parametrize(
    ("family", "name", "matches"),
    [
        ("cogvideox", "blocks.0.q", True),
        ("cogvideox", "blocks.41.attn_out", True),
        ("cogvideox", "diffusion_model.blocks.3.v", True),
        ("cogvideox", "blocks.3.ff_proj", False),
        ("cogvideox", "blocks.3.norm_q", False),
        ("cogvideox", "blocks.3.qq", False),
        ("cogvideox", "blocks.3", False),
        ("cogvideox", "patch_embed.proj", False),
        ("wan", "blocks.2.self_attn.o", True),
        ("wan", "diffusion_model.blocks.2.self_attn.k", True),
        ("wan", "blocks.2.cross_attn.q", False),
        ("wan", "vace_blocks.0.self_attn.q", False),
        ("wan", "blocks.2.self_attn.norm_q", False),
        ("wan", "blocks.2.q", False),
    ],
)
def test_attention_module_regex(family, name, matches):
    assert bool(re.fullmatch(attention_module_regex(family), name)) is matches


def test_attention_module_regex_without_prefix_and_custom_targets():
    assert re.fullmatch(attention_module_regex("cogvideox", allow_prefix=False), "blocks.1.q")
    assert not re.fullmatch(attention_module_regex("cogvideox", allow_prefix=False), "x.blocks.1.q")
    pattern = attention_module_regex("cogvideox", ("q", "v"))
    assert re.fullmatch(pattern, "blocks.1.v")
    assert not re.fullmatch(pattern, "blocks.1.k")
