"""FaceSim inside a real ComfyUI: Load Face Model on tiny ONNX files with buffalo_l's signatures, run by
onnxruntime, and the Score node's new outputs.

The tiny models (``face_models.py``) are built here with ``onnx``: a SCRFD-shaped detector that finds a red
"face marker" and an ArcFace-shaped recogniser with seeded random weights. Oracles: the known answers
(the same face gives 1, another face less, a frame without a face is a miss) and, for another face's
cosine, a plain-Python computation — the face's crop sampled from its known box (the tiny detector's
points are ArcFace's template fitted into the box, so the alignment is that box's scale and shift) and
the recogniser file run directly through an onnxruntime session.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from face_models import FACE_BOX, face_image, write_tiny_face_pack
from nodes_support import score_graph

PACK = "cvx_tiny_buffalo_l"
SIDE = 128


@pytest.fixture(scope="module")
def face_pack(comfy_host, pack_module):
    return write_tiny_face_pack(comfy_host.models_dir / "insightface" / "models" / PACK)


@pytest.fixture(scope="module")
def face_model(comfy_host, face_pack):
    node = comfy_host.node_class("CustomVideoXLoadFaceModel")
    return node.execute(PACK, "cpu", SIDE).args[0]


@pytest.fixture(scope="module")
def score_node(comfy_host, pack_module):
    return comfy_host.node_class("CustomVideoXScore")


@pytest.fixture(scope="module")
def clip_vision(tiny_encoders):
    from tiny_models import load_tiny_clip_vision

    return load_tiny_clip_vision(tiny_encoders.folder / tiny_encoders.clip_vision)


def score(node, frames, reference, clip_vision, face_model, *, region="full", **optional):
    output = node.execute(frames, reference, clip_vision, region, 1, True, face_model=face_model, **optional)
    return output, json.loads(output.args[4])


def naive_face_sim(face_pack, reference: torch.Tensor, frame: torch.Tensor, corners) -> float:
    """Cosine of the recogniser's embeddings of the two faces, cropped from their known boxes."""
    import onnxruntime

    def crop(image: torch.Tensor, corner) -> np.ndarray:
        x0, y0 = corner[0] + FACE_BOX[0] * 16, corner[1] + FACE_BOX[1] * 16
        scale = (FACE_BOX[2] - FACE_BOX[0]) * 16 / 112
        pixels = image.double().numpy()
        out = np.zeros((112, 112, 3))
        for v in range(112):
            for u in range(112):
                x, y = x0 + u * scale, y0 + v * scale
                left, top = math.floor(x), math.floor(y)
                fx, fy = x - left, y - top
                for dy, wy in ((0, 1 - fy), (1, fy)):
                    for dx, wx in ((0, 1 - fx), (1, fx)):
                        if wx * wy:
                            out[v, u] += wx * wy * pixels[top + dy, left + dx]
        return ((out * 255 - 127.5) / 127.5).transpose(2, 0, 1)[None].astype(np.float32)

    session = onnxruntime.InferenceSession(
        str(face_pack / "w600k_r50.onnx"), providers=["CPUExecutionProvider"]
    )
    a, b = (
        session.run(None, {"input.1": crop(image, c)})[0][0].astype(float)
        for image, c in ((reference, corners[0]), (frame, corners[1]))
    )
    return math.fsum(a * b) / math.sqrt(math.fsum(a * a) * math.fsum(b * b))


def test_the_pack_is_listed_and_loads_without_the_landmark_files(comfy_host, face_pack, face_model) -> None:
    node = comfy_host.node_class("CustomVideoXLoadFaceModel")
    (pack_input,) = [item for item in node.define_schema().inputs if item.id == "pack"]
    assert PACK in pack_input.options
    # 2d106det.onnx holds no model: loading it would have failed.
    assert face_model.name == PACK and face_model.det_size == SIDE


def test_same_face_gives_one_another_face_less_and_no_face_is_a_miss(
    score_node, clip_vision, face_model, face_pack
) -> None:
    reference = face_image(SIDE, SIDE, [(48, 48)], identity=1)
    frames = torch.stack(
        [
            face_image(SIDE, SIDE, [(48, 48)], identity=1),  # the reference itself
            face_image(SIDE, SIDE, [(32, 64)], identity=1, background=7),  # moved, other background
            face_image(SIDE, SIDE, [(48, 48)], identity=2),  # another face
            face_image(SIDE, SIDE, [], identity=1),  # no face
        ]
    )
    output, summary = score(score_node, frames, reference[None], clip_vision, face_model)
    per_frame = summary["face"]["per_frame"]
    assert per_frame[0] == pytest.approx(1.0, abs=1e-6)
    assert per_frame[1] > 0.99  # the same face: only the crop's last row/column sees the background
    other = naive_face_sim(face_pack, reference, frames[2], [(48, 48), (48, 48)])
    assert per_frame[2] == pytest.approx(other, abs=1e-5) and other < 0.9
    assert per_frame[3] is None
    assert summary["face"]["boxes"][1] == [24.0, 56.0, 72.0, 104.0] and summary["face"]["boxes"][3] is None
    face_sim, face_sim_min, face_detected = output.args[5:8]
    assert face_sim == pytest.approx(sum(per_frame[:3]) / 3) == summary["face_sim"]
    assert face_sim_min == pytest.approx(per_frame[2]) and face_detected == pytest.approx(0.75)
    assert summary["face_detected"] == pytest.approx(0.75)


