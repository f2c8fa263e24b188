"""Tiny ONNX face models with the signatures of insightface's ``buffalo_l`` files, built with ``onnx``.

- ``det_10g.onnx`` (SCRFD): input ``[1, 3, ?, ?]``; 9 outputs — scores ``[N, 1]``, boxes ``[N, 4]``, five
  points ``[N, 10]`` for strides 8, 16, 32 with 2 anchors per cell (``N = (H/s)(W/s)·2``). Each stride
  averages its cells (AveragePool) and maps the 3 colours through a 1×1 convolution. The score of stride
  16's first anchor is ``sigmoid(8 (R − G) − 10)``: a cell of pure red (a "face marker", R − G ≈ 2 after
  the detector's normalisation) is a face, ordinary content is not; every other score is ``sigmoid(−20)``.
  The box is the cell corner ``− 0.5`` to ``+ 2.5`` strides and the points are ArcFace's template fitted
  into that box, all from biases: a face at a cell corner ``(x, y)`` has its box at
  ``(x − 8, y − 8, x + 40, y + 40)``.
  With ``always_face`` that score is ``sigmoid(10)`` on every cell whatever its colour: every frame has a
  face (for graphs whose frames come from random tiny models and cannot draw the marker).
- ``w600k_r50.onnx`` (ArcFace): input ``[N, 3, 112, 112]`` → ``[N, 512]``; a strided 8×8 convolution,
  flatten and a fully connected layer with seeded random weights: different crops give different
  embeddings, the same crop the same one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FACE_STRIDE = 16
"""The stride whose cells detect the marker."""
FACE_BOX = (-0.5, -0.5, 2.5, 2.5)
"""Box of a detected face around its cell corner, in strides (x1, y1, x2, y2)."""
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)


def _tensor(name: str, array: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def write_tiny_scrfd(path: Path, *, always_face: bool = False) -> Path:
    from onnx import TensorProto, helper

    nodes, inits, outputs = [], [], {"score": [], "bbox": [], "kps": []}
    box_side = FACE_BOX[2] - FACE_BOX[0]
    kps_offsets = (FACE_BOX[0] + ARCFACE_TEMPLATE / 112.0 * box_side).reshape(-1)  # in strides
    for stride in (8, 16, 32):
        pooled = f"pool{stride}"
        nodes.append(
            helper.make_node(
                "AveragePool", ["input.1"], [pooled], kernel_shape=[stride, stride], strides=[stride, stride]
            )
        )
        score_weight = np.zeros((2, 3, 1, 1))
        score_bias = np.full(2, -20.0)
        if stride == FACE_STRIDE and always_face:
            score_bias[0] = 10.0
        elif stride == FACE_STRIDE:
            score_weight[0, :, 0, 0] = [8.0, -8.0, 0.0]
            score_bias[0] = -10.0
        heads = {
            "score": (score_weight, score_bias, 1),
            "bbox": (
                np.zeros((8, 3, 1, 1)),
                np.tile([-FACE_BOX[0], -FACE_BOX[1], FACE_BOX[2], FACE_BOX[3]], 2),
                4,
            ),
            "kps": (np.zeros((20, 3, 1, 1)), np.tile(kps_offsets, 2), 10),
        }
        for head, (weight, bias, width) in heads.items():
            name = f"{head}{stride}"
            inits += [_tensor(f"{name}.w", weight), _tensor(f"{name}.b", bias)]
            conv = f"{name}.conv"
            nodes.append(helper.make_node("Conv", [pooled, f"{name}.w", f"{name}.b"], [conv]))
            if head == "score":
                nodes.append(helper.make_node("Sigmoid", [conv], [f"{conv}.sig"]))
                conv = f"{conv}.sig"
            nodes.append(helper.make_node("Transpose", [conv], [f"{name}.t"], perm=[0, 2, 3, 1]))
            inits.append(helper.make_tensor(f"{name}.shape", TensorProto.INT64, [2], [-1, width]))
            nodes.append(helper.make_node("Reshape", [f"{name}.t", f"{name}.shape"], [name]))
            outputs[head].append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, width]))
    graph = helper.make_graph(
        nodes,
        "tiny_scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])],
        outputs["score"] + outputs["bbox"] + outputs["kps"],
        initializer=inits,
    )
    return _save(graph, path)


def write_tiny_arcface(path: Path, seed: int = 0) -> Path:
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    inits = [
        _tensor("conv.w", rng.normal(0, 0.2, size=(4, 3, 8, 8))),
        _tensor("conv.b", np.zeros(4)),
        _tensor("fc.w", rng.normal(0, 0.05, size=(512, 4 * 14 * 14))),
        _tensor("fc.b", np.zeros(512)),
    ]
    nodes = [
        helper.make_node("Conv", ["input.1", "conv.w", "conv.b"], ["conv"], strides=[8, 8]),
        helper.make_node("Flatten", ["conv"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["683"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["None", 512])],
        initializer=inits,
    )
    return _save(graph, path)


def _save(graph, path: Path) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_tiny_face_pack(folder: Path, *, always_face: bool = False) -> Path:
    """``folder`` as a ``buffalo_l``-shaped pack: ``det_10g.onnx``, ``w600k_r50.onnx`` and a landmark file
    name that must not be loaded (it holds no model). ``always_face``: see the module's docstring."""
    write_tiny_scrfd(folder / "det_10g.onnx", always_face=always_face)
    write_tiny_arcface(folder / "w600k_r50.onnx")
    (folder / "2d106det.onnx").write_bytes(b"not a model: FaceSim never loads the landmark files")
    return folder


def face_image(
    height: int, width: int, corners: list[tuple[int, int]], *, identity: int, background: int = 99
) -> torch.Tensor:  # noqa: F821
    """``[H, W, 3]``: a grey-ish noise background and, for each cell corner ``(x, y)`` (multiples of 16),
    a face: a 48×48 noise texture seeded by ``identity`` in the face box and a pure red marker on the
    cell ``(x, y)–(x + 16, y + 16)`` that the tiny detector finds."""
    import torch

    generator = torch.Generator().manual_seed(background)
    image = 0.35 + 0.3 * torch.rand(height, width, 3, generator=generator)
    face = torch.rand(48, 48, 3, generator=torch.Generator().manual_seed(1000 + identity))
    for x, y in corners:
        image[y - 8 : y + 40, x - 8 : x + 40] = face
        image[y : y + 16, x : x + 16] = torch.tensor([1.0, 0.0, 0.0])
    return image
