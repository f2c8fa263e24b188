"""Whole batches against stub ComfyUI servers (loopback): distribution, failures, drops, resume.

The oracle for every result is the stub's own record of what it ran (each saved "video" holds the
prompt texts, seeds and digests of the uploaded images it was given), compared with the job rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from batch_stub_server import StubBehaviour, StubComfyServer, api_workflow

from customvideox_core.batch import BatchConfig, JobFileError, run_batch
from customvideox_core.batch.cli import main as cli_main
from customvideox_core.batch.comfy_client import ComfyClient

REPO_ROOT = Path(__file__).resolve().parents[2]
NEGATIVE = "blurry, low quality"
LEGAL_TRANSITIONS = {
    ("pending", "uploading"),
    ("uploading", "queued"),
    ("uploading", "failed"),
    ("uploading", "pending"),
    ("queued", "queued"),
    ("queued", "running"),
    ("queued", "done"),
    ("queued", "failed"),
    ("queued", "uploading"),
    ("queued", "pending"),
    ("running", "done"),
    ("running", "failed"),
    ("running", "uploading"),
    ("running", "pending"),
    ("failed", "pending"),
}


def make_batch(folder: Path, count: int, extra: dict[int, dict] | None = None) -> tuple[Path, list[dict]]:
    """Reference images, a shared mask and a CSV of ``count`` jobs; returns (csv path, rows)."""
    (folder / "wf.json").write_text(json.dumps(api_workflow()))
    (folder / "mask.png").write_bytes(b"the subject mask")
    rows = []
    for index in range(count):
        (folder / f"ref{index}.png").write_bytes(f"reference image {index}".encode())
        row = {
            "reference": f"ref{index}.png",
            "mask": "mask.png" if index % 2 else "",
            "prompt": f"subject {index} walking on a beach",
            "seed": str(1000 + index),
            "tab_peak": "",
            "output": f"clip{index}",
        }
        row.update((extra or {}).get(index, {}))
        rows.append(row)
    columns = list(rows[0])
    lines = [",".join(columns)] + [",".join(row[column] for column in columns) for row in rows]
    jobs_file = folder / "jobs.csv"
    jobs_file.write_text("\n".join(lines) + "\n")
    return jobs_file, rows


def fast_config(folder: Path, servers: list[StubComfyServer], **changes: object) -> BatchConfig:
    settings: dict[str, object] = {
        "jobs_file": folder / "jobs.csv",
        "output_dir": folder / "out",
        "servers": tuple(stub.url for stub in servers),
        "workflow": folder / "wf.json",
        "retries": 3,
        "backoff": 0.05,
        "poll_interval": 0.05,
        "history_poll": 0.2,
        "request_timeout": 5.0,
        "quiet": True,
    }
    settings.update(changes)
    return BatchConfig(**settings)  # type: ignore[arg-type]


def expected_record(folder: Path, row: dict) -> dict:
    """What the stub must have run for ``row``: independent of the client's code."""
    images = {"LoadImage:img": hashlib.sha256((folder / row["reference"]).read_bytes()).hexdigest()}
    if row["mask"]:
        images["LoadImageMask:maskload"] = hashlib.sha256((folder / row["mask"]).read_bytes()).hexdigest()
    return {"texts": sorted([row["prompt"], NEGATIVE]), "seeds": [int(row["seed"])], "images": images}


def assert_results_match_rows(folder: Path, rows: list[dict], manifest: dict) -> None:
    for row in rows:
        record = manifest["jobs"][row["output"]]
        assert record["state"] == "done", (row["output"], record)
        (relative,) = record["files"]
        assert relative.startswith(row["output"] + "/")
        assert json.loads((folder / "out" / relative).read_bytes()) == expected_record(folder, row)


def successful_runs(stub_servers: list[StubComfyServer]) -> Counter:
    """How many times each prompt text ran to success, over all servers."""
    counts: Counter = Counter()
    for stub in stub_servers:
        for prompt in stub.executed_prompts("success"):
            counts[prompt["pos"]["inputs"]["text"]] += 1
    return counts


def read_manifest(folder: Path) -> dict:
    return json.loads((folder / "out" / "manifest.json").read_text())


