"""The batch manifest: one record per job, rewritten atomically after every state change.

``<output-dir>/manifest.json``::

    {
      "version": 1,
      "client_id": "<hex>",            # reused on resume, so the server's messages still reach us
      "jobs_file": "...", "workflow": "...",
      "jobs": {
        "<job name>": {
          "line": 3, "fingerprint": "<hex>",
          "state": "pending" | "uploading" | "queued" | "running" | "done" | "failed",
          "server": "http://..." | null, "prompt_id": "..." | null,
          "files": ["<job name>/<file>", ...],   # relative to the output directory (done)
          "scores": {"<node id>": {...}} | null, # CustomVideoXScore summaries from /history (done)
          "error": "..." | null,                 # failed
          "attempts": 1,                         # times the job was queued
          "updated_at": 1700000000.0
        }
      }
    }

Writes go to a temporary file in the same folder, are fsynced, then ``os.replace``d over the
manifest (and the folder fsynced), so a reader or a crash only ever sees a whole manifest.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal, get_args

from .jobs import Job

JobState = Literal["pending", "uploading", "queued", "running", "done", "failed"]
JOB_STATES: tuple[str, ...] = get_args(JobState)
MANIFEST_VERSION = 1


class ManifestError(ValueError):
    """The manifest on disk cannot be used for this batch."""


class ManifestWriteError(RuntimeError):
    """The manifest could not be written (disk full, folder removed or read-only): the batch must stop,
    since a state it cannot record would be lost on resume."""


@dataclass(frozen=True)
class JobRecord:
    """The manifest's view of one job."""

    line: int
    fingerprint: str
    state: JobState = "pending"
    server: str | None = None
    prompt_id: str | None = None
    files: tuple[str, ...] = ()
    error: str | None = None
    attempts: int = 0
    updated_at: float = field(default_factory=time.time)
    scores: dict | None = None
    """Score summaries the job's ``CustomVideoXScore`` node(s) reported, by node id (see ``results.py``)."""

    def __post_init__(self) -> None:
        if self.state not in JOB_STATES:
            raise ValueError(f"job state {self.state!r} is not one of {', '.join(JOB_STATES)}")
        if self.state in ("queued", "running") and (self.server is None or self.prompt_id is None):
            raise ValueError(f"a {self.state} job needs its server and prompt_id")
        if self.state == "failed" and not self.error:
            raise ValueError("a failed job needs its error text")
        if self.attempts < 0:
            raise ValueError(f"attempts must be >= 0, got {self.attempts}")

    def to_json(self) -> dict:
        record = asdict(self)
        record["files"] = list(self.files)
        return record

    @classmethod
    def from_json(cls, data: dict) -> JobRecord:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        known["files"] = tuple(known.get("files") or ())
        return cls(**known)


class ManifestStore:
    """Thread-safe manifest: :meth:`update` a job's record and the whole file is rewritten atomically.

    ``on_write`` (optional) is called with the written document after every write, under the lock.
    """

    def __init__(
        self,
        path: Path,
        client_id: str,
        header: dict[str, str],
        records: dict[str, JobRecord],
        on_write: Callable[[dict], None] | None = None,
    ) -> None:
        self.path = path
        self.client_id = client_id
        self._header = dict(header)
        self._records = dict(records)
        self._on_write = on_write
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        path: Path,
        jobs: Iterable[Job],
        header: dict[str, str],
        on_write: Callable[[dict], None] | None = None,
    ) -> ManifestStore:
        """Load ``path`` if it exists (resume) and add a pending record for every new job.

        Raises :class:`ManifestError` when the file is unreadable or a job with the same name has
        different content than the one recorded (the file changed since the manifest was written).
        Jobs recorded in the manifest but absent from ``jobs`` are kept untouched.
        """
        jobs = list(jobs)
        client_id = uuid.uuid4().hex
        records: dict[str, JobRecord] = {}
        if path.exists():
            client_id, records = read_manifest(path)
        mismatched = [
            f"line {job.line}: job {job.name!r} differs from the one recorded in {path}"
            for job in jobs
            if job.name in records and records[job.name].fingerprint != job.fingerprint()
        ]
        if mismatched:
            raise ManifestError(
                "the job file changed since the manifest was written; resuming would mix results:\n  "
                + "\n  ".join(mismatched)
                + "\nUse a new --output-dir, or give changed jobs a new output name."
            )
        for job in jobs:
            records.setdefault(job.name, JobRecord(line=job.line, fingerprint=job.fingerprint()))
        store = cls(path, client_id, header, records, on_write)
        store.write()
        return store

    def get(self, name: str) -> JobRecord:
        with self._lock:
            return self._records[name]

    def snapshot(self) -> dict[str, JobRecord]:
        with self._lock:
            return dict(self._records)

    def update(self, name: str, **changes: object) -> JobRecord:
        """Replace fields of ``name``'s record (validated), stamp it, and rewrite the manifest
        (:class:`ManifestWriteError` when it cannot be written)."""
        with self._lock:
            record = replace(self._records[name], updated_at=time.time(), **changes)  # type: ignore[arg-type]
            self._records[name] = record
            self._write_locked()
            return record

    def write(self) -> None:
        with self._lock:
            self._write_locked()

    def _write_locked(self) -> None:
        document = {
            "version": MANIFEST_VERSION,
            "client_id": self.client_id,
            **self._header,
            "jobs": {name: record.to_json() for name, record in self._records.items()},
        }
        try:
            atomic_write_json(self.path, document)
        except OSError as error:
            raise ManifestWriteError(
                f"cannot write the manifest {self.path} ({error.strerror or error}); the batch stops. Free "
                "some disk space (or make the folder writable) and run the same command again: what the "
                "manifest already records is kept"
            ) from error
        if self._on_write is not None:
            self._on_write(document)


def atomic_write_json(path: Path, document: object) -> None:
    """Write ``document`` as JSON to ``path`` so that readers see the old or the new file, never half."""
    atomic_write_text(path, json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` so that readers see the old or the new file, never half."""
    data = text.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":
        return  # Directories cannot be opened for fsync on Windows; os.replace is still atomic there.
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_manifest(path: Path) -> tuple[str, dict[str, JobRecord]]:
    """The client id and job records of the manifest at ``path``, checked: :class:`ManifestError` when
    it cannot be read, is not a version-:data:`MANIFEST_VERSION` manifest, or holds an invalid record."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ManifestError(f"cannot read manifest {path}: {error}; move it away to start afresh") from error
    if not isinstance(document, dict) or document.get("version") != MANIFEST_VERSION:
        raise ManifestError(
            f"manifest {path} is not a version {MANIFEST_VERSION} batch manifest; use another --output-dir"
        )
    client_id = document.get("client_id")
    jobs = document.get("jobs")
    if not isinstance(client_id, str) or not isinstance(jobs, dict):
        raise ManifestError(f"manifest {path} lacks client_id or jobs; move it away to start afresh")
    try:
        records = {name: JobRecord.from_json(record) for name, record in jobs.items()}
    except (TypeError, ValueError) as error:
        raise ManifestError(f"manifest {path} has an invalid job record: {error}") from error
    return client_id, records