def test_the_face_inside_the_subject_mask_is_the_one_scored(score_node, clip_vision, face_model) -> None:
    reference = face_image(SIDE, SIDE, [(48, 48)], identity=1)[None]
    two_faces = face_image(SIDE, SIDE, [(16, 16)], identity=2)
    two_faces[72:120, 72:120] = face_image(SIDE, SIDE, [(80, 80)], identity=1)[72:120, 72:120]
    mask = torch.zeros(1, SIDE, SIDE)
    mask[0, 80:112, 80:112] = 1.0
    for region in ("mask", "crop"):
        _, summary = score(
            score_node, two_faces[None], reference, clip_vision, face_model, region=region, mask=mask
        )
        assert summary["face"]["per_frame"][0] > 0.99  # identity 1 (its crop's edge sees other pixels)
        assert summary["face"]["boxes"][0] == [72.0, 72.0, 120.0, 120.0]
    other = torch.zeros(1, SIDE, SIDE)
    other[0, 16:40, 16:40] = 1.0
    _, summary = score(
        score_node, two_faces[None], reference, clip_vision, face_model, region="mask", mask=other
    )
    assert summary["face"]["per_frame"][0] < 0.9


def test_a_reference_without_a_face_is_refused(score_node, clip_vision, face_model) -> None:
    reference = face_image(SIDE, SIDE, [], identity=1)[None]
    frames = face_image(SIDE, SIDE, [(48, 48)], identity=1)[None]
    with pytest.raises(ValueError, match=r"no face was found in reference image\(s\) \[0\]"):
        score(score_node, frames, reference, clip_vision, face_model)


def test_without_a_face_model_face_outputs_are_nan_and_motion_is_measured(score_node, clip_vision) -> None:
    still = face_image(SIDE, SIDE, [(48, 48)], identity=1)
    moved = torch.roll(still, shifts=(0, 4), dims=(0, 1))
    output = score_node.execute(torch.stack([still, moved]), still[None], clip_vision, "full", 1, True)
    face_sim, face_sim_min, face_detected, motion, motion_subject = output.args[5:10]
    assert math.isnan(face_sim) and math.isnan(face_sim_min) and math.isnan(face_detected)
    assert motion == pytest.approx(4 * 100 / SIDE, rel=0.1) and math.isnan(motion_subject)
    assert len(output.ui["images"]) == 2  # the scores' curves and the motion's


def test_a_folder_without_a_detector_is_refused_clearly(comfy_host, face_pack, tmp_path) -> None:
    from face_models import write_tiny_arcface

    from customvideox_core.metrics.face_onnx import load_face_model

    write_tiny_arcface(tmp_path / "w600k_r50.onnx")
    with pytest.raises(ValueError, match="exactly one SCRFD detector .*found none"):
        load_face_model(tmp_path)
    (tmp_path / "broken.onnx").write_bytes(b"half a download")
    with pytest.raises(
        ValueError, match="broken.onnx in the face model folder is not a model onnxruntime can read"
    ):
        load_face_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="holds no .onnx file"):
        load_face_model(tmp_path / "empty")
    node = comfy_host.node_class("CustomVideoXLoadFaceModel")
    with pytest.raises(FileNotFoundError, match="'nope' is not in models/insightface/models"):
        node.execute("nope", "cpu", 640)


def test_in_a_graph_face_sim_lands_in_the_history(comfy_host, face_pack, tiny_encoders) -> None:
    from PIL import Image

    picture = (face_image(SIDE, SIDE, [(48, 48)], identity=1).numpy() * 255).round().astype("uint8")
    Image.fromarray(picture).save(comfy_host.input_dir / "cvx_face_reference.png")
    face_model = {
        "class_type": "CustomVideoXLoadFaceModel",
        "inputs": {"pack": PACK, "device": "cpu", "det_size": SIDE},
    }
    graph = score_graph("cvx_face_reference.png", 3, tiny_encoders.clip_vision, face_model, "face_model")
    result = comfy_host.run_graph(graph)
    (summary,) = result.ui_outputs["5"]["cvx_scores"]
    assert summary["face_sim"] == pytest.approx(1.0, abs=1e-6) and summary["face_detected"] == 1.0
    assert summary["motion"] == 0.0 and summary["face"]["model"] == PACK