def test_full_batch_over_two_servers(tmp_path: Path, stubs) -> None:
    first, second = stubs(), stubs()
    extra = {2: {"tab_peak": "2.5"}}
    make_batch(tmp_path, 6, extra)
    rows = make_batch(tmp_path, 6, extra)[1]
    writes: list[dict] = []
    manifest_path = tmp_path / "out" / "manifest.json"

    def check_on_disk(document: dict) -> None:
        assert json.loads(manifest_path.read_text()) == document, "the file must be whole after every write"
        writes.append(document)

    result = run_batch(fast_config(tmp_path, [first, second]), on_manifest_write=check_on_disk)

    assert result.ok and result.exit_code == 0
    assert sorted(result.done) == [f"clip{index}" for index in range(6)]
    manifest = read_manifest(tmp_path)
    assert_results_match_rows(tmp_path, rows, manifest)
    assert successful_runs([first, second]) == Counter(row["prompt"] for row in rows)
    assert first.executed_prompts() and second.executed_prompts(), "both servers must get work"
    assert {record["server"] for record in manifest["jobs"].values()} == {first.url, second.url}
    (peak_prompt,) = [
        p
        for s in (first, second)
        for p in s.executed_prompts()
        if p["pos"]["inputs"]["text"] == rows[2]["prompt"]
    ]
    assert peak_prompt["tab"]["inputs"]["peak"] == 2.5
    assert peak_prompt["tab"]["inputs"]["shape"] == "parabolic", "unset overrides keep the workflow's value"
    assert_manifest_history_is_legal(writes, tmp_path)


def assert_manifest_history_is_legal(writes: list[dict], folder: Path) -> None:
    """Every write holds every job once, with legal transitions, and done is final."""
    names = set(writes[0]["jobs"])
    previous = {name: record["state"] for name, record in writes[0]["jobs"].items()}
    for document in writes[1:]:
        assert set(document["jobs"]) == names
        for name, record in document["jobs"].items():
            before, after = previous[name], record["state"]
            if before != after or after == "queued":
                assert before == after or (before, after) in LEGAL_TRANSITIONS, (name, before, after)
            previous[name] = after
    assert json.loads((folder / "out" / "manifest.json").read_text()) == writes[-1]


def test_failing_jobs_are_recorded_while_the_others_finish(tmp_path: Path, stubs) -> None:
    behaviour = StubBehaviour(
        fail_when=lambda prompt: (
            "CUDA out of memory" if "EXPLODE" in prompt["pos"]["inputs"]["text"] else None
        ),
        reject_when=lambda prompt: (
            {
                "tab": {
                    "errors": [{"message": "Value bigger than max", "details": "peak: 15.0 > 10.0"}],
                    "dependent_outputs": [],
                    "class_type": "CustomVideoXTimeAwareBias",
                }
            }
            if prompt["tab"]["inputs"]["peak"] > 10
            else None
        ),
    )
    server = stubs(behaviour)
    extra = {1: {"prompt": "subject 1 EXPLODE"}, 3: {"tab_peak": "15"}}
    _, rows = make_batch(tmp_path, 5, extra)
    result = run_batch(fast_config(tmp_path, [server]))

    assert result.exit_code == 1 and not result.unfinished
    assert sorted(result.failed) == ["clip1", "clip3"]
    manifest = read_manifest(tmp_path)
    assert manifest["jobs"]["clip1"]["error"] == (
        "CustomVideoXSample (node sample) raised RuntimeError: CUDA out of memory"
    )
    assert (
        "CustomVideoXTimeAwareBias (node tab): Value bigger than max: peak: 15.0 > 10.0"
        in (manifest["jobs"]["clip3"]["error"])
    )
    assert_results_match_rows(tmp_path, [rows[0], rows[2], rows[4]], manifest)
    assert not (tmp_path / "out" / "clip1").exists()


def test_invalid_rows_stop_everything_before_any_request(tmp_path: Path, stubs) -> None:
    server = stubs()
    make_batch(tmp_path, 3, {1: {"seed": "twelve"}, 2: {"reference": "nowhere.png"}})
    with pytest.raises(JobFileError) as raised:
        run_batch(fast_config(tmp_path, [server]))
    assert [error.line for error in raised.value.errors] == [3, 4]
    assert server.requests == []
    assert not (tmp_path / "out").exists()
    argv = [str(tmp_path / "jobs.csv"), "--output-dir", str(tmp_path / "out"), "--server", server.url]
    assert cli_main([*argv, "--workflow", str(tmp_path / "wf.json"), "--quiet"]) == 2
    assert server.requests == []


