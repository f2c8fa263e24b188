"""Sweep mode of the batch client against a real ComfyUI server scoring what it generates.

The workflow is ``test_batch_host``'s tiny CogVideoX batch graph (saving the latent) plus VAE Decode →
CustomVideoX Score with the tiny CLIP vision and DINOv2 encoders. The client expands one job over
``tab_peak`` × ``seed``, queues every point, and tables the scores. Oracles are the server's own
records: the prompts it ran (their TAB peak and seed) and the ``cvx_scores`` in its ``/history``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from test_batch_host import SAMPLE, batch_workflow, write_png

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


def test_a_sweep_runs_every_point_on_a_real_server_and_tables_its_scores(
    comfy_server, comfy_host, pack_module, tiny_models, tiny_encoders, tmp_path
) -> None:
    if "ComfySwitchNode" not in comfy_host.node_ids():
        pytest.skip("this ComfyUI has no ComfySwitchNode (lazy If/Else switch), which the batch graph uses")
    workflow = tmp_path / "scoring_api.json"
    workflow.write_text(json.dumps(scoring_workflow(tiny_models, tiny_encoders)))
    write_png(tmp_path / "dog.png", seed=3)
    (tmp_path / "dog.jsonl").write_text(
        json.dumps(
            {"reference": "dog.png", "prompt": "a plush dog on a beach", "entity_words": "dog", "seed": 1}
        )
        + "\n"
    )
    config = BatchConfig(
        jobs_file=tmp_path / "dog.jsonl",
        output_dir=tmp_path / "out",
        servers=(comfy_server.url,),
        workflow=workflow,
        poll_interval=0.2,
        history_poll=1.0,
        quiet=True,
    )
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
