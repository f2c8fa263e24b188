"""Issue 21's silent failures and unclear messages, each sent as that exact input through ComfyUI.

NaN float inputs (every float input of every pack node), adapters of the wrong width or with NaN
weights, a NaN Stand-In file, Wan entity words past the conditioning, an empty (all-zero) mask,
ERAE entity words that are not words, sizes ReferenceEncode refuses, and Train's alpha NaN.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from harness import GraphExecutionError, GraphValidationError
from nodes_support import PACK_NODE_IDS, load_model
from test_nodes_graphs import (
    lora_tensors,
    six_node_graph,
    tiny_host_signature,
    write_adapter,
    write_reference_png,
)
from test_nodes_graphs import reference_png as reference_png  # the fixture, shared

NON_FINITE = (math.nan, math.inf, -math.inf)


def _error_of(comfy_host, graph) -> str:
    with pytest.raises((GraphExecutionError, GraphValidationError)) as caught:
        comfy_host.run_graph(graph)
    if isinstance(caught.value, GraphExecutionError):
        assert caught.value.exception_type.rsplit(".", 1)[-1] in {
            "ValueError",
            "NonFiniteError",
            "UnsafeNameError",
            "StandInFileError",
        }, caught.value
        return caught.value.exception_message
    return str(caught.value)


# ---------------------------------------------------------------------------------------------------
# 6. NaN and infinity over the API
# ---------------------------------------------------------------------------------------------------


def _float_inputs(comfy_host):
    from comfy_api.latest import io

    for node_id in sorted(PACK_NODE_IDS):
        node = comfy_host.node_class(node_id)
        for item in node.define_schema().inputs:
            if isinstance(item, io.Float.Input):
                yield node_id, node, item


def test_every_float_input_of_every_node_refuses_nan_and_infinity(comfy_host) -> None:
    """The check runs before anything else, so the other inputs may be absent: the message must be the
    finite-number refusal naming the node's input and its range."""
    seen = set()
    for node_id, node, item in _float_inputs(comfy_host):
        seen.add(f"{node_id}.{item.id}")
        for value in NON_FINITE:
            with pytest.raises(ValueError) as caught:
                node.execute(**{item.id: value})
            message = str(caught.value)
            assert f"{item.id} is {value!r}" in message and "finite number" in message, (node_id, message)
            assert f"between {item.min:g} and {item.max:g}" in message, (node_id, message)
    expected = {
        "LoadCustomVideoX.strength",
        "CustomVideoXApplyStandIn.strength",
        "CustomVideoXSample.cfg",
        "CustomVideoXSample.denoise",
        "CustomVideoXTrainAdapter.alpha",
        "CustomVideoXTrainSettings.alpha",
        "CustomVideoXTimeAwareBias.peak",
        "CustomVideoXERAEMask.strength",
    }
    assert expected <= seen, expected - seen


@pytest.mark.parametrize(
    ("node", "name"),
    [("2", "strength"), ("11", "cfg"), ("11", "denoise")],
)
@pytest.mark.parametrize("value", NON_FINITE, ids=["nan", "inf", "-inf"])
def test_nan_through_the_executor_is_refused_by_name(
    comfy_host, tiny_models, reference_png, node, name, value
):
    """``LoadCustomVideoX.strength`` and ``Sample.cfg``/``denoise`` NaN gave a NaN video or "cannot
    convert float NaN to integer": ComfyUI's own range check lets NaN through (infinity it refuses
    itself, naming the input and the range)."""
    graph = six_node_graph(tiny_models)
    graph[node]["inputs"][name] = value
    message = _error_of(comfy_host, graph)
    if math.isnan(value):
        assert f"{name} is nan" in message and "finite number" in message, message
    else:
        assert name in message and ("bigger than max" in message or "smaller than min" in message), message


def test_nan_over_http_is_refused_by_name(comfy_server, tiny_models) -> None:
    """The issue's path: a JSON prompt with ``NaN`` posted to a real server (ComfyUI's JSON parser takes
    the literal, and its range check lets it through)."""
    write_reference_png(comfy_server.base_dir / "input")
    graph = six_node_graph(tiny_models)
    graph["2"]["inputs"]["strength"] = math.nan
    with pytest.raises(GraphExecutionError) as caught:
        comfy_server.run_graph(graph, timeout=180)
    assert caught.value.node_id == "2"
    assert "strength is nan; it must be a finite number between -4 and 4" in caught.value.exception_message


def test_a_good_graph_still_runs(comfy_host, tiny_models, reference_png) -> None:
    result = comfy_host.run_graph(six_node_graph(tiny_models), capture=["11"])
    assert bool(torch.isfinite(result.node_outputs["11"][0]["samples"]).all())