def test_mask_on_a_workflow_without_mask_input_is_a_row_error(tmp_path: Path, stubs) -> None:
    server = stubs()
    make_batch(tmp_path, 2)
    (tmp_path / "wf.json").write_text(json.dumps(api_workflow(with_mask=False)))
    with pytest.raises(JobFileError, match="line 3: workflow has no mask input"):
        run_batch(fast_config(tmp_path, [server]))
    assert server.requests == []


def test_server_dropping_and_coming_back_is_retried_with_backoff(tmp_path: Path, stubs, caplog) -> None:
    server = stubs(StubBehaviour(steps=4, step_delay=0.02))
    restarted = threading.Event()

    def restart_once(prompt_id: str) -> None:
        if restarted.is_set():
            return
        restarted.set()

        def bounce() -> None:
            server.die(lose_state=True)  # like a crashed-and-restarted ComfyUI: queue and history gone
            time.sleep(0.3)
            server.revive()

        threading.Thread(target=bounce).start()

    server.behaviour.on_execution_start = restart_once
    _, rows = make_batch(tmp_path, 3)
    with caplog.at_level("WARNING", logger="customvideox_core.batch"):
        result = run_batch(fast_config(tmp_path, [server], retries=8))

    assert result.ok, (result, read_manifest(tmp_path))
    assert restarted.is_set()
    assert any("retrying in" in message for message in caplog.messages)
    assert any("queueing it again" in message for message in caplog.messages)
    manifest = read_manifest(tmp_path)
    assert_results_match_rows(tmp_path, rows, manifest)
    assert successful_runs([server]) == Counter(row["prompt"] for row in rows)
    assert sorted(record["attempts"] for record in manifest["jobs"].values()) == [1, 1, 2]


def test_dropped_websocket_reattaches_without_running_twice(tmp_path: Path, stubs) -> None:
    server = stubs(StubBehaviour(steps=6, step_delay=0.03))
    dropped = threading.Event()

    def drop_once(prompt_id: str) -> None:
        if not dropped.is_set():
            dropped.set()
            threading.Timer(0.05, server.drop_websockets).start()

    server.behaviour.on_execution_start = drop_once
    _, rows = make_batch(tmp_path, 2)
    result = run_batch(fast_config(tmp_path, [server]))
    assert result.ok and dropped.is_set()
    assert successful_runs([server]) == Counter(row["prompt"] for row in rows)
    assert len(server.executed_prompts()) == 2
    assert {record["attempts"] for record in read_manifest(tmp_path)["jobs"].values()} == {1}


def test_server_that_stays_down_hands_its_job_to_another(tmp_path: Path, stubs) -> None:
    doomed, healthy = stubs(StubBehaviour(steps=20, step_delay=0.02)), stubs()
    doomed.behaviour.on_execution_start = lambda prompt_id: threading.Thread(target=doomed.die).start()
    _, rows = make_batch(tmp_path, 4)
    result = run_batch(fast_config(tmp_path, [doomed, healthy], retries=2, backoff=0.02))
    assert result.ok
    manifest = read_manifest(tmp_path)
    assert {record["server"] for record in manifest["jobs"].values()} == {healthy.url}
    assert_results_match_rows(tmp_path, rows, manifest)
    assert len(doomed.executed_prompts("success")) == 0


def test_no_reachable_server_leaves_jobs_pending_and_fails_the_run(tmp_path: Path, stubs) -> None:
    server = stubs()
    server.die()
    make_batch(tmp_path, 2)
    result = run_batch(fast_config(tmp_path, [server], retries=2, backoff=0.01))
    assert result.exit_code == 1 and sorted(result.unfinished) == ["clip0", "clip1"]
    manifest = read_manifest(tmp_path)
    assert {record["state"] for record in manifest["jobs"].values()} == {"pending"}


