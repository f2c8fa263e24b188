"""Bad input to the batch client, as a careless user gives it: each case gets a clear answer, and the batch
always ends (issue 21, cases 9, 10, 18–21).

Against the stub server (loopback). Oracles: the stub's record of what it ran and was asked, the files
on disk before and after, and the node ranges the stub declares in its ``/object_info`` (written out in
``batch_stub_server``, not read from the pack).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
from pathlib import Path

import pytest
from batch_stub_server import StubBehaviour, StubComfyServer, api_workflow, stub_object_info
from test_batch_run import assert_results_match_rows, fast_config, make_batch, read_manifest

from customvideox_core.batch import JobFileError, run_batch
from customvideox_core.batch.cli import main as cli_main
from customvideox_core.batch.jobs import load_jobs
from customvideox_core.batch.manifest import ManifestWriteError
from customvideox_core.batch.output_folder import OutputDirError
from customvideox_core.batch.sweep import SweepError, expand, parse_axis, write_sweep_jobs

FINISH_WITHIN = 30.0
"""Seconds a batch against the stub may take before the test calls it a hang (it takes well under 2)."""


def run_to_the_end(config, **options):
    """``run_batch`` in a thread that must end within :data:`FINISH_WITHIN` seconds; its result or error."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["result"] = run_batch(config, **options)
        except Exception as error:  # the test inspects it
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(FINISH_WITHIN)
    assert not thread.is_alive(), f"the batch did not finish within {FINISH_WITHIN} s (retrying forever?)"
    return outcome


def executions_of(server: StubComfyServer, output: str) -> int:
    return sum(prompt["save"]["inputs"]["filename_prefix"] == output for prompt in server.executed_prompts())


# -- 9: a job's folder that cannot be written fails that job, and the batch goes on ------------------


def test_a_file_where_a_job_folder_should_be_fails_that_job_and_the_batch_ends(tmp_path: Path, stubs) -> None:
    server = stubs()
    _, rows = make_batch(tmp_path, 3)
    blocker = tmp_path / "out" / "clip1"
    blocker.parent.mkdir()
    blocker.write_text("not a folder")

    result = run_to_the_end(fast_config(tmp_path, [server], retries=2))["result"]

    assert result.failed == ("clip1",) and sorted(result.done) == ["clip0", "clip2"] and not result.unfinished
    manifest = read_manifest(tmp_path)
    error = manifest["jobs"]["clip1"]["error"]
    assert f"cannot write {blocker / 'clip1_'}" in error and "the server keeps the file as clip1_" in error
    assert "download of" not in error and "tries" not in error, "a local error fails the job at once"
    assert blocker.read_text() == "not a folder"
    assert_results_match_rows(tmp_path, [rows[0], rows[2]], manifest)
    assert executions_of(server, "clip1") == 1, "a local error is no server outage: the job is not run again"


