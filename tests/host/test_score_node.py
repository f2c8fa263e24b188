"""CustomVideoX Score inside a real ComfyUI, with tiny random-weight encoders of ComfyUI's own classes.

The encoders are ``comfy.clip_vision.ClipVisionModel`` objects (a ViT-shaped CLIP vision model and a
DINOv2, tiny configs, seeded weights; see ``tiny_models.py``) and a ``comfy.sd.CLIP`` holding an SD1-type
CLIP text model. Oracles: plain-Python cosines of the embeddings ComfyUI's own ``encode_image`` returns,
and for CLIP-T the projected pooled output ComfyUI's ``CLIPTextModel`` computes itself.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from nodes_support import score_graph
from tiny_models import build_tiny_clip_text, load_tiny_clip_vision

HEIGHT, WIDTH = 40, 56
PROMPT = "a plush dog running on a beach"


@pytest.fixture(scope="module")
def encoders(comfy_host, pack_module, tiny_encoders):
    clip = load_tiny_clip_vision(tiny_encoders.folder / tiny_encoders.clip_vision)
    dino = load_tiny_clip_vision(tiny_encoders.folder / tiny_encoders.dinov2)
    return clip, dino


@pytest.fixture(scope="module")
def score_node(comfy_host, pack_module):
    return comfy_host.node_class("CustomVideoXScore")


def run(node, frames, reference, clip_vision, *, region="full", stride=1, center_crop=True, **optional):
    output = node.execute(frames, reference, clip_vision, region, stride, center_crop, **optional)
    summary = json.loads(output.args[4])
    return output, summary


def images(count: int, seed: int) -> torch.Tensor:
    return torch.rand(count, HEIGHT, WIDTH, 3, generator=torch.Generator().manual_seed(seed))


def embeds(encoder, batch: torch.Tensor, center_crop: bool = True) -> list[list[float]]:
    return encoder.encode_image(batch, crop=center_crop)["image_embeds"].double().tolist()


def naive_cos(a: list[float], b: list[float]) -> float:
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(math.fsum(x * x for x in a) * math.fsum(y * y for y in b))


def naive_identity(references, frame) -> float:
    """CLIP-I / DINO-I of one frame: the mean of its naive cosines with each reference."""
    return sum(naive_cos(reference, frame) for reference in references) / len(references)


def test_the_tiny_encoders_are_comfyuis_classes(encoders) -> None:
    import comfy.clip_vision

    clip, dino = encoders
    assert isinstance(clip, comfy.clip_vision.ClipVisionModel) and clip.model_type == "clip_vision_model"
    assert isinstance(dino, comfy.clip_vision.ClipVisionModel) and dino.model_type == "dinov2"


def test_a_video_of_the_reference_repeated_scores_one(score_node, encoders) -> None:
    clip, dino = encoders
    reference = images(1, seed=1)
    frames = reference.expand(6, -1, -1, -1).clone()
    output, summary = run(score_node, frames, reference, clip, dino_vision=dino)
    clip_i, dino_i, t_cons, clip_t = output.args[:4]
    assert clip_i == pytest.approx(1.0, abs=1e-6)
    assert dino_i == pytest.approx(1.0, abs=1e-6)
    assert t_cons == pytest.approx(1.0, abs=1e-6)
    assert math.isnan(clip_t) and summary["clip_t"] is None
    mask = torch.zeros(1, HEIGHT, WIDTH)
    mask[:, 8:30, 10:40] = 1.0
    for region in ("mask", "crop"):
        masked, _ = run(
            score_node,
            frames,
            reference,
            clip,
            region=region,
            dino_vision=dino,
            mask=mask,
            reference_mask=mask,
        )
        assert masked.args[0] == pytest.approx(1.0, abs=1e-6) and masked.args[1] == pytest.approx(
            1.0, abs=1e-6
        )


@pytest.mark.parametrize("center_crop", [True, False])
def test_scores_are_naive_cosines_of_comfyuis_own_embeddings(score_node, encoders, center_crop) -> None:
    clip, dino = encoders
    frames, references = images(5, seed=2), images(2, seed=3)
    output, summary = run(
        score_node, frames, references, clip, center_crop=center_crop, dino_vision=dino, stride=2
    )
    assert summary["frames"] == [0, 2, 4] and summary["references"] == 2
    clip_frames, clip_refs = embeds(clip, frames, center_crop), embeds(clip, references, center_crop)
    dino_frames, dino_refs = embeds(dino, frames, center_crop), embeds(dino, references, center_crop)
    for position, frame in enumerate((0, 2, 4)):
        expected_clip = naive_identity(clip_refs, clip_frames[frame])
        expected_dino = naive_identity(dino_refs, dino_frames[frame])
        assert summary["per_frame"]["clip_i"][position] == pytest.approx(expected_clip, abs=1e-5)
        assert summary["per_frame"]["dino_i"][position] == pytest.approx(expected_dino, abs=1e-5)
    expected_t_cons = [naive_cos(clip_frames[0], clip_frames[2]), naive_cos(clip_frames[2], clip_frames[4])]
    assert summary["per_frame"]["t_cons"] == pytest.approx(expected_t_cons, abs=1e-5)
    assert output.args[2] == pytest.approx(sum(expected_t_cons) / 2, abs=1e-5)
    # Each reference's own CLIP-I is reported too (several references: the score is their mean).
    per_reference = [sum(naive_cos(ref, clip_frames[f]) for f in (0, 2, 4)) / 3 for ref in clip_refs]
    assert summary["per_reference"]["clip_i"] == pytest.approx(per_reference, abs=1e-5)


def test_clip_t_is_the_cosine_with_comfyuis_projected_prompt_embedding(score_node, encoders) -> None:
    clip_vision, _ = encoders
    text_model = build_tiny_clip_text(seed=7)
    frames, reference = images(3, seed=4), images(1, seed=5)
    output, summary = run(score_node, frames, reference, clip_vision, clip=text_model, prompt=PROMPT)
    # Oracle: ComfyUI's CLIPTextModel applies its own text_projection when asked for the projected pooled output.
    tokens = text_model.tokenize(PROMPT)
    text_model.cond_stage_model.reset_clip_options()
    text_model.cond_stage_model.set_clip_options({"projected_pooled": True})
    _, projected = text_model.cond_stage_model.encode_token_weights(tokens)
    text_model.cond_stage_model.reset_clip_options()
    _, unprojected = text_model.encode_from_tokens(tokens, return_pooled=True)  # SD1-type default
    projected, unprojected = projected[0].double().tolist(), unprojected[0].double().tolist()
    assert (
        max(abs(a - b) for a, b in zip(projected, unprojected, strict=True)) > 1e-3
    )  # the projection matters
    frame_embeds = embeds(clip_vision, frames)
    expected = [naive_cos(projected, frame) for frame in frame_embeds]
    assert summary["per_frame"]["clip_t"] == pytest.approx(expected, abs=1e-5)
    assert output.args[3] == pytest.approx(sum(expected) / 3, abs=1e-5)


def test_frames_of_noise_score_lower_than_frames_of_the_reference(score_node, encoders) -> None:
    clip, dino = encoders
    reference = images(1, seed=8)
    same, _ = run(score_node, reference.expand(4, -1, -1, -1).clone(), reference, clip, dino_vision=dino)
    noise, _ = run(score_node, images(4, seed=9), reference, clip, dino_vision=dino)
    for index in range(3):  # CLIP-I, DINO-I, T.Cons
        assert noise.args[index] < same.args[index] - 1e-3


@pytest.mark.parametrize("region", ["mask", "crop"])
def test_a_masked_score_ignores_changes_outside_the_mask(score_node, encoders, region) -> None:
    clip, dino = encoders
    frames, reference = images(4, seed=10), images(1, seed=11)
    mask = torch.zeros(4, HEIGHT, WIDTH)
    mask[:, 10:32, 12:44] = 1.0
    _, base = run(score_node, frames, reference, clip, region=region, dino_vision=dino, mask=mask)
    outside = frames.clone()
    outside[:, :10] = torch.rand(4, 10, WIDTH, 3, generator=torch.Generator().manual_seed(12))
    outside[:, :, :12] = 0.0
    _, moved_outside = run(score_node, outside, reference, clip, region=region, dino_vision=dino, mask=mask)
    assert moved_outside["per_frame"]["clip_i"] == base["per_frame"]["clip_i"]
    assert moved_outside["per_frame"]["dino_i"] == base["per_frame"]["dino_i"]
    inside = frames.clone()
    inside[:, 10:32, 12:44] = 1.0 - inside[:, 10:32, 12:44]
    _, moved_inside = run(score_node, inside, reference, clip, region=region, dino_vision=dino, mask=mask)
    change = max(
        abs(a - b)
        for a, b in zip(moved_inside["per_frame"]["clip_i"], base["per_frame"]["clip_i"], strict=True)
    )
    assert change > 1e-4
    _, full = run(score_node, frames, reference, clip)
    _, full_outside = run(score_node, outside, reference, clip)
    assert full["per_frame"]["clip_i"] != full_outside["per_frame"]["clip_i"]  # unmasked, the change counts


def test_the_node_shows_a_curve_and_a_json_summary(score_node, encoders, comfy_host) -> None:
    clip, _ = encoders
    output, summary = run(score_node, images(5, seed=13), images(1, seed=14), clip)
    ui_output = output.ui
    assert ui_output["cvx_scores"] == [summary]
    assert summary["clip_i"] == pytest.approx(output.args[0]) and math.isnan(output.args[1])
    assert "CLIP-I" in ui_output["text"][0] and "DINO-I n/a" in ui_output["text"][0]
    preview, motion_preview = ui_output["images"]  # the scores per frame, the motion per step
    assert preview["type"] == motion_preview["type"] == "temp"
    assert len(output.args) == 10 and summary["motion"] == pytest.approx(output.args[8])
    import folder_paths
    from PIL import Image

    path = folder_paths.get_temp_directory() + "/" + preview["subfolder"] + "/" + preview["filename"]
    with Image.open(path) as picture:
        assert picture.size == (512, 256)
        colours = picture.getcolors(maxcolors=1 << 16)
        assert colours is not None and len(colours) > 3


def test_wrong_encoders_and_text_models_are_refused_clearly(score_node, encoders, comfy_host) -> None:
    clip, dino = encoders
    frames, reference = images(2, seed=15), images(1, seed=16)
    with pytest.raises(ValueError, match="clip_vision got a 'dinov2' model.*wire it to dino_vision"):
        run(score_node, frames, reference, dino)
    with pytest.raises(
        ValueError, match="dino_vision got a 'clip_vision_model' model.*wire it to clip_vision"
    ):
        run(score_node, frames, reference, clip, dino_vision=clip)
    (tokenizer_only,) = comfy_host.node_class("CVXTestTokenizerCLIP").execute(family="cogvideox").result
    with pytest.raises(ValueError, match="no text encoder"):
        run(score_node, frames, reference, clip, clip=tokenizer_only, prompt=PROMPT)
    with pytest.raises(ValueError, match="needs the prompt"):
        run(score_node, frames, reference, clip, clip=build_tiny_clip_text(seed=1), prompt=" ")
    with pytest.raises(ValueError, match="region 'mask' .* no mask was given for frames"):
        run(score_node, frames, reference, clip, region="mask")


def test_in_a_graph_the_summary_lands_in_the_history(comfy_host, pack_module, tiny_encoders) -> None:
    from PIL import Image

    picture = (images(1, seed=17)[0].numpy() * 255).round().astype("uint8")
    Image.fromarray(picture).save(comfy_host.input_dir / "cvx_score_reference.png")
    dino = {"class_type": "CVXTestTinyClipVisionLoader", "inputs": {"clip_name": tiny_encoders.dinov2}}
    graph = score_graph("cvx_score_reference.png", 4, tiny_encoders.clip_vision, dino, "dino_vision")
    result = comfy_host.run_graph(graph)
    (summary,) = result.ui_outputs["5"]["cvx_scores"]
    assert summary["clip_i"] == pytest.approx(1.0, abs=1e-6)
    assert summary["dino_i"] == pytest.approx(1.0, abs=1e-6)
    assert summary["t_cons"] == pytest.approx(1.0, abs=1e-6)
    assert summary["frames"] == [0, 1, 2, 3]