def test_resume_reattaches_finished_and_requeues_lost_prompts(tmp_path: Path, stubs) -> None:
    server = stubs()
    _, rows = make_batch(tmp_path, 3)
    run_batch(fast_config(tmp_path, [server]))
    manifest = read_manifest(tmp_path)
    # Pretend the client died right after queueing: clip1 finished on the server meanwhile (its
    # prompt id is in /history), clip2's prompt was lost (a restarted server never heard of it).
    for name, prompt_id in (("clip1", manifest["jobs"]["clip1"]["prompt_id"]), ("clip2", str(uuid.uuid4()))):
        manifest["jobs"][name].update(state="running", files=[], prompt_id=prompt_id)
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(manifest))
    for path in (tmp_path / "out" / "clip1").iterdir():
        path.unlink()

    result = run_batch(fast_config(tmp_path, [server]))
    assert result.ok
    resumed = read_manifest(tmp_path)
    assert_results_match_rows(tmp_path, rows, resumed)
    assert resumed["jobs"]["clip0"] == manifest["jobs"]["clip0"], "done jobs are left alone"
    assert resumed["jobs"]["clip1"]["prompt_id"] == manifest["jobs"]["clip1"]["prompt_id"]
    assert resumed["jobs"]["clip2"]["attempts"] == 2
    assert Counter(successful_runs([server]).values()) == Counter({1: 2, 2: 1}), "only clip2 ran again"


def test_resume_waits_for_a_prompt_still_in_the_queue(tmp_path: Path, stubs) -> None:
    server = stubs(StubBehaviour(steps=5, step_delay=0.04))
    _, rows = make_batch(tmp_path, 1)
    run_batch(fast_config(tmp_path, [server], workflow=tmp_path / "wf.json"))
    manifest = read_manifest(tmp_path)
    # Queue the same job by hand (as a dead client would have) and record it as queued.
    client = ComfyClient(server.url)
    prompt = server.executed_prompts()[0]
    prompt_id = client.queue_prompt(prompt, manifest["client_id"], str(uuid.uuid4()))
    manifest["jobs"]["clip0"].update(state="queued", prompt_id=prompt_id, files=[])
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(manifest))

    assert run_batch(fast_config(tmp_path, [server])).ok
    assert read_manifest(tmp_path)["jobs"]["clip0"]["prompt_id"] == prompt_id
    assert len(server.executed_prompts()) == 2, "the queued prompt is followed, not queued again"
    assert_results_match_rows(tmp_path, rows, read_manifest(tmp_path))


def test_killed_client_resumes_without_rerunning_or_losing_jobs(tmp_path: Path, stubs) -> None:
    behaviour = StubBehaviour(steps=5, step_delay=0.04)
    first, second = stubs(behaviour), stubs(behaviour)
    _, rows = make_batch(tmp_path, 6)
    command = [
        sys.executable,
        "-m",
        "customvideox_core.batch",
        str(tmp_path / "jobs.csv"),
        "--output-dir",
        str(tmp_path / "out"),
        "--workflow",
        str(tmp_path / "wf.json"),
        "--server",
        first.url,
        "--server",
        second.url,
        "--poll-interval",
        "0.05",
        "--history-poll",
        "0.2",
        "--backoff",
        "0.05",
    ]
    with (tmp_path / "client.log").open("wb") as log:
        client = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                states = _states_on_disk(tmp_path)
                if "done" in states and {"queued", "running"} & set(states):
                    break
                assert client.poll() is None, (tmp_path / "client.log").read_text()
                time.sleep(0.01)
            else:
                pytest.fail("the client never had a job done and another in flight")
            os.kill(client.pid, signal.SIGKILL)
        finally:
            client.wait(timeout=10)
    at_kill = read_manifest(tmp_path)
    done_at_kill = {name for name, record in at_kill["jobs"].items() if record["state"] == "done"}
    assert done_at_kill and len(done_at_kill) < 6

    result = run_batch(fast_config(tmp_path, [first, second]))
    assert result.ok
    resumed = read_manifest(tmp_path)
    assert sorted(resumed["jobs"]) == sorted(row["output"] for row in rows)
    for name in done_at_kill:
        assert resumed["jobs"][name] == at_kill["jobs"][name], "done jobs are not re-run"
    assert_results_match_rows(tmp_path, rows, resumed)
    assert successful_runs([first, second]) == Counter(row["prompt"] for row in rows), "each job ran once"


def _states_on_disk(folder: Path) -> list[str]:
    try:
        return [record["state"] for record in read_manifest(folder)["jobs"].values()]
    except FileNotFoundError:
        return []