# ---------------------------------------------------------------------------------------------------
# 4, 5. Adapters of the wrong width or with NaN weights
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metadata_width", [96, 128])
def test_adapter_of_another_width_is_refused_with_layer_and_shapes(
    comfy_host, pack, tiny_models, metadata_width
):
    """96-wide tensors on the 128-wide tiny model were "8 layers patched" and changed nothing; with
    metadata that claims 96 the host check refuses it, with metadata that claims 128 the shape check."""
    model = load_model(tiny_models.diffusion_models_dir, tiny_models.cogvideox["5b"])
    name = write_adapter(
        pack,
        comfy_host,
        f"cvx_test_width96_meta{metadata_width}.safetensors",
        lora_tensors(hidden=96),
        dataclasses.replace(
            tiny_host_signature(pack), hidden_size=metadata_width, head_dim=metadata_width // 2
        ),
    )
    with pytest.raises(ValueError) as caught:
        comfy_host.node_class("LoadCustomVideoX").execute(model=model, adapter=name, strength=1.0)
    message = str(caught.value)
    if metadata_width == 128:
        assert "blocks.0.attn1.to_q" in message or "blocks.0" in message, message
        assert "(4, 96)" in message and "(96, 4)" in message and "(128, 128)" in message, message
    else:
        assert "96" in message and "128" in message, message


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_adapter_with_non_finite_weights_is_refused_at_load(comfy_host, pack, tiny_models, bad) -> None:
    model = load_model(tiny_models.diffusion_models_dir, tiny_models.cogvideox["5b"])
    tensors = lora_tensors()
    key = sorted(tensors)[3]
    tensors[key][0, 0] = bad
    name = write_adapter(
        pack, comfy_host, "cvx_test_nan_weights.safetensors", tensors, tiny_host_signature(pack)
    )
    with pytest.raises(ValueError) as caught:
        comfy_host.node_class("LoadCustomVideoX").execute(model=model, adapter=name, strength=1.0)
    message = str(caught.value)
    assert "NaN or infinite" in message and key in message and "1 of 16 tensors" in message


def test_standin_file_with_nan_weights_is_refused_at_load(comfy_host, tiny_models) -> None:
    from safetensors.torch import save_file

    folder = comfy_host.models_dir / "loras"
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for block in range(2):
        for projection in ("q", "k", "v"):
            tensors[f"blocks.{block}.self_attn.{projection}_loras.down.weight"] = torch.randn(4, 128)
            tensors[f"blocks.{block}.self_attn.{projection}_loras.up.weight"] = torch.randn(128, 4)
    tensors["blocks.1.self_attn.v_loras.up.weight"][3, 2] = math.nan
    save_file(tensors, str(folder / "cvx_test_standin_nan.safetensors"))
    loader = comfy_host.node_class("CustomVideoXLoadStandIn")
    with pytest.raises(ValueError) as caught:
        loader.execute(standin_name="cvx_test_standin_nan.safetensors")
    message = str(caught.value)
    assert "NaN or infinite" in message and "blocks.1.self_attn.v_loras.up.weight" in message


# ---------------------------------------------------------------------------------------------------
# 7. Wan: entity word past the conditioning's text length
# ---------------------------------------------------------------------------------------------------

LONG_PROMPT = "a cat sitting " * 20 + "and a dog"


def _wan_erae_graph(tiny_models, *, strength: float = 10.0, prompt: str = LONG_PROMPT) -> dict:
    graph = six_node_graph(tiny_models, unet=tiny_models.wan)
    graph["7"]["inputs"]["family"] = "wan"
    graph["8"]["inputs"].update(prompt=prompt, entity_words="dog", strength=strength)
    for node in ("9", "10"):
        graph[node]["inputs"]["length"] = 32
    return graph


def test_wan_entity_word_past_the_text_length_is_refused(comfy_host, tiny_models, reference_png) -> None:
    """The issue's input: "dog" at token 62 of a 32-token conditioning did nothing, in silence."""
    message = _error_of(comfy_host, _wan_erae_graph(tiny_models))
    assert "out of range for 32 text tokens" in message and "past the end of the conditioning" in message
    first = message.split("[", 1)[1].split("]", 1)[0]
    assert int(first.split(",")[0]) >= 32, message


def test_wan_entity_word_inside_the_text_still_runs(comfy_host, tiny_models, reference_png) -> None:
    """The check is not a blanket refusal: "dog" early in the prompt runs, and strength 0 ignores words."""
    comfy_host.run_graph(_wan_erae_graph(tiny_models, prompt="a dog sitting"))
    comfy_host.run_graph(_wan_erae_graph(tiny_models, strength=0.0))


# ---------------------------------------------------------------------------------------------------
# 8, 17. LoadImage's all-zero placeholder mask into ReferenceEncode
# ---------------------------------------------------------------------------------------------------

OPAQUE_IMAGE = "cvx_opaque_128x96.png"


