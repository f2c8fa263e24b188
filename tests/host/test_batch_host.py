"""The batch client (``customvideox_core.batch``) against real ComfyUI servers running tiny models.

Real ``python main.py --cpu`` servers with the pack loaded, driven over HTTP and the websocket by the
client, as a user would: uploads, queueing on two servers, a job failing inside ComfyUI, a server
killed mid-batch and restarted on the same port, the client killed mid-batch and run again, invalid
rows, and the README's main-job command.

The workflow is the six-node graph of ``test_nodes_graphs`` with two changes:

- The prompt's ``CLIPTextEncode`` sits behind ComfyUI's lazy If/Else switch (``ComfySwitchNode``,
  ``switch = False``) in front of the sampler's ``positive``. No real T5 exists here, so the tiny
  model gets the random conditioning; the client still has to find and fill the ``CLIPTextEncode``
  feeding the positive exactly as in a real workflow (its validation is not relaxed), ComfyUI
  validates that node, and the lazy switch never runs it.
- A save node whose file the client downloads: ``SaveLatent`` for the batch tests (the tiny TAEHV
  decoder takes ~5 s per video on a CPU, the sampler well under one), ``VAEDecode`` →
  ``SaveAnimatedWEBP`` for the README's main job, whose result is a video.

Oracles are the servers' own records, not the client's: ``/history`` (each prompt a server ran, with
the inputs the client filled in, and its status), the files in a server's ``input/`` and ``output/``
folders (uploads and saved videos, compared byte for byte with what the client downloaded), and the
decoded content of each saved file (latent shape, video frames).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from harness import REPO_ROOT, ComfyServer
from nodes_support import LATENT_SHAPE, VIDEO_FRAMES, VIDEO_HEIGHT, VIDEO_WIDTH
from test_nodes_graphs import PROMPT, six_node_graph

from customvideox_core.batch import BatchConfig, run_batch
from customvideox_core.batch.cli import main as cli_main

SWITCH_NODE = "ComfySwitchNode"
# Node ids of the batch workflow (six_node_graph's, plus the switch, the decoder and the saver).
LOAD_IMAGE, ERAE, SAMPLE, TEXT_ENCODE, SAVE = "4", "8", "11", "20", "23"
PROMPTS = (PROMPT, "a plush dog jumping over a log", "a plush dog sleeping in the sun")
BUSY_STATES = ("uploading", "queued", "running")


def batch_workflow(tiny_models, save: Literal["latent", "video"] = "latent") -> dict:
    """six_node_graph with the prompt behind a lazy switch, saving a downloadable latent or WEBP video."""
    graph = six_node_graph(tiny_models)
    del graph["12"]  # the latent summary: this graph saves a real file instead
    graph[TEXT_ENCODE] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["7", 0], "text": "placeholder"}}
    graph["21"] = {
        "class_type": SWITCH_NODE,
        "inputs": {"switch": False, "on_false": ["9", 0], "on_true": [TEXT_ENCODE, 0]},
    }
    graph[SAMPLE]["inputs"]["positive"] = ["21", 0]
    if save == "latent":
        graph[SAVE] = {
            "class_type": "SaveLatent",
            "inputs": {"samples": [SAMPLE, 0], "filename_prefix": "cvx_batch"},
        }
        return graph
    graph["22"] = {"class_type": "VAEDecode", "inputs": {"samples": [SAMPLE, 0], "vae": ["3", 0]}}
    graph[SAVE] = {
        "class_type": "SaveAnimatedWEBP",
        "inputs": {
            "images": ["22", 0],
            "filename_prefix": "cvx_batch",
            "fps": 8.0,
            "lossless": True,
            "quality": 80,
            "method": "fastest",
        },
    }
    return graph


def write_workflow(comfy_host, tiny_models, folder: Path, save: Literal["latent", "video"]) -> Path:
    if SWITCH_NODE not in comfy_host.node_ids():
        pytest.skip(f"this ComfyUI has no {SWITCH_NODE} (lazy If/Else switch), which the batch graph uses")
    path = folder / f"tiny_customvideox_{save}_api.json"
    path.write_text(json.dumps(batch_workflow(tiny_models, save), indent=2))
    return path


@pytest.fixture(scope="module")
def workflow_file(comfy_host, tiny_models, pack_module, tmp_path_factory) -> Path:
    """The batch graph saving latents (API format)."""
    return write_workflow(comfy_host, tiny_models, tmp_path_factory.mktemp("batch_workflow"), "latent")


@pytest.fixture(scope="module")
def video_workflow_file(comfy_host, tiny_models, pack_module, tmp_path_factory) -> Path:
    """The batch graph decoding and saving a WEBP video (API format)."""
    return write_workflow(comfy_host, tiny_models, tmp_path_factory.mktemp("batch_workflow"), "video")


@pytest.fixture(scope="module")
def servers(comfyui_path, tiny_models, workflow_file, tmp_path_factory) -> Iterator[tuple[ComfyServer, ...]]:
    """Two servers for this module (started side by side), sharing the tiny models; never killed by tests."""
    pair = tuple(
        ComfyServer(
            comfyui_path,
            tmp_path_factory.mktemp("batch_server"),
            models_dir=tiny_models.diffusion_models_dir.parent,
        )
        for _ in range(2)
    )
    try:
        for server in pair:
            server.start(wait=False)
        for server in pair:
            server.wait_until_ready()
        yield pair
    finally:
        for server in pair:
            server.kill()


# ---------------------------------------------------------------------------------------------
# Jobs and the servers' records
# ---------------------------------------------------------------------------------------------


def write_png(path: Path, seed: int) -> Path:
    import numpy
    from PIL import Image

    pixels = numpy.random.default_rng(seed).integers(
        0, 256, (VIDEO_HEIGHT, VIDEO_WIDTH, 3), dtype=numpy.uint8
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def write_jobs(folder: Path, tag: str, count: int, changes: dict[int, dict] | None = None) -> list[dict]:
    """``count`` jobs named ``<tag>_<i>`` with their own reference images, as ``folder/jobs.csv``."""
    rows = []
    for index in range(count):
        write_png(folder / f"{tag}_ref{index}.png", seed=sum(map(ord, tag)) * 10 + index)
        row = {
            "reference": f"{tag}_ref{index}.png",
            "prompt": PROMPTS[index % len(PROMPTS)],
            "entity_words": "dog",
            "seed": str(10 + index),
            "output": f"{tag}_{index}",
        }
        row.update((changes or {}).get(index, {}))
        rows.append(row)
    columns = list(rows[0])
    lines = [",".join(columns)] + [",".join(row[column] for column in columns) for row in rows]
    (folder / "jobs.csv").write_text("\n".join(lines) + "\n")
    return rows


def batch_config(folder: Path, workflow: Path, servers, **changes: object) -> BatchConfig:
    settings: dict[str, object] = {
        "jobs_file": folder / "jobs.csv",
        "output_dir": folder / "out",
        "servers": tuple(server.url for server in servers),
        "workflow": workflow,
        "retries": 5,
        "backoff": 0.5,
        "max_backoff": 2.0,
        "poll_interval": 0.2,
        "history_poll": 1.0,
        "quiet": True,
    }
    settings.update(changes)
    return BatchConfig(**settings)  # type: ignore[arg-type]


def read_manifest(folder: Path) -> dict:
    return json.loads((folder / "out" / "manifest.json").read_text())


def runs_of(servers, name: str) -> list[tuple[ComfyServer, str, dict]]:
    """``(server, prompt id, history entry)`` of every prompt any server ran for the job ``name``."""
    runs = []
    for server in servers:
        for prompt_id, entry in server.get_json("/history").items():
            prompt = entry["prompt"][2]
            if prompt.get(SAVE, {}).get("inputs", {}).get("filename_prefix") == name:
                runs.append((server, prompt_id, entry))
    return runs


def saved_on_server(servers, name: str) -> list[Path]:
    """Files the servers saved for the job ``name`` (their ``output/`` folders survive restarts)."""
    pattern = re.compile(rf"{re.escape(name)}_\d{{5}}_\.(latent|webp)")
    return sorted(
        path
        for server in servers
        for path in (server.base_dir / "output").iterdir()
        if pattern.fullmatch(path.name)
    )


def assert_saved_content(path: Path) -> None:
    """A saved latent of the video's shape (finite), or a WEBP of the video's frames and size."""
    if path.suffix == ".latent":
        from safetensors.torch import load_file

        latent = load_file(path)["latent_tensor"]
        assert tuple(latent.shape) == LATENT_SHAPE and bool(latent.isfinite().all()), latent.shape
        return
    from PIL import Image

    with Image.open(path) as video:
        assert (video.format, video.n_frames, video.size) == (
            "WEBP",
            VIDEO_FRAMES,
            (VIDEO_WIDTH, VIDEO_HEIGHT),
        )


def diagnostics(folder: Path, servers) -> str:
    manifest = (folder / "out" / "manifest.json").read_text() if (folder / "out").exists() else "(none)"
    return f"manifest: {manifest}\n" + "\n".join(server.log_tail(25) for server in servers)


def assert_job_done_once(
    folder: Path, servers, row: dict, record: dict, output_dir: Path | None = None
) -> None:
    """One successful run of ``row`` on the server the manifest names, and its video downloaded intact.

    ``row``: the job's columns (reference relative to ``folder``); results in ``output_dir``
    (default ``folder/out``).
    """
    name = row["output"]
    (run,) = runs_of(servers, name)
    server, prompt_id, entry = run
    assert record["state"] == "done" and record["error"] is None, (name, record)
    assert (record["server"], record["prompt_id"]) == (server.url, prompt_id)
    assert entry["status"]["status_str"] == "success"
    prompt = entry["prompt"][2]
    assert prompt[TEXT_ENCODE]["inputs"]["text"] == row["prompt"]
    assert prompt[ERAE]["inputs"]["prompt"] == row["prompt"]
    assert prompt[ERAE]["inputs"]["entity_words"] == row["entity_words"]
    assert prompt[SAMPLE]["inputs"]["seed"] == int(row["seed"])
    uploaded = server.base_dir / "input" / prompt[LOAD_IMAGE]["inputs"]["image"]
    assert uploaded.read_bytes() == (folder / row["reference"]).read_bytes()
    saved = entry["outputs"][SAVE]
    (image,) = saved.get("latents") or saved.get("images")
    assert record["files"] == [f"{name}/{image['filename']}"]
    downloaded = (output_dir or folder / "out") / record["files"][0]
    on_server = server.base_dir / "output" / image["subfolder"] / image["filename"]
    assert downloaded.read_bytes() == on_server.read_bytes()
    assert saved_on_server(servers, name) == [on_server]
    assert_saved_content(downloaded)


def one_job_in_flight_per_server(writes: list[dict]) -> None:
    for document in writes:
        busy = Counter(
            record["server"] for record in document["jobs"].values() if record["state"] in BUSY_STATES
        )
        assert max(busy.values(), default=0) <= 1, document


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------


def test_three_jobs_over_two_servers_are_all_done_and_downloaded(servers, workflow_file, tmp_path) -> None:
    rows = write_jobs(tmp_path, "full", 3)
    writes: list[dict] = []
    result = run_batch(batch_config(tmp_path, workflow_file, servers), on_manifest_write=writes.append)

    assert result.ok, diagnostics(tmp_path, servers)
    manifest = read_manifest(tmp_path)
    assert sorted(manifest["jobs"]) == ["full_0", "full_1", "full_2"]
    for row in rows:
        assert_job_done_once(tmp_path, servers, row, manifest["jobs"][row["output"]])
    assert {record["server"] for record in manifest["jobs"].values()} == {server.url for server in servers}
    one_job_in_flight_per_server(writes)
    assert writes[-1] == manifest


def test_a_job_failing_inside_comfyui_is_recorded_while_the_others_finish(
    servers, workflow_file, tmp_path
) -> None:
    rows = write_jobs(tmp_path, "fail", 3, {1: {"entity_words": "cat"}})  # no cat in the prompt
    result = run_batch(batch_config(tmp_path, workflow_file, servers))

    assert result.failed == ("fail_1",) and not result.unfinished, diagnostics(tmp_path, servers)
    manifest = read_manifest(tmp_path)
    failed = manifest["jobs"]["fail_1"]
    assert failed["state"] == "failed" and failed["files"] == []
    assert "CustomVideoXERAEMask (node 8)" in failed["error"]
    assert "Entity word 'cat' does not occur in the prompt" in failed["error"]
    ((server, prompt_id, entry),) = runs_of(servers, "fail_1")
    assert (failed["server"], failed["prompt_id"]) == (server.url, prompt_id)
    assert entry["status"]["status_str"] == "error"
    assert not (tmp_path / "out" / "fail_1").exists() and not saved_on_server(servers, "fail_1")
    for row in (rows[0], rows[2]):
        assert_job_done_once(tmp_path, servers, row, manifest["jobs"][row["output"]])


def test_a_server_killed_mid_batch_and_restarted_finishes_every_job_once(
    comfy_server_factory, workflow_file, tmp_path, caplog
) -> None:
    server = comfy_server_factory()
    rows = write_jobs(tmp_path, "bounce", 2)
    first_running = threading.Event()
    killed_job: list[str] = []

    def watch(document: dict) -> None:
        running = [name for name, record in document["jobs"].items() if record["state"] == "running"]
        if running and not first_running.is_set():
            killed_job.append(running[0])
            first_running.set()

    config = batch_config(tmp_path, workflow_file, [server], retries=60, backoff=0.5, max_backoff=1.0)
    outcome: list = []
    batch = threading.Thread(target=lambda: outcome.append(run_batch(config, on_manifest_write=watch)))
    with caplog.at_level("WARNING", logger="customvideox_core.batch"):
        batch.start()
        assert first_running.wait(timeout=120), diagnostics(tmp_path, [server])
        server.kill()  # mid-job: the prompt is running and nothing is saved yet
        server.start()  # same port, same base directory; queue and history are gone
        batch.join(timeout=240)
    assert not batch.is_alive(), diagnostics(tmp_path, [server])

    (result,) = outcome
    assert result.ok, diagnostics(tmp_path, [server])
    assert any("retrying in" in message for message in caplog.messages)
    manifest = read_manifest(tmp_path)
    (killed,) = killed_job
    for row in rows:
        record = manifest["jobs"][row["output"]]
        assert_job_done_once(tmp_path, [server], row, record)  # history of the restarted server
        assert record["attempts"] == (2 if row["output"] == killed else 1)


def client_command(folder: Path, workflow: Path, servers) -> list[str]:
    command = [sys.executable, "-m", "customvideox_core.batch", str(folder / "jobs.csv")]
    command += ["--output-dir", str(folder / "out"), "--workflow", str(workflow)]
    for server in servers:
        command += ["--server", server.url]
    return command + ["--poll-interval", "0.2", "--history-poll", "1", "--backoff", "0.5"]


def manifest_states(folder: Path) -> list[str]:
    try:
        return [record["state"] for record in read_manifest(folder)["jobs"].values()]
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def test_a_killed_client_run_again_resumes_without_rerunning_done_jobs(
    servers, workflow_file, tmp_path
) -> None:
    rows = write_jobs(tmp_path, "resume", 3)
    command = client_command(tmp_path, workflow_file, servers)
    log_path = tmp_path / "client.log"
    with log_path.open("wb") as log:
        client = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                states = manifest_states(tmp_path)
                if "done" in states and set(BUSY_STATES) & set(states):
                    break
                assert client.poll() is None, log_path.read_text()
                time.sleep(0.02)
            else:
                pytest.fail(f"no job was done while another ran:\n{log_path.read_text()}")
            os.kill(client.pid, signal.SIGKILL)
        finally:
            client.wait(timeout=30)
    at_kill = read_manifest(tmp_path)
    done_at_kill = {name for name, record in at_kill["jobs"].items() if record["state"] == "done"}
    assert 1 <= len(done_at_kill) < 3

    again = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert again.returncode == 0, again.stderr + diagnostics(tmp_path, servers)
    resumed = read_manifest(tmp_path)
    for name in done_at_kill:
        assert resumed["jobs"][name] == at_kill["jobs"][name], "a done job is left alone"
    for row in rows:
        assert_job_done_once(tmp_path, servers, row, resumed["jobs"][row["output"]])


def test_invalid_rows_are_reported_with_line_numbers_before_anything_is_queued(
    servers, workflow_file, tmp_path, caplog
) -> None:
    write_png(tmp_path / "mask.png", seed=5)
    write_jobs(
        tmp_path,
        "bad",
        4,
        {
            1: {"seed": "twelve"},
            2: {"reference": "nowhere.png"},
            3: {"prompt": "a plush dog; mask given", "output": "bad_3"},
        },
    )
    jobs_file = tmp_path / "jobs.csv"  # add a mask column: the batch workflow has no mask input
    lines = jobs_file.read_text().splitlines()
    lines = [lines[0] + ",mask"] + [
        line + ("," if index < 3 else ",mask.png") for index, line in enumerate(lines[1:])
    ]
    jobs_file.write_text("\n".join(lines) + "\n")
    before = [
        (server.get_json("/history"), sorted((server.base_dir / "input").iterdir())) for server in servers
    ]

    argv = [str(jobs_file), "--output-dir", str(tmp_path / "out"), "--workflow", str(workflow_file)]
    for server in servers:
        argv += ["--server", server.url]
    with caplog.at_level("ERROR"):
        assert cli_main(argv) == 2
    reported = caplog.text
    assert "nothing was queued" in reported
    assert re.search(r"line 3: seed must be a non-negative integer, got 'twelve'", reported)
    assert re.search(r"line 4: reference file not found: .*nowhere\.png", reported)
    assert "line 5: workflow has no mask input" in reported
    assert "line 2:" not in reported, "the valid row is not reported"
    after = [
        (server.get_json("/history"), sorted((server.base_dir / "input").iterdir())) for server in servers
    ]
    assert after == before, "no upload, no prompt"
    assert all(server.get_json("/queue") == {"queue_running": [], "queue_pending": []} for server in servers)
    assert not (tmp_path / "out").exists()


def test_a_job_whose_folder_cannot_be_written_fails_and_the_others_finish(
    servers, workflow_file, tmp_path
) -> None:
    """A file where a job's results folder goes is a local error: that job fails with the reason (once;
    it is no server outage to retry forever) and the batch finishes the others."""
    rows = write_jobs(tmp_path, "blocked", 3)
    blocker = tmp_path / "out" / "blocked_1"
    blocker.parent.mkdir()
    blocker.write_text("not a folder")
    outcome: dict[str, object] = {}
    thread = threading.Thread(
        target=lambda: outcome.update(result=run_batch(batch_config(tmp_path, workflow_file, servers))),
        daemon=True,
    )
    thread.start()
    thread.join(300)
    assert not thread.is_alive(), "the batch never finished: " + diagnostics(tmp_path, servers)
    result = outcome["result"]

    assert result.failed == ("blocked_1",) and not result.unfinished, diagnostics(tmp_path, servers)
    manifest = read_manifest(tmp_path)
    error = manifest["jobs"]["blocked_1"]["error"]
    ((_, _, entry),) = runs_of(servers, "blocked_1")
    (saved,) = entry["outputs"][SAVE].get("latents") or entry["outputs"][SAVE].get("images")
    assert f"cannot write {blocker / saved['filename']}" in error
    assert f"the server keeps the file as {saved['filename']}" in error
    assert blocker.read_text() == "not a folder"
    for row in (rows[0], rows[2]):
        assert_job_done_once(tmp_path, servers, row, manifest["jobs"][row["output"]])


def test_check_with_a_real_server_refuses_values_outside_the_ranges_its_nodes_declare(
    servers, workflow_file, tmp_path, caplog
) -> None:
    """``--check --server``: the ranges come from the server's ``/object_info`` (read here too, as the
    oracle); ``--sweep tab_peak=1e30`` is refused with the node's range, and nothing is queued."""
    server = servers[0]
    write_jobs(tmp_path, "range", 1)
    declared = {
        (node, name): server.get_json(f"/object_info/{node}")[node]["input"]["required"][name][1]
        for node, name in [
            ("CustomVideoXTimeAwareBias", "peak"),
            ("CustomVideoXERAEMask", "strength"),
            ("CustomVideoXSample", "cfg"),
        ]
    }
    assert (
        declared[("CustomVideoXTimeAwareBias", "peak")]["min"],
        declared[("CustomVideoXTimeAwareBias", "peak")]["max"],
    ) == (-20.0, 20.0)
    before = server.get_json("/history")
    argv = [
        str(tmp_path / "jobs.csv"),
        "--output-dir",
        str(tmp_path / "out"),
        "--workflow",
        str(workflow_file),
    ]
    argv += ["--server", server.url, "--check"]
    for (node, name), column in zip(declared, ("tab_peak", "erae_strength", "cfg"), strict=True):
        above = declared[(node, name)]["max"] + 1
        caplog.clear()
        with caplog.at_level("ERROR"):
            assert cli_main([*argv, "--sweep", f"{column}=1,{above!r}"]) == 2
        expected = (
            f"--sweep {column}={above!r}: {column} {above!r} is outside {node}.{name}'s range "
            f"[{declared[(node, name)]['min']:g}, {declared[(node, name)]['max']:g}] ({server.url}/object_info)"
        )
        assert expected in caplog.text
    with caplog.at_level("ERROR"):
        assert cli_main([*argv, "--sweep", "tab_peak=1e30"]) == 2
    assert "tab_peak 1e+30 is outside CustomVideoXTimeAwareBias.peak's range [-20, 20]" in caplog.text
    assert cli_main([*argv, "--sweep", "tab_peak=-20,20", "--sweep", "cfg=0,100"]) == 0
    assert server.get_json("/history") == before
    assert server.get_json("/queue") == {"queue_running": [], "queue_pending": []}


