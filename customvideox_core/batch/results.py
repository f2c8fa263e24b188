"""Scores of finished jobs: read from ``/history``, kept in the manifest, written as a results table.

The ``CustomVideoXScore`` node reports its summary in its UI output under ``cvx_scores`` (a list holding
one JSON object: ``clip_i``, ``dino_i``, ``t_cons``, ``clip_t``, ``face_sim``, ``face_sim_min`` — cosines —
``face_detected`` (a share), ``motion``, ``motion_subject`` (percent of the short side), ``null`` when not
measured, plus per-frame curves). ComfyUI keeps every node's UI output in the prompt's ``/history`` entry
(``outputs[<node id>]``), so the client needs nothing beyond what it already fetches.

``results.csv`` / ``results.md`` in the output folder: one row per job — its name, state, prompt, seed,
the settings it overrides, and its scores (:data:`~customvideox_core.score_summary.SUMMARY_METRICS` that
any job has). With one score node in the workflow the score columns are ``clip_i`` …; with several,
``<node id>:clip_i`` ….
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from ..score_summary import SCORE_UI_KEY, SUMMARY_LABELS, SUMMARY_METRICS
from .jobs import Job
from .manifest import JobRecord, atomic_write_text
from .output_folder import RESULTS_CSV, RESULTS_MARKDOWN

SCORE_NODE_CLASS = "CustomVideoXScore"


def scores_from_history(history_entry: Mapping) -> dict[str, dict] | None:
    """``{node id: summary}`` of every score node in a ``/history`` entry; ``None`` when there is none."""
    found: dict[str, dict] = {}
    outputs = history_entry.get("outputs") or {}
    for node_id, node_output in outputs.items():
        if not isinstance(node_output, Mapping):
            continue
        records = node_output.get(SCORE_UI_KEY)
        if isinstance(records, list) and records and isinstance(records[0], Mapping):
            found[str(node_id)] = dict(records[0])
    return found or None


def expects_scores(workflow: Mapping[str, Mapping]) -> bool:
    """Whether an API-format workflow has a ``CustomVideoXScore`` node."""
    return any(node.get("class_type") == SCORE_NODE_CLASS for node in workflow.values())


def job_settings(job: Job) -> dict[str, object]:
    """The settings a job sets (``tab_*``, ``erae_*``, ``cfg``, ``standin_strength``), by job-file column name."""
    settings: dict[str, object] = {}
    for name, value in asdict(job.tab).items():
        if value is not None:
            settings[f"tab_{name}"] = value
    for name, value in asdict(job.erae).items():
        if value is not None:
            settings[f"erae_{name}"] = value
    if job.cfg is not None:
        settings["cfg"] = job.cfg
    if job.standin_strength is not None:
        settings["standin_strength"] = job.standin_strength
    return settings


def score_columns(records: Mapping[str, JobRecord]) -> list[tuple[str, str, str]]:
    """``(column, node id, metric)`` for every score the records hold, in a stable order."""
    nodes = sorted({node for record in records.values() for node in (record.scores or {})}, key=node_order)
    columns = []
    for node in nodes:
        for metric in SUMMARY_METRICS:
            if any(_score(record, node, metric) is not None for record in records.values()):
                columns.append((metric if len(nodes) == 1 else f"{node}:{metric}", node, metric))
    return columns


def node_order(node: str) -> tuple[int, str]:
    """Sort key of node ids: numeric ids in number order first, then the others by name."""
    return (int(node), node) if node.isdecimal() else (1 << 30, node)


def _score(record: JobRecord, node: str, metric: str) -> float | None:
    value = (record.scores or {}).get(node, {}).get(metric)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def result_rows(jobs: Sequence[Job], records: Mapping[str, JobRecord]) -> tuple[list[str], list[dict]]:
    """Header and one row per job (in job-file order) of the results table."""
    setting_names = sorted({name for job in jobs for name in job_settings(job)})
    columns = score_columns({job.name: records[job.name] for job in jobs if job.name in records})
    header = [
        "name",
        "state",
        "seed",
        *setting_names,
        *(column for column, _, _ in columns),
        "prompt",
        "error",
    ]
    rows = []
    for job in jobs:
        record = records.get(job.name)
        settings = job_settings(job)
        row: dict[str, object] = {
            "name": job.name,
            "state": record.state if record else "pending",
            "seed": job.seed,
            "prompt": job.prompt,
            "error": (record.error if record else None) or "",
        }
        for name in setting_names:
            row[name] = settings.get(name, "")
        for column, node, metric in columns:
            value = _score(record, node, metric) if record else None
            row[column] = "" if value is None else value
        rows.append(row)
    return header, rows


def to_csv(header: Sequence[str], rows: Sequence[Mapping[str, object]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(header), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({name: row.get(name, "") for name in header})  # floats in full (repr)
    return buffer.getvalue()


def to_markdown(header: Sequence[str], rows: Sequence[Mapping[str, object]]) -> str:
    """A GitHub-style Markdown table; scores with 4 decimals, ``|`` escaped."""
    lines = ["| " + " | ".join(map(column_label, header)) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [_markdown_cell(row.get(name, "")) for name in header]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def column_label(column: str) -> str:
    """``clip_i`` → ``CLIP-I``, ``12:dino_i`` → ``12:DINO-I``; other columns as they are."""
    node, _, name = column.rpartition(":")
    label = SUMMARY_LABELS.get(name, name)
    return f"{node}:{label}" if node else label


def _markdown_cell(value: object) -> str:
    text = f"{value:.4f}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def write_results(
    output_dir: Path, jobs: Sequence[Job], records: Mapping[str, JobRecord]
) -> tuple[Path, Path]:
    """Write ``results.csv`` and ``results.md`` (atomically) and return their paths."""
    header, rows = result_rows(jobs, records)
    csv_path, markdown_path = output_dir / RESULTS_CSV, output_dir / RESULTS_MARKDOWN
    atomic_write_text(csv_path, to_csv(header, rows))
    atomic_write_text(markdown_path, to_markdown(header, rows))
    return csv_path, markdown_path
