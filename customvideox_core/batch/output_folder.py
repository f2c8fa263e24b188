"""The batch client's output folder: the file names it writes there, and the checks on the folder itself.

Every file the client writes at the top of ``--output-dir`` is named here once, so that a job's output
name (its results folder, ``<output-dir>/<name>/``) can be refused when the job file is read if it would
take one of those places:

===================================  ==================================================================
``manifest.json``                    every job's state (:mod:`.manifest`)
``results.csv`` ``results.md``       the results table (:mod:`.results`)
``sweep.jobs.jsonl``                 a sweep's expanded jobs (:mod:`.sweep`)
``sweep.csv`` ``sweep.md``           a sweep's comparison table
``sweep_<axis>.png``                 a sweep's charts
``<name>.job.jsonl``                 the job file of a one-job run (:mod:`.single`)
===================================  ==================================================================

Names are compared without regard to case (``Results.CSV`` is the same file on Windows and macOS).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from ..safe_paths import file_in_the_way

MANIFEST_NAME = "manifest.json"
RESULTS_CSV = "results.csv"
RESULTS_MARKDOWN = "results.md"
SWEEP_JOBS_FILE = "sweep.jobs.jsonl"
SWEEP_CSV = "sweep.csv"
SWEEP_MARKDOWN = "sweep.md"
SINGLE_JOB_SUFFIX = ".job.jsonl"
_CHART_PREFIX, _CHART_SUFFIX = "sweep_", ".png"
RESERVED_NAMES = (MANIFEST_NAME, RESULTS_CSV, RESULTS_MARKDOWN, SWEEP_JOBS_FILE, SWEEP_CSV, SWEEP_MARKDOWN)
"""The fixed names of the files the client writes at the top of the output folder."""


class OutputDirError(ValueError):
    """``--output-dir`` cannot be used: it is a file, or it cannot be created."""


def sweep_chart_name(axis: str) -> str:
    """``sweep_<axis>.png``: the chart of one sweep axis."""
    return f"{_CHART_PREFIX}{axis}{_CHART_SUFFIX}"


def single_job_file_name(name: str) -> str:
    """``<name>.job.jsonl``: the job file a one-job run keeps in the output folder."""
    return f"{name}{SINGLE_JOB_SUFFIX}"


def reserved_name_error(name: str) -> str | None:
    """Why the job output name ``name`` would take the place of a file the client writes, or ``None``.

    ``name`` is relative (``a/b`` names the folder ``<output-dir>/a/b``); its first part must not be one
    of the client's own files, and no part may end like a one-job run's job file.
    """
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts:
        return None
    first = parts[0].lower()
    if first in RESERVED_NAMES or (first.startswith(_CHART_PREFIX) and first.endswith(_CHART_SUFFIX)):
        return (
            f"output {name!r} would put the job's folder at {parts[0]}, where the batch client writes its "
            f"own {parts[0]}; choose another output name (reserved: {', '.join(RESERVED_NAMES)}, "
            f"{sweep_chart_name('<axis>')}, <name>{SINGLE_JOB_SUFFIX})"
        )
    clash = next((part for part in parts if part.lower().endswith(SINGLE_JOB_SUFFIX)), None)
    if clash is not None:
        return (
            f"output {name!r}: a name ending in {SINGLE_JOB_SUFFIX} ({clash}) is where a one-job run keeps "
            f"its job file; choose another output name"
        )
    return None


def check_output_dir(path: Path) -> Path:
    """``path`` as a usable output folder without creating it: :class:`OutputDirError` when it is a file
    (or something else that is not a folder)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputDirError(
            f"--output-dir {path} is a file, not a folder; give a folder for the results "
            "(it is created when missing)"
        )
    blocking = file_in_the_way(path)
    if blocking is not None:
        raise OutputDirError(
            f"--output-dir {path} cannot be created: {blocking} is a file, not a folder; give another folder"
        )
    return path


def make_output_dir(path: Path) -> Path:
    """Create the output folder ``path`` (and its parents) if needed; :class:`OutputDirError` saying why
    when it is a file or cannot be created (no permission, read-only disk…)."""
    path = check_output_dir(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputDirError(
            f"--output-dir {path} cannot be created ({error.strerror or error}); give a folder you can write to"
        ) from None
    return path


def check_file_place(path: Path) -> Path:
    """``path``, one of the client's own files: :class:`OutputDirError` when a folder stands there (left by
    a job of that name in an earlier version, which did not refuse such names)."""
    if path.is_dir():
        raise OutputDirError(
            f"{path} is a folder, where the batch client writes its file {path.name}; move the folder out of "
            "the way (or use another --output-dir) and run again"
        )
    return path
