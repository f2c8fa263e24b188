"""One job from the command line (``--reference IMAGE --prompt TEXT``): the main job, as a batch of one.

The job is checked completely (images exist, seed and names are valid, the workflow can take it)
before anything is written. It is then kept as a one-line JSONL job file in the output folder,
``<output-dir>/<name>.job.jsonl``, and run like any batch: its state lives in
``<output-dir>/manifest.json``, its results in ``<output-dir>/<name>/``, and running the same command
again resumes it (a finished job is not run again). ``name`` is ``--output`` when given, else the
reference image's file name without its extension (``dog.png`` → ``dog``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .jobs import Job, job_from_fields
from .manifest import atomic_write_text
from .output_folder import check_file_place, make_output_dir, single_job_file_name
from .workflow import WorkflowTargets, job_workflow_errors

DEFAULT_SEED = 0
"""Seed of a single job when none is given: fixed, so that the same command gives the same video."""
_UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")


class SingleJobError(ValueError):
    """The single job cannot run: every problem, and what to do about it."""


@dataclass(frozen=True)
class SingleJob:
    """What ``--reference/--prompt/--seed/--entity-words/--mask/--output`` asked for.

    Relative image paths are read from the current directory.
    """

    reference: Path
    prompt: str
    seed: int = DEFAULT_SEED
    entity_words: str = ""
    mask: Path | None = None
    output: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "reference", Path(self.reference))
        if self.mask is not None:
            object.__setattr__(self, "mask", Path(self.mask))

    @property
    def name(self) -> str:
        """The job's name: ``output``, else the reference's file stem made safe for a folder name."""
        if self.output is not None:
            return self.output
        stem = _UNSAFE_NAME_CHARACTERS.sub("_", self.reference.stem).strip("._")
        return stem or "job"

    def fields(self) -> dict[str, object]:
        """The job-file object (JSONL keys); image paths absolute, so the file reads the same anywhere."""
        fields: dict[str, object] = {
            "reference": str(self.reference.expanduser().absolute()),
            "prompt": self.prompt,
            "seed": self.seed,
            "output": self.name,
        }
        if self.entity_words:
            fields["entity_words"] = self.entity_words
        if self.mask is not None:
            fields["mask"] = str(self.mask.expanduser().absolute())
        return fields

    def job_file(self, output_dir: Path) -> Path:
        return Path(output_dir) / single_job_file_name(self.name)


def check_single_job(single: SingleJob, targets: WorkflowTargets) -> Job:
    """The job as the batch runner will read it; raise :class:`SingleJobError` listing every problem.

    ``targets``: the nodes the job fills in the workflow it will run with.
    """
    job, errors = job_from_fields(single.fields(), base_dir=Path.cwd())
    if job is not None:
        errors = job_workflow_errors(targets, job)
    if job is None or errors:
        raise SingleJobError("the job cannot run; nothing was queued:\n  " + "\n  ".join(errors))
    return job


def write_single_job(single: SingleJob, output_dir: Path) -> Path:
    """Write the job file ``<output-dir>/<name>.job.jsonl`` (or keep it if it holds this very job).

    Raises :class:`SingleJobError`, writing nothing, when the file holds another job of that name.
    """
    path = check_file_place(single.job_file(make_output_dir(output_dir)))
    fields = single.fields()
    if path.exists():
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            recorded = None
        if recorded == fields:
            return path
        raise SingleJobError(
            f"{path} already holds a job named {single.name!r} with other settings (prompt, seed or "
            f"images); pass --output with a new name, or use another --output-dir"
        )
    atomic_write_text(path, json.dumps(fields, ensure_ascii=False) + "\n")
    return path


def single_job_results(manifest_path: Path, name: str) -> list[Path]:
    """The files the job ``name`` saved, as the manifest records them (empty if it has none)."""
    try:
        record = json.loads(manifest_path.read_text(encoding="utf-8"))["jobs"][name]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        return []
    return [manifest_path.parent / relative for relative in record.get("files") or ()]
