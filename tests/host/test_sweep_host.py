"""Sweep mode of the batch client against a real ComfyUI server scoring what it generates.

The workflow is ``test_batch_host``'s tiny CogVideoX batch graph (saving the latent) plus VAE Decode →
CustomVideoX Score with the tiny CLIP vision and DINOv2 encoders. The client expands one job over
``tab_peak`` × ``seed``, queues every point, and tables the scores. Oracles are the server's own
records: the prompts it ran (their TAB peak and seed) and the ``cvx_scores`` in its ``/history``.

The face sweep runs the shipped ``workflows/api/standin_wan21_14b_face_api.json`` itself, its model files
swapped for tiny ones (tiny Wan, TAEHV, Stand-In file, CLIP vision and the ONNX face pack of
``face_models.py``) and its umT5 prompt behind a lazy switch (no umT5 here), over ``standin_strength``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from face_models import write_tiny_face_pack
from harness import REPO_ROOT
from nodes_support import random_conditioning_node
from standin_oracle import lora_state
from test_batch_host import SAMPLE, SWITCH_NODE, batch_workflow, write_png

from customvideox_core.batch import BatchConfig
from customvideox_core.batch.sweep import parse_axis, run_sweep

DECODE, SCORE, CLIP_LOADER, DINO_LOADER = "40", "41", "42", "43"


def scoring_workflow(tiny_models, tiny_encoders) -> dict:
    graph = batch_workflow(tiny_models, save="latent")
    graph[DECODE] = {"class_type": "VAEDecode", "inputs": {"samples": [SAMPLE, 0], "vae": ["3", 0]}}
    graph[CLIP_LOADER] = {
        "class_type": "CVXTestTinyClipVisionLoader",
        "inputs": {"clip_name": tiny_encoders.clip_vision},
    }
    graph[DINO_LOADER] = {
        "class_type": "CVXTestTinyClipVisionLoader",
        "inputs": {"clip_name": tiny_encoders.dinov2},
    }
    graph[SCORE] = {
        "class_type": "CustomVideoXScore",
        "inputs": {
            "frames": [DECODE, 0],
            "reference": ["4", 0],
            "clip_vision": [CLIP_LOADER, 0],
            "dino_vision": [DINO_LOADER, 0],
            "region": "full",
            "frame_stride": 1,
            "center_crop": True,
        },
    }
    return graph


def server_runs(server) -> dict[str, dict]:
    """The server's history entries, keyed by the job name (the saved latent's filename_prefix)."""
    runs = {}
    for entry in server.get_json("/history").values():
        prompt = entry["prompt"][2]
        prefixes = [
            node["inputs"]["filename_prefix"]
            for node in prompt.values()
            if "filename_prefix" in node["inputs"]
        ]
        if prefixes:
            runs[prefixes[0]] = entry
    return runs


def one_job_config(folder: Path, name: str, job: dict, workflow: Path, server) -> BatchConfig:
    """``job`` as the one line of ``folder/<name>.jsonl``, run on ``server`` with polls paced for a real
    ComfyUI; results in ``folder/out``."""
    jobs_file = folder / f"{name}.jsonl"
    jobs_file.write_text(json.dumps(job) + "\n")
    return BatchConfig(
        jobs_file=jobs_file,
        output_dir=folder / "out",
        servers=(server.url,),
        workflow=workflow,
        poll_interval=0.2,
        history_poll=1.0,
        quiet=True,
    )


def test_a_sweep_runs_every_point_on_a_real_server_and_tables_its_scores(
    comfy_server, comfy_host, pack_module, tiny_models, tiny_encoders, tmp_path
) -> None:
    if "ComfySwitchNode" not in comfy_host.node_ids():
        pytest.skip("this ComfyUI has no ComfySwitchNode (lazy If/Else switch), which the batch graph uses")
    workflow = tmp_path / "scoring_api.json"
    workflow.write_text(json.dumps(scoring_workflow(tiny_models, tiny_encoders)))
    write_png(tmp_path / "dog.png", seed=3)
    job = {"reference": "dog.png", "prompt": "a plush dog on a beach", "entity_words": "dog", "seed": 1}
    config = one_job_config(tmp_path, "dog", job, workflow, comfy_server)
    axes = [parse_axis("tab_peak=0,4"), parse_axis("seed=1,2")]
    result = run_sweep(config, axes)
    assert result.batch.ok, (tmp_path / "out" / "manifest.json").read_text()
    names = {f"job_0001__tab_peak-{peak}__seed-{seed}" for peak in (0, 4) for seed in (1, 2)}
    assert set(result.batch.done) == names
    runs = server_runs(comfy_server)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    for name in names:
        prompt = runs[name]["prompt"][2]
        peak = float(name.split("tab_peak-")[1].split("__")[0])
        seed = int(name.rsplit("seed-", 1)[1])
        assert prompt["6"]["inputs"]["peak"] == peak and prompt[SAMPLE]["inputs"]["seed"] == seed
        (reported,) = runs[name]["outputs"][SCORE]["cvx_scores"]
        assert manifest["jobs"][name]["scores"] == {SCORE: reported}
        for metric in ("clip_i", "dino_i", "t_cons"):
            assert -1.0 <= reported[metric] <= 1.0
        assert reported["clip_t"] is None
    with result.table_csv.open() as handle:
        table = list(csv.DictReader(handle))
    assert [(row["tab_peak"], row["n"]) for row in table] == [("0", "2"), ("4", "2")]
    for row in table:
        reported = [
            runs[f"job_0001__tab_peak-{row['tab_peak']}__seed-{seed}"]["outputs"][SCORE]["cvx_scores"][0]
            for seed in (1, 2)
        ]
        for metric in ("clip_i", "dino_i", "t_cons", "motion"):  # motion: measured on every real video
            assert float(row[metric]) == pytest.approx(sum(r[metric] for r in reported) / 2, abs=1e-9)
        assert "face_sim" not in row  # no face model in this graph
    with (tmp_path / "out" / "results.csv").open() as handle:
        per_job = {row["name"]: row for row in csv.DictReader(handle)}
    assert set(per_job) == names
    assert [path.name for path in result.charts] == ["sweep_tab_peak.png"]
    assert Path(result.charts[0]).stat().st_size > 0


FACE_WORKFLOW = REPO_ROOT / "workflows" / "api" / "standin_wan21_14b_face_api.json"
FACE_SCORE, APPLY_STANDIN, FACE_LOADER = "23", "2", "25"
TINY_ALWAYS_FACE_PACK = "cvx_tiny_always_face"
TINY_STANDIN = "cvx_tiny_standin.safetensors"
FACE_SIDE = 64
"""Pixels of the tiny face video (4 frames of 64×64) and of the face reference."""
FACE_COLUMNS = ("face_sim", "face_sim_min", "face_detected", "motion")


def tiny_face_workflow(tiny_models, tiny_encoders) -> dict:
    """The shipped face graph with every model file swapped for a tiny one and tiny sizes, 2 steps.

    Wires, node ids and the Score / Load Face Model / Apply Stand-In / TAB nodes stay as shipped. The
    prompt's CLIPTextEncode (6) stays where the batch client fills it, behind a lazy switch that takes
    random conditioning instead (the tiny models have no umT5); the negative is random conditioning too.
    """
    graph = json.loads(FACE_WORKFLOW.read_text(encoding="utf-8"))
    assert graph[FACE_SCORE]["inputs"]["face_model"] == [FACE_LOADER, 0]
    assert graph[APPLY_STANDIN]["inputs"]["tab"] == ["10", 0]
    graph["1"]["inputs"]["unet_name"] = tiny_models.wan
    graph["4"]["inputs"]["vae_name"] = tiny_models.vae
    graph["21"]["inputs"]["standin_name"] = TINY_STANDIN
    graph["24"] = {
        "class_type": "CVXTestTinyClipVisionLoader",
        "inputs": {"clip_name": tiny_encoders.clip_vision},
    }
    graph[FACE_LOADER]["inputs"].update(pack=TINY_ALWAYS_FACE_PACK, det_size=FACE_SIDE)
    graph["3"] = {"class_type": "CVXTestTokenizerCLIP", "inputs": {"family": "cogvideox"}}
    del graph["7"]
    graph["30"] = random_conditioning_node(1, 12)
    graph["31"] = random_conditioning_node(2, 12)
    graph["32"] = {
        "class_type": SWITCH_NODE,
        "inputs": {"switch": False, "on_false": ["30", 0], "on_true": ["6", 0]},
    }
    graph["12"]["inputs"].update(positive=["32", 0], negative=["31", 0], steps=2)
    graph["9"]["inputs"].update(width=FACE_SIDE, height=FACE_SIDE)
    graph["22"]["inputs"].update(width=FACE_SIDE, height=FACE_SIDE, length=5)
    return graph


def test_a_face_sweep_over_standin_strength_tables_facesim_and_motion_from_the_history(
    comfy_server, comfy_host, pack_module, tiny_models, tiny_encoders, tmp_path
) -> None:
    """The shipped face workflow over ``standin_strength=0.5,1.5``: each point ran with its strength, and
    ``sweep.csv`` holds the FaceSim, its minimum, the face share and the motion the server recorded."""
    if SWITCH_NODE not in comfy_host.node_ids():
        pytest.skip(
            f"this ComfyUI has no {SWITCH_NODE} (lazy If/Else switch), which the tiny face graph uses"
        )
    pytest.importorskip(
        "onnxruntime", reason="FaceSim needs onnxruntime: pip install -r requirements-face.txt"
    )
    from safetensors.torch import save_file

    # Every cell of the tiny detector is a face: random tiny frames cannot draw face_models' red marker.
    write_tiny_face_pack(
        comfy_server.base_dir / "models" / "insightface" / "models" / TINY_ALWAYS_FACE_PACK, always_face=True
    )
    (comfy_host.models_dir / "loras").mkdir(parents=True, exist_ok=True)
    save_file(lora_state(), str(comfy_host.models_dir / "loras" / TINY_STANDIN))
    workflow = tmp_path / "face_api.json"
    workflow.write_text(json.dumps(tiny_face_workflow(tiny_models, tiny_encoders)))
    write_png(tmp_path / "face.png", seed=4)
    job = {"reference": "face.png", "prompt": "a man talks to the camera", "seed": 3, "output": "face"}
    config = one_job_config(tmp_path, "face", job, workflow, comfy_server)
    result = run_sweep(config, [parse_axis("standin_strength=0.5,1.5")])
    assert result.batch.ok, (tmp_path / "out" / "manifest.json").read_text()
    names = {f"face__standin_strength-{strength}": strength for strength in (0.5, 1.5)}
    assert set(result.batch.done) == set(names)
    runs = server_runs(comfy_server)
    reported = {}
    for name, strength in names.items():
        prompt = runs[name]["prompt"][2]
        assert prompt[APPLY_STANDIN]["inputs"]["strength"] == strength
        assert prompt[FACE_LOADER]["inputs"]["pack"] == TINY_ALWAYS_FACE_PACK
        (reported[strength],) = runs[name]["outputs"][FACE_SCORE]["cvx_scores"]
        assert reported[strength]["face_detected"] == 1.0
        assert -1.0 <= reported[strength]["face_sim_min"] <= reported[strength]["face_sim"] <= 1.0
        assert reported[strength]["motion"] >= 0.0
    # Stand-In's strength changes the video, so the face score moves with it.
    assert reported[0.5]["face_sim"] != reported[1.5]["face_sim"]
    with result.table_csv.open() as handle:
        table = list(csv.DictReader(handle))
    assert [(float(row["standin_strength"]), row["n"]) for row in table] == [(0.5, "1"), (1.5, "1")]
    for row in table:
        for metric in FACE_COLUMNS:
            assert row[metric] != "", f"sweep.csv has no {metric} for strength {row['standin_strength']}"
            assert float(row[metric]) == pytest.approx(
                reported[float(row["standin_strength"])][metric], abs=1e-9
            )
    with (tmp_path / "out" / "results.csv").open() as handle:
        per_job = {row["name"]: row for row in csv.DictReader(handle)}
    for name, strength in names.items():
        assert float(per_job[name]["face_sim"]) == pytest.approx(reported[strength]["face_sim"], abs=1e-9)
    assert [path.name for path in result.charts] == ["sweep_standin_strength.png"]
