"""LoRA key conversion to ComfyUI's generic form, against hand-written expected keys."""

import pytest
import torch

from customvideox_core.lora_keys import ConvertedAdapter, comfy_module_path, to_comfy_lora


def pair(rank=2, out_features=8, in_features=8):
    return torch.randn(rank, in_features), torch.randn(out_features, rank)


@pytest.mark.parametrize(
    ("family", "name", "expected"),
    [
        # ComfyUI-native, with the wrapper prefixes peft and trainers add.
        ("cogvideox", "blocks.3.attn_out", "blocks.3.attn_out"),
        ("cogvideox", "diffusion_model.blocks.3.q", "blocks.3.q"),
        ("cogvideox", "base_model.model.blocks.3.k", "blocks.3.k"),
        ("cogvideox", "transformer.blocks.0.v", "blocks.0.v"),
        ("cogvideox", "base_model.model.diffusion_model.blocks.1.q", "blocks.1.q"),
        # diffusers CogVideoX.
        ("cogvideox", "transformer.transformer_blocks.7.attn1.to_q", "blocks.7.q"),
        ("cogvideox", "transformer_blocks.7.attn1.to_k", "blocks.7.k"),
        ("cogvideox", "transformer_blocks.7.attn1.to_v", "blocks.7.v"),
        ("cogvideox", "transformer_blocks.7.attn1.to_out.0", "blocks.7.attn_out"),
        ("cogvideox", "transformer_blocks.7.attn1.processor.to_out", "blocks.7.attn_out"),
        # kohya-style flattened.
        ("cogvideox", "lora_unet_blocks_12_attn_out", "blocks.12.attn_out"),
        ("cogvideox", "lora_transformer_transformer_blocks_2_attn1_to_out_0", "blocks.2.attn_out"),
        # Wan native and diffusers.
        ("wan", "diffusion_model.blocks.4.self_attn.o", "blocks.4.self_attn.o"),
        ("wan", "blocks.4.cross_attn.k_img", "blocks.4.cross_attn.k_img"),
        ("wan", "transformer.blocks.4.attn1.to_q", "blocks.4.self_attn.q"),
        ("wan", "blocks.4.attn1.to_out.0", "blocks.4.self_attn.o"),
        ("wan", "blocks.4.attn2.to_v", "blocks.4.cross_attn.v"),
        ("wan", "blocks.4.attn2.add_k_proj", "blocks.4.cross_attn.k_img"),
        ("wan", "lora_unet_blocks_0_self_attn_q", "blocks.0.self_attn.q"),
        ("wan", "lora_unet_blocks_0_cross_attn_v_img", "blocks.0.cross_attn.v_img"),
        ("wan", "lora_transformer_blocks_5_attn1_to_out_0", "blocks.5.self_attn.o"),
    ],
)
def test_module_names_map_to_comfyui_paths(family, name, expected):
    assert comfy_module_path(name, family) == expected


@pytest.mark.parametrize(
    ("family", "name"),
    [
        ("cogvideox", "blocks.3.ff_proj"),
        ("cogvideox", "blocks.3.self_attn.q"),  # a Wan name on CogVideoX
        ("cogvideox", "blocks.3.attn1.to_q"),  # Wan's diffusers layout, not CogVideoX's
        ("cogvideox", "vae.blocks.3.q"),
        ("wan", "blocks.3.q"),  # a CogVideoX name on Wan
        ("wan", "blocks.3.ffn.0"),
        ("wan", "blocks.3.attn1.add_k_proj"),
        ("wan", "lora_unet_blocks_0_ffn_0"),
        ("wan", "vace_blocks.0.self_attn.q"),
    ],
)
def test_non_attention_or_foreign_names_are_not_mapped(family, name):
    assert comfy_module_path(name, family) is None


def test_peft_in_memory_keys_convert_with_alpha():
    down, up = pair()
    converted = to_comfy_lora(
        {
            "base_model.model.blocks.0.q.lora_A.default.weight": down,
            "base_model.model.blocks.0.q.lora_B.default.weight": up,
            "base_model.model.blocks.0.q.alpha": torch.tensor(4),
        },
        "cogvideox",
    )
    assert isinstance(converted, ConvertedAdapter)
    assert set(converted.state_dict) == {
        "diffusion_model.blocks.0.q.lora_A.weight",
        "diffusion_model.blocks.0.q.lora_B.weight",
        "diffusion_model.blocks.0.q.alpha",
    }
    assert converted.state_dict["diffusion_model.blocks.0.q.lora_A.weight"] is down
    assert converted.state_dict["diffusion_model.blocks.0.q.lora_B.weight"] is up
    alpha = converted.state_dict["diffusion_model.blocks.0.q.alpha"]
    assert alpha.shape == () and alpha.dtype == torch.float32 and alpha.item() == 4.0
    assert converted.unmatched == () and converted.mismatched == ()
    assert converted.modules == ("blocks.0.q",)


def test_diffusers_and_kohya_tensor_suffixes_convert():
    down_q, up_q = pair()
    down_o, up_o = pair()
    converted = to_comfy_lora(
        {
            "transformer.transformer_blocks.1.attn1.to_q.lora_A.weight": down_q,
            "transformer.transformer_blocks.1.attn1.to_q.lora_B.weight": up_q,
            "lora_unet_blocks_1_attn_out.lora_down.weight": down_o,
            "lora_unet_blocks_1_attn_out.lora_up.weight": up_o,
            "lora_unet_blocks_1_attn_out.alpha": torch.tensor([1.0]),
        },
        "cogvideox",
    )
    assert converted.unmatched == ()
    assert converted.state_dict["diffusion_model.blocks.1.q.lora_A.weight"] is down_q
    assert converted.state_dict["diffusion_model.blocks.1.q.lora_B.weight"] is up_q
    assert converted.state_dict["diffusion_model.blocks.1.attn_out.lora_A.weight"] is down_o
    assert converted.state_dict["diffusion_model.blocks.1.attn_out.lora_B.weight"] is up_o
    assert converted.state_dict["diffusion_model.blocks.1.attn_out.alpha"].item() == 1.0
    assert converted.modules == ("blocks.1.attn_out", "blocks.1.q")


