"""Scores in the batch client: read from /history, kept in the manifest, tabled; sweep mode over a grid.

Against the stub server, whose score node reports ``stub_scores(prompt)`` — a known function of the
settings in the prompt it ran. The oracle is that function applied to the prompts the *stub* recorded
(not to what the client thinks it sent).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from batch_stub_server import StubComfyServer, api_workflow, stub_config, stub_scores

from customvideox_core.batch import run_batch
from customvideox_core.batch.cli import main as cli_main
from customvideox_core.batch.jobs import Job, TabOverrides, load_jobs
from customvideox_core.batch.manifest import JobRecord
from customvideox_core.batch.results import (
    column_label,
    result_rows,
    scores_from_history,
    to_markdown,
)
from customvideox_core.batch.sweep import (
    SweepError,
    SweepPoint,
    comparison,
    expand,
    marginal_means,
    parse_axis,
    run_sweep,
)


def write_job(folder: Path, rows: list[dict], *, with_score: bool = True) -> tuple[Path, Path]:
    (folder / "wf.json").write_text(json.dumps(api_workflow(with_mask=False, with_score=with_score)))
    (folder / "dog.png").write_bytes(b"a dog picture")
    path = folder / "jobs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path, folder / "wf.json"


def executed_by_output(stub: StubComfyServer) -> dict[str, dict]:
    """The prompts the stub ran, keyed by the save node's filename_prefix (the job's output name)."""
    return {
        prompt["save"]["inputs"]["filename_prefix"]: prompt for prompt in stub.executed_prompts("success")
    }


# -- reading /history ------------------------------------------------------------------------------


def test_scores_from_history_finds_every_score_node() -> None:
    entry = {
        "outputs": {
            "9": {"images": [{"filename": "a.mp4", "type": "output"}]},
            "12": {"images": [], "cvx_scores": [{"clip_i": 0.8, "dino_i": None}]},
            "3": {"cvx_scores": [{"clip_i": 0.7}]},
            "bad": {"cvx_scores": "not a list"},
        }
    }
    assert scores_from_history(entry) == {"12": {"clip_i": 0.8, "dino_i": None}, "3": {"clip_i": 0.7}}
    assert scores_from_history({"outputs": {"9": {"images": []}}}) is None
    assert scores_from_history({}) is None


def test_results_table_known_answer() -> None:
    jobs = [
        Job(line=1, name="a", reference=Path("/x.png"), prompt="a | dog", seed=1, tab=TabOverrides(peak=2.0)),
        Job(line=2, name="b", reference=Path("/x.png"), prompt="a cat", seed=2, cfg=6.0),
    ]
    records = {
        "a": JobRecord(
            line=1, fingerprint="f", state="done", scores={"5": {"clip_i": 0.8125, "dino_i": None}}
        ),
        "b": JobRecord(line=2, fingerprint="g", state="failed", error="boom"),
    }
    header, rows = result_rows(jobs, records)
    assert header == ["name", "state", "seed", "cfg", "tab_peak", "clip_i", "prompt", "error"]
    assert rows[0] == {
        "name": "a",
        "state": "done",
        "seed": 1,
        "cfg": "",
        "tab_peak": 2.0,
        "clip_i": 0.8125,
        "prompt": "a | dog",
        "error": "",
    }
    assert rows[1]["clip_i"] == "" and rows[1]["error"] == "boom" and rows[1]["cfg"] == 6.0
    markdown = to_markdown(header, rows).splitlines()
    assert markdown[0] == "| name | state | seed | cfg | tab_peak | CLIP-I | prompt | error |"
    assert markdown[2] == "| a | done | 1 |  | 2.0000 | 0.8125 | a \\| dog |  |"
    assert column_label("12:dino_i") == "12:DINO-I" and column_label("seed") == "seed"


def test_a_batch_keeps_each_jobs_scores_in_the_manifest_and_the_results_table(stub, tmp_path) -> None:
    rows = [
        {"reference": "dog.png", "prompt": "a dog", "seed": 3, "tab_peak": 1.5, "output": "one"},
        {
            "reference": "dog.png",
            "prompt": "a dog",
            "seed": 4,
            "erae_strength": 2.0,
            "cfg": 4.5,
            "output": "two",
        },
    ]
    jobs, workflow = write_job(tmp_path, rows)
    result = run_batch(stub_config(tmp_path, jobs, workflow, stub))
    assert result.ok, result
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    ran = executed_by_output(stub)
    assert ran["two"]["sample"]["inputs"]["cfg"] == 4.5  # the cfg column reached the sampler
    assert ran["one"]["sample"]["inputs"]["cfg"] == 6.0  # and a job without it keeps the workflow's
    for name in ("one", "two"):
        assert manifest["jobs"][name]["scores"] == {"score": stub_scores(ran[name])}
    with (tmp_path / "out" / "results.csv").open() as handle:
        table = {row["name"]: row for row in csv.DictReader(handle)}
    for name in ("one", "two"):
        expected = stub_scores(ran[name])
        assert float(table[name]["clip_i"]) == pytest.approx(expected["clip_i"], abs=1e-6)
        assert float(table[name]["t_cons"]) == pytest.approx(expected["t_cons"], abs=1e-6)
        assert "clip_t" not in table[name]  # never measured → no column
    assert table["two"]["cfg"] == "4.5" and table["one"]["tab_peak"] == "1.5"
    assert "| one | done |" in (tmp_path / "out" / "results.md").read_text()


def test_a_workflow_without_a_score_node_leaves_scores_empty(stub, tmp_path) -> None:
    jobs, workflow = write_job(
        tmp_path, [{"reference": "dog.png", "prompt": "a dog", "seed": 1}], with_score=False
    )
    assert run_batch(stub_config(tmp_path, jobs, workflow, stub)).ok
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["jobs"]["job_0001"]["scores"] is None
    header = (tmp_path / "out" / "results.csv").read_text().splitlines()[0]
    assert header == "name,state,seed,prompt,error"


# -- sweep -----------------------------------------------------------------------------------------


def test_parse_axis_and_its_errors() -> None:
    axis = parse_axis("tab_peak=0, 0.5,1")
    assert axis.name == "tab_peak" and axis.values == (0.0, 0.5, 1.0) and axis.texts == ("0", "0.5", "1")
    assert parse_axis("tab_window=0:1,0.2:0.8").values == ((0.0, 1.0), (0.2, 0.8))
    assert parse_axis("seed=1,2").values == (1, 2)
    for text, message in [
        ("peak=1", "AXIS one of"),
        ("tab_peak", "AXIS one of"),
        ("tab_peak=", "at least one value"),
        ("tab_peak=1,x", "'x'"),
        ("tab_peak=1,1", "repeated"),
        ("seed=1.5", "whole number"),
        ("tab_shape=round", "not one of"),
        ("tab_window=0.2", "start:end"),
        ("cfg=nan", "finite"),
    ]:
        with pytest.raises(SweepError, match=message):
            parse_axis(text)


def test_expand_builds_every_combination_with_readable_names(tmp_path) -> None:
    jobs, _ = write_job(tmp_path, [{"reference": "dog.png", "prompt": "a dog", "seed": 9, "output": "dog"}])
    (base,) = load_jobs(jobs)
    points, rows = expand(base, [parse_axis("tab_window=0:1,0.2:0.8"), parse_axis("seed=1,2")])
    assert [point.name for point in points] == [
        "dog__tab_window-0-1__seed-1",
        "dog__tab_window-0-1__seed-2",
        "dog__tab_window-0.2-0.8__seed-1",
        "dog__tab_window-0.2-0.8__seed-2",
    ]
    assert rows[2]["tab_start"] == 0.2 and rows[2]["tab_end"] == 0.8 and rows[2]["seed"] == 1
    assert rows[0]["prompt"] == "a dog" and Path(rows[0]["reference"]).is_absolute()
    with pytest.raises(SweepError, match="both set tab_start"):
        expand(base, [parse_axis("tab_window=0:1"), parse_axis("tab_start=0.1")])


def test_comparison_averages_seeds_and_charts_marginal_means() -> None:
    axes = [parse_axis("tab_peak=0,1"), parse_axis("seed=1,2")]
    points = [
        SweepPoint(f"p{peak}s{seed}", (("tab_peak", str(peak)), ("seed", str(seed))))
        for peak in (0, 1)
        for seed in (1, 2)
    ]
    values = {"p0s1": 0.5, "p0s2": 0.7, "p1s1": 0.9, "p1s2": None}
    records = {
        name: JobRecord(line=1, fingerprint="f", state="done", scores={"4": {"clip_i": v, "dino_i": None}})
        if v is not None
        else JobRecord(line=1, fingerprint="f", state="failed", error="boom")
        for name, v in values.items()
    }
    header, rows = comparison(axes, points, records)
    assert header == ["tab_peak", "n", "clip_i"]
    assert rows == [
        {"tab_peak": "0", "n": 2, "clip_i": pytest.approx(0.6)},
        {"tab_peak": "1", "n": 1, "clip_i": 0.9},
    ]
    series = marginal_means(axes[0], points, records)
    assert series == {"clip_i": [pytest.approx(0.6), 0.9]}


def test_run_sweep_over_the_stub_writes_table_and_picture(stub, tmp_path) -> None:
    jobs, workflow = write_job(
        tmp_path, [{"reference": "dog.png", "prompt": "a dog", "seed": 5, "output": "dog"}]
    )
    axes = [parse_axis("tab_peak=0,2"), parse_axis("erae_strength=0,1"), parse_axis("seed=10,20")]
    result = run_sweep(stub_config(tmp_path, jobs, workflow, stub), axes)
    assert result.batch.ok and len(result.batch.done) == 8
    ran = executed_by_output(stub)
    assert len(ran) == 8
    with result.table_csv.open() as handle:
        table = list(csv.DictReader(handle))
    assert [(row["tab_peak"], row["erae_strength"], row["n"]) for row in table] == [
        ("0", "0", "2"),
        ("0", "1", "2"),
        ("2", "0", "2"),
        ("2", "1", "2"),
    ]
    for row in table:
        names = [
            f"dog__tab_peak-{row['tab_peak']}__erae_strength-{row['erae_strength']}__seed-{s}"
            for s in (10, 20)
        ]
        expected = [stub_scores(ran[name]) for name in names]
        for metric in ("clip_i", "dino_i", "t_cons"):
            assert float(row[metric]) == pytest.approx(sum(e[metric] for e in expected) / 2, abs=1e-6)
        assert "clip_t" not in row
    assert float(table[2]["clip_i"]) > float(table[0]["clip_i"])  # the stub's CLIP-I rises with the peak
    try:
        from PIL import Image
    except ImportError:  # the unit tier's bare venv: no picture, the tables are still there
        assert result.charts == ()
    else:
        assert sorted(path.name for path in result.charts) == [
            "sweep_erae_strength.png",
            "sweep_tab_peak.png",
        ]
        for chart in result.charts:
            with Image.open(chart) as image:
                assert image.size == (640, 360)
                colours = image.getcolors(maxcolors=1 << 16)
                assert colours is not None and len(colours) > 3  # lines were drawn, not an empty canvas
    assert "| tab_peak | erae_strength | n | CLIP-I | DINO-I | T.Cons |" in result.table_markdown.read_text()
    # Run again: everything is done, nothing is queued twice, the tables come out the same.
    again = run_sweep(stub_config(tmp_path, jobs, workflow, stub), axes)
    assert again.batch.ok and len(stub.executed_prompts("success")) == 8
    assert again.table_csv.read_text() == result.table_csv.read_text()


def test_cli_sweep_and_its_errors(stub, tmp_path) -> None:
    jobs, workflow = write_job(tmp_path, [{"reference": "dog.png", "prompt": "a dog", "seed": 5}])
    base = [
        "--output-dir",
        str(tmp_path / "out"),
        "--server",
        stub.url,
        "--workflow",
        str(workflow),
        "--quiet",
    ]
    assert cli_main([str(jobs), *base, "--sweep", "cfg=3,7", "--history-poll", "0.2"]) == 0
    table = (tmp_path / "out" / "sweep.csv").read_text().splitlines()
    assert table[0] == "cfg,n,clip_i,dino_i,t_cons"
    t_cons = [float(line.split(",")[-1]) for line in table[1:]]
    assert t_cons == pytest.approx([0.95 - 0.03, 0.95 - 0.07], abs=1e-6)
    assert cli_main([str(jobs), *base, "--sweep", "strength=1"]) == 2
    assert cli_main([str(jobs), *base, "--sweep", "tab_start=0.9", "--sweep", "tab_end=0.1", "--check"]) == 2
    two, _ = write_job(tmp_path, [{"reference": "dog.png", "prompt": "a", "seed": 1}] * 2)
    assert cli_main([str(two), *base, "--sweep", "seed=1,2"]) == 2


@pytest.mark.parametrize(
    ("file_name", "count"),
    [("example_subjects.jsonl", 8), ("example_sweep.jsonl", 1), ("example_face_sweep.jsonl", 1)],
)
def test_the_shipped_example_job_files_are_valid(tmp_path, file_name, count) -> None:
    """Valid job files once the user's pictures are in ``refs/`` (the pictures are not shipped)."""
    source = Path(__file__).resolve().parents[2] / "workflows" / "jobs" / file_name
    copy = tmp_path / file_name
    copy.write_text(source.read_text())
    rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    (tmp_path / "refs").mkdir()
    for row in rows:
        (tmp_path / row["reference"]).write_bytes(b"picture")
    jobs = load_jobs(copy)
    assert len(jobs) == count
    for job in jobs:
        for word in job.entity_words.split(","):
            assert word.strip().lower() in job.prompt.lower()
    points, _ = expand(jobs[0], [parse_axis("tab_peak=0,1,2"), parse_axis("seed=1,2")])
    assert len(points) == 6


def test_a_score_node_that_reports_nothing_is_warned_about(tmp_path, caplog) -> None:
    from batch_stub_server import StubBehaviour

    server = StubComfyServer(StubBehaviour(scores=lambda prompt: None)).start()
    try:
        jobs, workflow = write_job(tmp_path, [{"reference": "dog.png", "prompt": "a dog", "seed": 1}])
        with caplog.at_level("WARNING", logger="customvideox_core.batch.worker"):
            assert run_batch(stub_config(tmp_path, jobs, workflow, server)).ok
    finally:
        server.stop()
    assert "has a CustomVideoXScore node but prompt" in caplog.text
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["jobs"]["job_0001"]["scores"] is None
