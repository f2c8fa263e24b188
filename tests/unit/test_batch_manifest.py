"""The manifest: atomic writes, resume rules, record validation."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from customvideox_core.batch import manifest as manifest_module
from customvideox_core.batch.jobs import Job
from customvideox_core.batch.manifest import JobRecord, ManifestError, ManifestStore, atomic_write_json

HEADER = {"jobs_file": "jobs.csv", "workflow": "wf.json"}


def make_jobs(count: int, seed: int = 0) -> list[Job]:
    return [
        Job(
            line=index + 2,
            name=f"job_{index + 1:04d}",
            reference=Path("/r.png"),
            prompt=f"p{index}",
            seed=seed,
        )
        for index in range(count)
    ]


def test_failed_replace_keeps_the_old_manifest_and_leaves_no_temporary(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "manifest.json"
    atomic_write_json(path, {"generation": 1})

    def crash(source: object, destination: object) -> None:
        raise OSError("disk pulled out")

    monkeypatch.setattr(manifest_module.os, "replace", crash)
    with pytest.raises(OSError, match="disk pulled out"):
        atomic_write_json(path, {"generation": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"generation": 1}
    assert os.listdir(tmp_path) == ["manifest.json"]


def test_unserialisable_document_never_touches_the_manifest(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    atomic_write_json(path, {"generation": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"generation": 1}
    assert os.listdir(tmp_path) == ["manifest.json"]


def test_store_records_every_update_and_resumes_with_the_same_client_id(tmp_path: Path) -> None:
    path = tmp_path / "out" / "manifest.json"
    jobs = make_jobs(3)
    store = ManifestStore.open(path, jobs, HEADER)
    on_disk = json.loads(path.read_text())
    assert on_disk["version"] == 1 and on_disk["jobs_file"] == "jobs.csv"
    assert {name: record["state"] for name, record in on_disk["jobs"].items()} == {
        "job_0001": "pending",
        "job_0002": "pending",
        "job_0003": "pending",
    }
    store.update("job_0002", state="queued", server="http://a:1", prompt_id="p-2", attempts=1)
    store.update("job_0003", state="done", files=("job_0003/v.mp4",))
    on_disk = json.loads(path.read_text())["jobs"]
    assert on_disk["job_0002"]["prompt_id"] == "p-2" and on_disk["job_0002"]["state"] == "queued"
    assert on_disk["job_0003"]["files"] == ["job_0003/v.mp4"]

    resumed = ManifestStore.open(path, jobs, HEADER)
    assert resumed.client_id == store.client_id
    assert resumed.get("job_0002") == store.get("job_0002")
    assert resumed.get("job_0003").state == "done"


def test_changed_job_content_is_refused_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    ManifestStore.open(path, make_jobs(2, seed=1), HEADER)
    with pytest.raises(ManifestError, match=r"line 2: job 'job_0001' differs"):
        ManifestStore.open(path, make_jobs(2, seed=2), HEADER)


def test_jobs_missing_from_the_job_file_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    ManifestStore.open(path, make_jobs(3), HEADER)
    ManifestStore.open(path, make_jobs(1), HEADER)
    assert sorted(json.loads(path.read_text())["jobs"]) == ["job_0001", "job_0002", "job_0003"]


def test_unreadable_manifest_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text("{truncated")
    with pytest.raises(ManifestError, match="cannot read manifest"):
        ManifestStore.open(path, make_jobs(1), HEADER)
    path.write_text(json.dumps({"version": 99}))
    with pytest.raises(ManifestError, match="not a version 1"):
        ManifestStore.open(path, make_jobs(1), HEADER)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"state": "queued"}, "needs its server and prompt_id"),
        ({"state": "running", "server": "http://a:1"}, "needs its server and prompt_id"),
        ({"state": "failed"}, "needs its error text"),
        ({"state": "lost"}, "not one of"),
        ({"attempts": -1}, "attempts"),
    ],
)
def test_invalid_records_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JobRecord(line=1, fingerprint="f", **changes)


def test_concurrent_updates_are_always_seen_as_whole_documents(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    jobs = make_jobs(4)
    seen_by_observer: list[dict] = []
    store = ManifestStore.open(path, jobs, HEADER, on_write=seen_by_observer.append)
    stop = threading.Event()
    problems: list[str] = []
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            try:
                document = json.loads(path.read_text())
            except json.JSONDecodeError as error:
                problems.append(str(error))
                continue
            reads[0] += 1
            if sorted(document["jobs"]) != [job.name for job in jobs]:
                problems.append(f"jobs were {sorted(document['jobs'])}")

    def writer(job: Job) -> None:
        for attempt in range(1, 9):
            store.update(job.name, state="queued", server="http://s:1", prompt_id=f"{job.name}-{attempt}")
            store.update(job.name, attempts=attempt)

    reader_thread = threading.Thread(target=reader)
    reader_thread.start()
    writers = [threading.Thread(target=writer, args=(job,)) for job in jobs]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    reader_thread.join()
    assert not problems
    assert reads[0] > 0
    assert len(seen_by_observer) == 1 + 4 * 16
    final = json.loads(path.read_text())
    assert final == seen_by_observer[-1]
    assert {record["attempts"] for record in final["jobs"].values()} == {8}
    assert not [name for name in os.listdir(tmp_path) if name != "manifest.json"]