def test_garbage_and_unknown_keys_are_reported_never_raised():
    down, up = pair()
    state = {
        "blocks.0.k.lora_A.weight": down,
        "blocks.0.k.lora_B.weight": up,
        "blocks.0.ff_proj.lora_A.weight": down,  # not an attention module
        "blocks.0.ff_proj.lora_B.weight": up,
        "blocks.0.v.lora_A.weight": down,  # half a pair
        "blocks.0.q.lora_A.weight": "not a tensor",
        "blocks.0.q.lora_B.weight": up,
        "blocks.0.q.hada_w1_a": down,  # unknown tensor kind
        "lora_A.weight": down,  # no module at all
        "": up,
        7: up,
    }
    converted = to_comfy_lora(state, "cogvideox")
    assert converted.modules == ("blocks.0.k",)
    assert set(converted.unmatched) == {
        "blocks.0.ff_proj.lora_A.weight",
        "blocks.0.ff_proj.lora_B.weight",
        "blocks.0.v.lora_A.weight",
        "blocks.0.q.lora_A.weight",
        "blocks.0.q.lora_B.weight",
        "blocks.0.q.hada_w1_a",
        "lora_A.weight",
        "",
        "7",
    }


def test_duplicate_names_for_one_tensor_keep_the_first_and_report_the_rest():
    down, up = pair()
    converted = to_comfy_lora(
        {
            "blocks.0.q.lora_A.weight": down,
            "blocks.0.q.lora_B.weight": up,
            "diffusion_model.blocks.0.q.lora_down.weight": torch.zeros_like(down),
        },
        "cogvideox",
    )
    assert converted.state_dict["diffusion_model.blocks.0.q.lora_A.weight"] is down
    assert converted.unmatched == ("diffusion_model.blocks.0.q.lora_down.weight",)


def test_known_modules_report_keys_for_absent_blocks():
    down, up = pair()
    state = {
        "blocks.0.q.lora_A.weight": down,
        "blocks.0.q.lora_B.weight": up,
        "blocks.40.q.lora_A.weight": down,  # a deeper model's block
        "blocks.40.q.lora_B.weight": up,
    }
    known = ["diffusion_model.blocks.0.q", "diffusion_model.blocks.0.k", "diffusion_model.blocks.1.q"]
    converted = to_comfy_lora(state, "cogvideox", known_modules=known)
    assert converted.modules == ("blocks.0.q",)
    assert set(converted.unmatched) == {"blocks.40.q.lora_A.weight", "blocks.40.q.lora_B.weight"}


def test_shape_disagreements_are_reported_as_mismatched():
    down, up = pair(rank=2, out_features=8, in_features=8)
    bad_rank_up = torch.randn(8, 3)
    state = {
        "blocks.0.q.lora_A.weight": down,
        "blocks.0.q.lora_B.weight": up,
        "blocks.1.q.lora_A.weight": down,  # rank 2 vs rank 3
        "blocks.1.q.lora_B.weight": bad_rank_up,
        "blocks.2.q.lora_A.weight": down,  # fits each other but not the host (16 wide)
        "blocks.2.q.lora_B.weight": up,
        "blocks.3.q.lora_A.weight": down,
        "blocks.3.q.lora_B.weight": up,
        "blocks.3.q.alpha": torch.ones(2),  # alpha must be one number
    }
    shapes = {"blocks.0.q": (8, 8), "blocks.1.q": (8, 8), "diffusion_model.blocks.2.q": (16, 16)}
    converted = to_comfy_lora(state, "cogvideox", known_shapes=shapes)
    assert converted.modules == ("blocks.0.q",)
    assert set(converted.mismatched) == {key for key in state if not key.startswith("blocks.0.")}
    assert converted.unmatched == ()


def test_wan_adapter_on_cogvideox_matches_nothing():
    down, up = pair()
    state = {"blocks.0.self_attn.q.lora_A.weight": down, "blocks.0.self_attn.q.lora_B.weight": up}
    converted = to_comfy_lora(state, "cogvideox")
    assert converted.state_dict == {}
    assert set(converted.unmatched) == set(state)


def test_mismatch_details_name_the_layer_and_both_shapes():
    """A 96-wide pair on a 128-wide layer (issue 21, case 4): the details say which and how."""
    down, up = torch.randn(4, 96), torch.randn(96, 4)
    state = {"blocks.0.q.lora_A.weight": down, "blocks.0.q.lora_B.weight": up}
    converted = to_comfy_lora(state, "cogvideox", known_shapes={"diffusion_model.blocks.0.q": (128, 128)})
    assert converted.state_dict == {}
    assert converted.mismatch_details == (
        "blocks.0.q: lora_A (4, 96) and lora_B (96, 4), the layer is (128, 128)",
    )
    fitting = to_comfy_lora(state, "cogvideox", known_shapes={"blocks.0.q": (96, 96)})
    assert fitting.mismatch_details == () and len(fitting.state_dict) == 2