def test_cli_help_is_fast_to_import_and_never_imports_torch() -> None:
    code = (
        "import sys, runpy; sys.argv = ['batch', '--help']\n"
        "try:\n    runpy.run_module('customvideox_core.batch', run_name='__main__')\n"
        "except SystemExit as exit:\n    assert exit.code == 0\n"
        "heavy = [m for m in ('torch', 'numpy', 'comfy', 'folder_paths') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    finished = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=False
    )
    assert finished.returncode == 0, finished.stderr
    assert "--output-dir" in finished.stdout and "--server" in finished.stdout


def test_server_that_ignores_client_prompt_ids_and_writes_history_late(tmp_path: Path, stubs) -> None:
    server = stubs(StubBehaviour(honour_prompt_id=False, history_delay=0.1))
    _, rows = make_batch(tmp_path, 2)
    assert run_batch(fast_config(tmp_path, [server])).ok
    manifest = read_manifest(tmp_path)
    assert_results_match_rows(tmp_path, rows, manifest)
    assert {record["prompt_id"] for record in manifest["jobs"].values()} == set(server.state.history)


def test_job_timeout_fails_the_job(tmp_path: Path, stubs) -> None:
    server = stubs(StubBehaviour(steps=100, step_delay=0.02))
    make_batch(tmp_path, 1)
    result = run_batch(fast_config(tmp_path, [server], job_timeout=0.3))
    assert result.failed == ("clip0",)
    assert "job timeout" in read_manifest(tmp_path)["jobs"]["clip0"]["error"]
    for _ in range(200):  # the stub notices the interrupt at its next sampler step
        if server.executions[0].outcome != "running":
            break
        time.sleep(0.01)
    assert server.executions[0].outcome == "interrupted", "a timed-out prompt must not keep the server busy"


def test_check_only_validates_and_queues_nothing(tmp_path: Path, stubs) -> None:
    server = stubs()
    make_batch(tmp_path, 2)
    argv = [str(tmp_path / "jobs.csv"), "--output-dir", str(tmp_path / "out"), "--server", server.url]
    assert cli_main([*argv, "--workflow", str(tmp_path / "wf.json"), "--check", "--quiet"]) == 0
    assert not (tmp_path / "out").exists()
    assert server.requests and all(  # it only read the nodes' ranges from the server
        method == "GET" and path.startswith("/object_info/") for method, path in server.requests
    )
    assert cli_main([*argv, "--workflow", str(tmp_path / "absent.json"), "--check", "--quiet"]) == 2
    assert cli_main([*argv, "--server", server.url, "--check", "--quiet"]) == 2, "a server listed twice"


def test_failed_jobs_are_retried_on_resume_unless_kept(tmp_path: Path, stubs) -> None:
    failing = {"on": True}
    server = stubs(StubBehaviour(fail_when=lambda prompt: "flaky GPU" if failing["on"] else None))
    _, rows = make_batch(tmp_path, 2)
    assert run_batch(fast_config(tmp_path, [server])).exit_code == 1
    failing["on"] = False
    kept = run_batch(fast_config(tmp_path, [server], retry_failed=False))
    assert sorted(kept.failed) == ["clip0", "clip1"] and len(server.executions) == 2
    assert run_batch(fast_config(tmp_path, [server])).ok
    assert_results_match_rows(tmp_path, rows, read_manifest(tmp_path))


def test_config_defaults_and_validation(tmp_path: Path) -> None:
    config = BatchConfig(jobs_file="jobs.csv", output_dir=tmp_path)
    assert config.servers == ("http://127.0.0.1:8188",)
    assert config.workflow_path == REPO_ROOT / "workflows" / "api" / "customvideox_cogvideox5b_api.json"
    assert config.manifest_path == tmp_path / "manifest.json"
    assert BatchConfig(jobs_file="j.csv", output_dir=tmp_path, servers=("http://h:1/",)).servers == (
        "http://h:1",
    )
    for changes, message in (
        ({"servers": ()}, "at least one server"),
        ({"servers": ("127.0.0.1:8188",)}, "must look like"),
        ({"servers": ("http://h:1", "http://h:1/")}, "more than once"),
        ({"retries": -1}, "retries"),
        ({"backoff": 0.0}, "backoff"),
        ({"job_timeout": 0.0}, "job_timeout"),
    ):
        with pytest.raises(ValueError, match=message):
            BatchConfig(jobs_file="jobs.csv", output_dir=tmp_path, **changes)  # type: ignore[arg-type]