def test_a_full_disk_fails_the_job_it_hits_and_leaves_no_partial_file(
    tmp_path: Path, stubs, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = stubs()
    _, rows = make_batch(tmp_path, 3)
    real_open = Path.open

    class FullDisk:
        def __init__(self, handle) -> None:
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def open_on_a_full_disk(self: Path, mode: str = "r", *args, **kwargs):
        handle = real_open(self, mode, *args, **kwargs)
        return FullDisk(handle) if ".part-" in self.name and self.parent.name == "clip2" else handle

    monkeypatch.setattr(Path, "open", open_on_a_full_disk)
    result = run_to_the_end(fast_config(tmp_path, [server], retries=2))["result"]

    assert result.failed == ("clip2",) and sorted(result.done) == ["clip0", "clip1"]
    manifest = read_manifest(tmp_path)
    error = manifest["jobs"]["clip2"]["error"]
    assert "No space left on device" in error and "tries" not in error, "a full disk is not retried"
    assert_results_match_rows(tmp_path, rows[:2], manifest)
    assert list((tmp_path / "out" / "clip2").iterdir()) == [], "the partial download is removed"
    assert executions_of(server, "clip2") == 1


def test_a_file_the_server_lists_but_never_serves_fails_after_the_retries(tmp_path: Path, stubs) -> None:
    """``/history`` answers every time, so it must not reset the count of failed downloads."""
    server = stubs(StubBehaviour(view_unavailable=lambda filename: filename.startswith("clip0_")))
    _, rows = make_batch(tmp_path, 2)

    result = run_to_the_end(fast_config(tmp_path, [server], retries=2))["result"]

    assert result.failed == ("clip0",) and result.done == ("clip1",)
    error = read_manifest(tmp_path)["jobs"]["clip0"]["error"]
    assert "download of clip0_" in error and "HTTP 503" in error and "(3 tries)" in error
    assert executions_of(server, "clip0") == 1


def test_a_manifest_that_cannot_be_written_stops_the_batch_with_the_reason(
    tmp_path: Path, stubs, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capsys
) -> None:
    server = stubs()
    make_batch(tmp_path, 3)
    import customvideox_core.batch.manifest as manifest_module

    real_write = manifest_module.atomic_write_json
    writes = {"count": 0}

    def disk_fills_up(path: Path, document: object) -> None:
        writes["count"] += 1
        if writes["count"] > 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(path, document)

    monkeypatch.setattr(manifest_module, "atomic_write_json", disk_fills_up)
    outcome = run_to_the_end(fast_config(tmp_path, [server]))
    assert isinstance(outcome["error"], ManifestWriteError)
    assert "No space left on device" in str(outcome["error"]) and "run the same command again" in str(
        outcome["error"]
    )

    argv = [str(tmp_path / "jobs.csv"), "--output-dir", str(tmp_path / "out2"), "--server", server.url]
    writes["count"] = 0
    assert cli_main([*argv, "--workflow", str(tmp_path / "wf.json"), "--quiet"]) == 1
    assert "cannot write the manifest" in caplog.text and "Traceback" not in caplog.text
    assert "Traceback" not in capsys.readouterr().err, "no worker thread dies with a traceback"


# -- 10: values outside the nodes' ranges are refused before anything is queued ---------------------


def test_values_outside_the_pack_ranges_are_refused_with_the_range(tmp_path: Path, stubs) -> None:
    server = stubs()
    make_batch(
        tmp_path,
        4,
        {0: {"tab_peak": "1e30"}, 1: {"tab_peak": "-20.5"}, 2: {"tab_peak": "20"}, 3: {"tab_peak": "-20"}},
    )
    with pytest.raises(JobFileError) as raised:
        run_batch(fast_config(tmp_path, [server]))
    message = str(raised.value)
    assert "line 2: tab_peak 1e+30 is outside CustomVideoXTimeAwareBias.peak's range [-20, 20]" in message
    assert "line 3: tab_peak -20.5 is outside" in message
    assert "line 4" not in message and "line 5" not in message, "the ends of the range are allowed"
    assert server.requests == []


def batch_argv(folder: Path) -> list[str]:
    """The command line of the batch ``make_batch`` wrote into ``folder``: its CSV, ``out``, its workflow."""
    return [
        str(folder / "jobs.csv"),
        "--output-dir",
        str(folder / "out"),
        "--workflow",
        str(folder / "wf.json"),
    ]


def test_check_refuses_a_sweep_beyond_the_node_maximum(tmp_path: Path, caplog) -> None:
    """The issue's case: ``--check --sweep tab_peak=1e30`` without a server, against the pack's ranges."""
    make_batch(tmp_path, 1)
    argv = batch_argv(tmp_path)
    assert cli_main([*argv, "--check", "--sweep", "tab_peak=1,1e30"]) == 2
    assert (
        "--sweep tab_peak=1e30: tab_peak 1e+30 is outside CustomVideoXTimeAwareBias.peak's range [-20, 20]"
        in (caplog.text)
    )
    assert not (tmp_path / "out" / "sweep.jobs.jsonl").exists()
    for axis in ("erae_strength=10.5", "erae_threshold=1.5", "cfg=101"):
        caplog.clear()
        assert cli_main([*argv, "--check", "--sweep", axis]) == 2, axis
        assert "is outside" in caplog.text and "range" in caplog.text
    assert cli_main([*argv, "--check", "--sweep", "tab_peak=-20,20", "--sweep", "cfg=0,100"]) == 0


def test_check_with_a_server_uses_that_servers_ranges(tmp_path: Path, stubs, caplog) -> None:
    info = stub_object_info()
    info["CustomVideoXTimeAwareBias"]["input"]["required"]["peak"][1]["max"] = 5.0
    narrow = stubs(StubBehaviour(object_info=info))
    make_batch(tmp_path, 2, {1: {"tab_peak": "10"}})
    argv = batch_argv(tmp_path)

    assert cli_main([*argv, "--check"]) == 0, "10 lies in the pack's own range"
    assert cli_main([*argv, "--check", "--server", narrow.url]) == 2
    assert (
        f"line 3: tab_peak 10.0 is outside CustomVideoXTimeAwareBias.peak's range [-20, 5] ({narrow.url}"
        in (caplog.text)
    )
    assert all(method == "GET" and path.startswith("/object_info/") for method, path in narrow.requests)

    without_tab = stub_object_info()
    del without_tab["CustomVideoXTimeAwareBias"]
    caplog.clear()
    assert cli_main([*argv, "--check", "--server", stubs(StubBehaviour(object_info=without_tab)).url]) == 2
    assert "has no CustomVideoXTimeAwareBias node" in caplog.text

    down = stubs()
    down.stop()
    caplog.clear()
    assert cli_main([*argv, "--check", "--server", down.url]) == 1
    assert "cannot read the nodes' ranges" in caplog.text


# -- 18 / 20: output names that would take the place of the client's own files ---------------------


RESERVED = ["manifest.json", "results.csv", "Results.MD", "sweep.csv", "sweep.md", "sweep.jobs.jsonl"]


@pytest.mark.parametrize(
    "output", [*RESERVED, "sweep_tab_peak.png", "dog.job.jsonl", "results.csv/take1", "a/b.JOB.jsonl"]
)
def test_reserved_output_names_are_refused_when_the_job_file_is_read(tmp_path: Path, stubs, output) -> None:
    server = stubs()
    make_batch(tmp_path, 2, {1: {"output": output}})
    with pytest.raises(JobFileError) as raised:
        run_batch(fast_config(tmp_path, [server]))
    assert f"line 3: output {output!r}" in str(raised.value) and "choose another output name" in str(
        raised.value
    )
    assert server.requests == [] and not (tmp_path / "out").exists()


def test_a_reserved_name_is_refused_in_the_one_job_form_before_anything_is_written(
    tmp_path: Path, stubs, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    server = stubs()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dog.png").write_bytes(b"a dog")
    (tmp_path / "wf.json").write_text(json.dumps(api_workflow()))
    argv = ["--server", server.url, "--reference", "dog.png", "--prompt", "a dog", "--entity-words", "dog"]
    argv += ["--workflow", "wf.json", "--output-dir", "out", "--output", "manifest.json"]
    assert cli_main(argv) == 2
    assert "output 'manifest.json' would put the job's folder at manifest.json" in caplog.text
    assert server.requests == [] and not (tmp_path / "out").exists()


def test_a_folder_left_where_the_results_table_goes_does_not_brick_later_runs(
    tmp_path: Path, stubs, caplog
) -> None:
    """An earlier version let a job be named ``results.csv``: its folder stays; later runs still finish."""
    server = stubs()
    _, rows = make_batch(tmp_path, 2)
    left = tmp_path / "out" / "results.csv"
    left.mkdir(parents=True)
    (left / "old_video.mp4").write_bytes(b"an old result")

    for _ in range(2):  # the first run, and a resume
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            result = run_to_the_end(fast_config(tmp_path, [server]))["result"]
        assert result.ok
        assert "could not write the results table" in caplog.text and "manifest.json" in caplog.text
        assert "move the folder results.csv out of the way" in caplog.text
    assert_results_match_rows(tmp_path, rows, read_manifest(tmp_path))
    assert [p.name for p in left.iterdir()] == ["old_video.mp4"]


def test_a_folder_left_where_a_sweep_or_one_job_file_goes_is_named_in_the_error(
    tmp_path: Path, stubs, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    server = stubs()
    make_batch(tmp_path, 1)
    (tmp_path / "out" / "sweep.jobs.jsonl" / "clip").mkdir(parents=True)
    (tmp_path / "out" / "dog.job.jsonl").mkdir()
    argv = [
        "--server",
        server.url,
        "--workflow",
        str(tmp_path / "wf.json"),
        "--output-dir",
        str(tmp_path / "out"),
    ]
    assert cli_main([str(tmp_path / "jobs.csv"), *argv, "--sweep", "seed=1,2"]) == 2
    assert (
        f"{tmp_path / 'out' / 'sweep.jobs.jsonl'} is a folder, where the batch client writes" in caplog.text
    )
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dog.png").write_bytes(b"a dog")
    caplog.clear()
    assert cli_main([*argv, "--reference", "dog.png", "--prompt", "a dog", "--entity-words", "dog"]) == 2
    assert "dog.job.jsonl is a folder, where the batch client writes" in caplog.text
    assert server.requests == [] and "Traceback" not in caplog.text
    assert (tmp_path / "out" / "sweep.jobs.jsonl" / "clip").is_dir()


# -- 21: an --output-dir that is a file, or cannot be created ---------------------------------------


def test_an_output_dir_that_is_a_file_or_cannot_be_created_is_a_clear_error(
    tmp_path: Path, stubs, caplog
) -> None:
    server = stubs()
    make_batch(tmp_path, 1)
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    base = [str(tmp_path / "jobs.csv"), "--server", server.url, "--workflow", str(tmp_path / "wf.json")]
    for output_dir, message in [(afile, "is a file, not a folder"), (afile / "out", f"{afile} is a file")]:
        for extra in ([], ["--check"], ["--sweep", "seed=1,2"]):
            caplog.clear()
            assert cli_main([*base, "--output-dir", str(output_dir), *extra]) == 2, (output_dir, extra)
            assert message in caplog.text and "Traceback" not in caplog.text
        with pytest.raises(OutputDirError, match=message):
            run_batch(fast_config(tmp_path, [server], output_dir=output_dir))
    assert afile.read_text() == "keep me"
    assert server.executed_prompts() == []


def test_an_output_dir_the_system_refuses_to_create_is_a_clear_error(
    tmp_path: Path, stubs, monkeypatch
) -> None:
    """Tests run as root, whom permissions do not stop: the refusal is simulated at ``mkdir``."""
    server = stubs()
    make_batch(tmp_path, 1)
    real_mkdir = Path.mkdir

    def read_only(self: Path, *args, **kwargs) -> None:
        if self.name == "out":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(OutputDirError, match=r"cannot be created \(Permission denied\)"):
        run_batch(fast_config(tmp_path, [server]))
    assert server.requests == []


# -- 19: sweep values that differ only in their sign, and errors in the sweep's own terms ------------


def test_sweep_values_of_opposite_sign_get_distinct_jobs(tmp_path: Path, stubs) -> None:
    server = stubs()
    make_batch(tmp_path, 1)
    (base,) = load_jobs(tmp_path / "jobs.csv")
    points, _ = expand(base, [parse_axis("tab_peak=+1,-1,1e+1,-1e-05")])
    assert [point.name for point in points] == [
        "clip0__tab_peak-1",
        "clip0__tab_peak--1",
        "clip0__tab_peak-10",
        "clip0__tab_peak--1e-05",
    ]
    argv = [str(tmp_path / "jobs.csv"), "--output-dir", str(tmp_path / "out"), "--server", server.url]
    argv += ["--workflow", str(tmp_path / "wf.json"), "--poll-interval", "0.05", "--history-poll", "0.2"]
    assert cli_main([*argv, "--quiet", "--sweep", "tab_peak=+1,-1"]) == 0
    peaks = {
        prompt["save"]["inputs"]["filename_prefix"]: prompt["tab"]["inputs"]["peak"]
        for prompt in server.executed_prompts("success")
    }
    assert peaks == {"clip0__tab_peak-1": 1.0, "clip0__tab_peak--1": -1.0}


def test_sweep_values_written_twice_or_points_that_cannot_run_are_told_in_sweep_terms(
    tmp_path: Path, stubs
) -> None:
    with pytest.raises(SweepError, match=r"'\+1' and '1' are the same value"):
        parse_axis("tab_peak=+1,1")
    with pytest.raises(SweepError, match=r"'0.2:0.8' and '.2:.8' are the same value"):
        parse_axis("tab_window=0.2:0.8,.2:.8")
    make_batch(tmp_path, 1)
    config = fast_config(tmp_path, [stubs()])
    axes = [parse_axis("tab_start=0.5"), parse_axis("tab_end=0.2,0.8"), parse_axis("seed=1,2")]
    with pytest.raises(SweepError) as raised:
        write_sweep_jobs(config, axes)
    message = str(raised.value)
    assert "--sweep tab_start=0.5, tab_end=0.2: TAB window is inverted" in message
    assert "line" not in message and "sweep.jobs.jsonl" not in message
    assert not (tmp_path / "out").exists()


# -- the same patterns elsewhere: a job file that is not text, waits no clock can hold ----------------


def test_a_job_file_that_is_not_utf8_text_is_a_row_error(tmp_path: Path, caplog) -> None:
    make_batch(tmp_path, 2)
    jobs = tmp_path / "jobs.csv"
    lines = jobs.read_bytes().splitlines(keepends=True)
    jobs.write_bytes(lines[0] + lines[1] + "subject 1 in Z\u00fcrich".encode("latin-1") + b"\n")
    argv = [
        str(jobs),
        "--output-dir",
        str(tmp_path / "out"),
        "--workflow",
        str(tmp_path / "wf.json"),
        "--check",
    ]
    assert cli_main(argv) == 2
    assert "line 3: the file is not UTF-8 text" in caplog.text and "save it as UTF-8" in caplog.text
    jobs.write_bytes(lines[0] + b"ref0.png,," + b"x" * 200_000 + b",1000,,clip0\n")  # past csv's field limit
    caplog.clear()
    assert cli_main(argv) == 2
    assert "not a readable CSV file" in caplog.text and "Traceback" not in caplog.text


@pytest.mark.parametrize("option", ["--poll-interval", "--history-poll", "--backoff", "--max-backoff"])
def test_waits_beyond_a_day_are_refused(tmp_path: Path, option: str, caplog) -> None:
    make_batch(tmp_path, 1)
    argv = [str(tmp_path / "jobs.csv"), "--output-dir", str(tmp_path / "out"), option, "1e30"]
    assert cli_main(argv) == 2
    assert "at most 86400 (a day)" in caplog.text