@pytest.fixture(scope="module")
def opaque_png(comfy_host) -> str:
    """A 128×96 RGB PNG: no alpha, so LoadImage's MASK is its 64×64 placeholder of zeros."""
    from PIL import Image

    pixels = (torch.rand(96, 128, 3, generator=torch.Generator().manual_seed(5)) * 255).to(torch.uint8)
    Image.fromarray(pixels.numpy()).save(comfy_host.input_dir / OPAQUE_IMAGE)
    return OPAQUE_IMAGE


def _reference_of(comfy_host, graph):
    result = comfy_host.run_graph(graph, capture=["5"])
    return result.node_outputs["5"][0], result.ui_outputs.get("5", {})


@pytest.mark.parametrize("invert", [False, True])
def test_loadimage_placeholder_mask_is_ignored_with_a_note(
    comfy_host, tiny_models, opaque_png, invert
) -> None:
    """It painted the whole reference white (invert off) or said "Resize the mask" (invert on, 128×96);
    now the mask is set aside: the reference equals the one encoded without a mask, and the node says so."""
    graph = six_node_graph(tiny_models)
    graph["4"]["inputs"]["image"] = opaque_png
    graph["5"]["inputs"]["invert_mask"] = invert
    plain, _ = _reference_of(comfy_host, graph)
    graph["5"]["inputs"]["mask"] = ["4", 1]
    masked, shown = _reference_of(comfy_host, graph)
    assert torch.equal(masked.latents, plain.latents) and torch.equal(masked.masks, plain.masks)
    assert bool((plain.masks[:, :, 10:86] > 0.99).all()), "the image area (85 of 96 columns) is the subject"
    (note,) = shown["text"]
    assert "all zero" in note and "whole image is the subject" in note and "Resize" not in note


# ---------------------------------------------------------------------------------------------------
# 13. ERAE subject words that are not 'N: words'
# ---------------------------------------------------------------------------------------------------


def test_erae_subject_words_with_a_superscript_number(comfy_host, tiny_models, reference_png) -> None:
    graph = six_node_graph(tiny_models)
    graph["8"]["inputs"]["subject_words"] = "\u00b2: dog"
    message = _error_of(comfy_host, graph)
    assert "must read 'N: words'" in message and "invalid literal" not in message


# ---------------------------------------------------------------------------------------------------
# 14. Sizes: Sample and ReferenceEncode agree
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [72, 20])
def test_sample_size_is_refused_by_the_rule_reference_encode_uses(
    comfy_host, tiny_models, reference_png, width
):
    graph = six_node_graph(tiny_models)
    graph["11"]["inputs"]["width"] = width
    message = _error_of(comfy_host, graph)
    assert "multiples of 16 pixels" in message and f"got {width}x64" in message, message
    assert "encode the reference" not in message
    graph = six_node_graph(tiny_models)
    graph["5"]["inputs"]["width"] = width
    assert _error_of(comfy_host, graph) == message, "ReferenceEncode says the same"


# ---------------------------------------------------------------------------------------------------
# 15. Train alpha NaN
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("node_class", ["CustomVideoXTrainAdapter", "CustomVideoXTrainSettings"])
def test_train_alpha_nan_is_refused_up_front(comfy_host, tiny_models, node_class) -> None:
    """It trained and failed with "training loss became nan … lower the learning rate"."""
    from test_safe_inputs import _train_prompt

    prompt, train_id = _train_prompt(
        tiny_models, dataset_path="cvx_alpha_dataset", adapter_name="cvx_alpha_nan"
    )
    if node_class == "CustomVideoXTrainAdapter":
        prompt[train_id]["inputs"]["alpha"] = math.nan
    else:
        prompt["90"] = {
            "class_type": "CustomVideoXTrainSettings",
            "inputs": {
                "rank": 4,
                "alpha": math.nan,
                "dropout": 0.0,
                "steps": 1,
                "learning_rate": 1e-4,
                "warmup_steps": 0,
                "batch_size": 1,
                "seed": 0,
                "save_every": 0,
                "gradient_checkpointing": False,
                "bf16": False,
            },
        }
        prompt[train_id]["inputs"]["settings"] = ["90", 0]
    message = _error_of(comfy_host, prompt)
    assert "alpha is nan" in message and "finite number" in message
    assert "learning rate" not in message


def test_erae_placeholder_reference_mask_is_ignored_with_a_note(comfy_host, tiny_models, opaque_png) -> None:
    """The same placeholder as ERAEMask's reference_mask would zero every reference token's weight."""
    graph = six_node_graph(tiny_models)
    graph["4"]["inputs"]["image"] = opaque_png
    graph["8"]["inputs"]["reference_mask"] = ["4", 1]
    result = comfy_host.run_graph(graph, capture=["8"])
    settings = result.node_outputs["8"][0]
    assert settings.reference_mask is None
    (text,) = result.ui_outputs["8"]["text"]
    assert "all zero" in text and "ReferenceEncode's mask is used" in text
