"""FaceSim and motion in the batch client's tables and sweeps, and the Stand-In strength as a setting.

The stub server reports, for each prompt it runs, FaceSim and motion as known functions of the Stand-In
strength and the TAB peak it was sent: the tables must hold exactly those values (seeds averaged).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from batch_stub_server import (
    StubBehaviour,
    StubComfyServer,
    _first_input,
    api_workflow,
    stub_config,
    stub_object_info,
    stub_scores,
)

from customvideox_core.batch import run_batch
from customvideox_core.batch.cli import main as cli_main
from customvideox_core.batch.jobs import read_jobs
from customvideox_core.batch.sweep import parse_axis, run_sweep
from customvideox_core.batch.workflow import (
    UploadedImages,
    fill_workflow,
    job_workflow_errors,
    locate_targets,
    node_settings,
)


def face_scores(prompt: dict) -> dict:
    strength = _first_input(prompt, ("CustomVideoXApplyStandIn",), "strength", 0.0)
    peak = _first_input(prompt, ("CustomVideoXTimeAwareBias",), "peak", 0.0)
    seed = _first_input(prompt, ("CustomVideoXSample",), "seed", 0.0)
    return {
        **stub_scores(prompt),
        "face_sim": 0.3 + 0.2 * strength + 0.01 * peak + 0.001 * (seed % 10),
        "face_sim_min": 0.2 + 0.2 * strength,
        "face_detected": 1.0 if strength > 0 else 0.5,
        "motion": 6.0 - 2.0 * strength,
        "motion_subject": None,
    }


def standin_workflow() -> dict:
    workflow = api_workflow(with_mask=False, with_erae=False, with_score=True)
    workflow["standin"] = {
        "class_type": "CustomVideoXApplyStandIn",
        "inputs": {"model": ["cvx", 0], "standin": ["x", 0], "reference": ["ref", 0], "strength": 1.0},
    }
    workflow["sample"]["inputs"]["model"] = ["standin", 0]
    return workflow


def write_files(folder: Path, rows: list[dict], workflow: dict) -> tuple[Path, Path]:
    (folder / "wf.json").write_text(json.dumps(workflow))
    (folder / "face.png").write_bytes(b"a face picture")
    path = folder / "jobs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path, folder / "wf.json"


@pytest.fixture
def face_stub():
    server = StubComfyServer(StubBehaviour(scores=face_scores)).start()
    yield server
    server.stop()


def test_standin_strength_is_a_checked_job_column_that_fills_apply_standin(tmp_path) -> None:
    rows = [
        {"reference": "face.png", "prompt": "a man", "seed": 1, "standin_strength": 0.7},
        {"reference": "face.png", "prompt": "a man", "seed": 2, "standin_strength": 2.5},
        {"reference": "face.png", "prompt": "a man", "seed": 3, "standin_strength": "strong"},
    ]
    jobs_file, _ = write_files(tmp_path, rows, standin_workflow())
    jobs, errors = read_jobs(jobs_file)
    assert [job.standin_strength for job in jobs] == [0.7]
    assert [str(error) for error in errors] == [
        "line 2: standin_strength must be in [0, 2], got 2.5",
        "line 3: standin_strength must be a number, got 'strong'",
    ]
    targets = locate_targets(standin_workflow())
    assert {setting.node_id for setting in node_settings(targets, jobs[0])} <= set(targets.setting_nodes)
    filled = fill_workflow(standin_workflow(), targets, jobs[0], UploadedImages(reference="face.png"))
    assert filled["standin"]["inputs"]["strength"] == 0.7
    plain = locate_targets(api_workflow(with_mask=False))
    assert job_workflow_errors(plain, jobs[0]) == [
        "standin_strength given but the workflow has no CustomVideoXApplyStandIn node with a strength value"
    ]


def test_check_with_a_server_reads_that_servers_standin_strength_range(tmp_path, stubs, caplog) -> None:
    rows = [{"reference": "face.png", "prompt": "a man", "seed": 1, "standin_strength": 1.5}]
    jobs_file, workflow_file = write_files(tmp_path, rows, standin_workflow())
    argv = [str(jobs_file), "--output-dir", str(tmp_path / "out"), "--workflow", str(workflow_file)]
    info = stub_object_info()
    strength = ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05}]
    info["CustomVideoXApplyStandIn"] = {"input": {"required": {"strength": strength}}}
    narrow = stubs(StubBehaviour(object_info=info))

    assert cli_main([*argv, "--check"]) == 0, "1.5 lies in the pack's own range"
    assert cli_main([*argv, "--check", "--server", narrow.url]) == 2
    assert ("GET", "/object_info/CustomVideoXApplyStandIn") in narrow.requests
    assert (
        f"standin_strength 1.5 is outside CustomVideoXApplyStandIn.strength's range [0, 1] ({narrow.url}"
        in caplog.text
    )
    caplog.clear()
    assert cli_main([*argv, "--check", "--server", stubs(StubBehaviour()).url]) == 2
    assert "has no CustomVideoXApplyStandIn node" in caplog.text


def test_results_table_lists_face_sim_and_motion(face_stub, tmp_path) -> None:
    rows = [{"reference": "face.png", "prompt": "a man", "seed": 4, "standin_strength": 0.5, "output": "a"}]
    jobs, workflow = write_files(tmp_path, rows, standin_workflow())
    assert run_batch(stub_config(tmp_path, jobs, workflow, face_stub)).ok
    with (tmp_path / "out" / "results.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert float(row["face_sim"]) == pytest.approx(0.3 + 0.1 + 0.01 + 0.004)
    assert float(row["face_detected"]) == 1.0 and float(row["motion"]) == pytest.approx(5.0)
    assert row["standin_strength"] == "0.5" and "motion_subject" not in row
    header = (tmp_path / "out" / "results.md").read_text().splitlines()[0]
    assert "| FaceSim | FaceSim min | Face found | Motion |" in header


def test_a_sweep_over_standin_strength_and_tab_peak_tabulates_and_draws_face_sim_and_motion(
    face_stub, tmp_path
) -> None:
    rows = [{"reference": "face.png", "prompt": "a man", "seed": 4, "output": "face"}]
    jobs, workflow = write_files(tmp_path, rows, standin_workflow())
    axes = [parse_axis("standin_strength=0.5,1,1.5"), parse_axis("tab_peak=0,2"), parse_axis("seed=1,2")]
    result = run_sweep(stub_config(tmp_path, jobs, workflow, face_stub), axes)
    assert result.batch.ok and len(result.batch.done) == 12
    with result.table_csv.open() as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0])[:3] == ["standin_strength", "tab_peak", "n"]
    for row in table:
        strength, peak = float(row["standin_strength"]), float(row["tab_peak"])
        seeds_mean = 0.001 * (1 + 2) / 2
        assert float(row["face_sim"]) == pytest.approx(0.3 + 0.2 * strength + 0.01 * peak + seeds_mean)
        assert float(row["motion"]) == pytest.approx(6.0 - 2.0 * strength)
        assert row["n"] == "2"
    markdown = result.table_markdown.read_text()
    assert "FaceSim" in markdown and "Motion" in markdown
    try:
        from PIL import Image
    except ImportError:  # the unit tier's bare venv: no picture, the tables are still there
        assert result.charts == ()
        return
    assert sorted(path.name for path in result.charts) == ["sweep_standin_strength.png", "sweep_tab_peak.png"]
    for chart in result.charts:
        with Image.open(chart) as image:
            assert image.size == (640, 36 + 2 * 324)  # the cosines' panel and the motion's
            lower = image.crop((60, 36 + 324, 620, 36 + 324 + 264))
            colours = lower.getcolors(maxcolors=1 << 16)
            assert colours is not None and len(colours) > 3  # the motion line was drawn in its panel


def test_the_face_job_sweeps_strength_and_tab_through_the_shipped_face_twin(tmp_path) -> None:
    """The example face job, expanded over Stand-In's strength and TAB's peak, fills the shipped face graph
    (Stand-In scored with FaceSim): each point sets Apply Stand-In and TimeAwareBias, and the Score node
    scores the job's face with the face model."""
    from customvideox_core.batch.sweep import expand
    from customvideox_core.batch.workflow import load_workflow

    root = Path(__file__).resolve().parents[2]
    source = root / "workflows" / "jobs" / "example_face_sweep.jsonl"
    copy = tmp_path / source.name
    copy.write_text(source.read_text())
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "face.png").write_bytes(b"a face")
    (job,) = read_jobs(copy)[0]
    workflow = load_workflow(root / "workflows" / "api" / "standin_wan21_14b_face_api.json")
    targets = locate_targets(workflow)
    _, rows = expand(job, [parse_axis("standin_strength=0.6,1,1.4"), parse_axis("tab_peak=0,2")])
    settings = []
    for row in rows:
        (point,), errors = read_jobs_from_row(tmp_path, row)
        assert errors == []
        filled = fill_workflow(workflow, targets, point, UploadedImages(reference="face.png"))
        by_class = {node["class_type"]: node for node in filled.values()}
        settings.append(
            (
                by_class["CustomVideoXApplyStandIn"]["inputs"]["strength"],
                by_class["CustomVideoXTimeAwareBias"]["inputs"]["peak"],
            )
        )
        score = by_class["CustomVideoXScore"]["inputs"]
        assert filled[score["reference"][0]]["inputs"]["image"] == "face.png"
        assert filled[score["face_model"][0]]["class_type"] == "CustomVideoXLoadFaceModel"
    assert sorted(settings) == [(s, p) for s in (0.6, 1.0, 1.4) for p in (0.0, 2.0)]


def read_jobs_from_row(folder: Path, row: dict):
    path = folder / "point.jsonl"
    path.write_text(json.dumps(row) + "\n")
    return read_jobs(path)