# ---------------------------------------------------------------------------------------------
# The README's main job
# ---------------------------------------------------------------------------------------------


def readme_main_job_command() -> list[str]:
    """The README's one-job command line (``python -m customvideox_core.batch ... --reference ...``)."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8").replace("\\\n", " ")
    found = [
        line.strip()
        for line in text.splitlines()
        if re.match(r"\s*python3? -m customvideox_core\.batch\b", line) and "--reference" in line
    ]
    assert len(found) == 1, f"README.md must show the main-job command once, found {found}"
    return shlex.split(found[0])


def option(command: list[str], name: str) -> str:
    assert name in command, f"the README's command has no {name}: {command}"
    return command[command.index(name) + 1]


def test_the_readmes_main_job_command_runs_one_job_and_saves_the_video(
    servers, video_workflow_file, tmp_path
) -> None:
    server = servers[0]
    readme = readme_main_job_command()
    command = [sys.executable, *readme[1:]]
    command[command.index("--server") + 1] = server.url
    command += ["--workflow", str(video_workflow_file)]  # tiny models: real weights don't exist here
    reference = write_png(tmp_path / option(readme, "--reference"), seed=7)
    output_dir = tmp_path / option(readme, "--output-dir")
    prompt, entity_words = option(readme, "--prompt"), option(readme, "--entity-words")
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(
            command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=240, check=False
        )

    finished = run()
    assert finished.returncode == 0, finished.stderr + diagnostics(tmp_path, [server])
    manifest = json.loads((output_dir / "manifest.json").read_text())
    (name,) = manifest["jobs"]
    assert name == reference.stem
    row = {
        "output": name,
        "prompt": prompt,
        "entity_words": entity_words,
        "seed": "0",
        "reference": reference.name,
    }
    assert_job_done_once(tmp_path, [server], row, manifest["jobs"][name], output_dir)
    (saved,) = manifest["jobs"][name]["files"]
    assert saved.endswith(".webp") and saved in finished.stderr, "the saved video is named"

    again = run()
    assert again.returncode == 0, again.stderr
    assert len(runs_of([server], name)) == 1, "the same command again does not run the job again"
