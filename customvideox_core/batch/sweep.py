"""Sweep mode: one job expanded over a grid of settings, run as a batch, compared in a table and a picture.

``--sweep AXIS=V1,V2,…`` (repeatable) on a job file holding one job (or on the one-job form). Axes:

==================  =================================================================
``tab_shape``       parabolic | constant | linear | custom
``tab_peak``        TAB peak (numbers); likewise ``tab_floor``, ``tab_start``, ``tab_end``
``tab_window``      TAB window as ``start:end`` pairs, e.g. ``0:1,0.2:0.8`` (sets both)
``erae_strength``   ERAE strength γ; likewise ``erae_threshold``
``cfg``             guidance scale of the workflow's samplers
``standin_strength``  Apply Stand-In's strength (0–2)
``seed``            seeds (whole numbers)
==================  =================================================================

The grid's points become ``<output-dir>/sweep.jobs.jsonl`` (job ``<name>__<axis>-<value>…``; a value is
named as written when that is a plain name, else in one spelling per value, so ``+1`` and ``-1`` give
``tab_peak-1`` and ``tab_peak--1``), which runs as an ordinary batch (same manifest, resume, servers).
Every point is checked first (:func:`check_points`): one that cannot run is refused in terms of the
``--sweep`` values, before anything is written. Then, from the scores in the manifest:

- ``sweep.csv`` / ``sweep.md``: one row per setting (every axis but ``seed``; seeds are averaged, ``n``
  says how many scored jobs each mean holds; with ``seed`` as the only axis, one row per seed);
- ``sweep_<axis>.png``: each score against that axis's values, averaged over the other axes — the cosines
  (CLIP-I …, FaceSim) and the share of frames with a face in one panel, the motion (percent of the short
  side) in a second one below, so likeness and movement are read side by side. Drawn with
  Pillow, imported only here (ComfyUI ships it; the client otherwise needs none): without it the
  pictures are skipped with a warning and the tables are still written.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import product
from pathlib import Path

from ..score_summary import MOTION_METRICS, SUMMARY_LABELS, SUMMARY_METRICS
from ..tab import TAB_SHAPES
from .config import BatchConfig, BatchResult
from .input_ranges import PACK_RANGES, InputRanges, job_range_errors
from .jobs import FLOAT_COLUMNS, Job, job_from_fields, load_jobs
from .manifest import JobRecord, atomic_write_text, read_manifest
from .output_folder import (
    SWEEP_CSV,
    SWEEP_JOBS_FILE,
    SWEEP_MARKDOWN,
    check_file_place,
    make_output_dir,
    sweep_chart_name,
)
from .results import job_settings, node_order, to_csv, to_markdown
from .runner import load_targets, run_batch
from .workflow import ApiWorkflow, WorkflowTargets, job_workflow_errors

logger = logging.getLogger(__name__)


class SweepError(ValueError):
    """A sweep that cannot run: a bad axis or value, or a job file without exactly one job."""


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def _seed(text: str) -> int:
    if not text.isdecimal():
        raise ValueError(f"{text!r} is not a non-negative whole number")
    return int(text)


def _shape(text: str) -> str:
    if text not in TAB_SHAPES:
        raise ValueError(f"{text!r} is not one of {', '.join(TAB_SHAPES)}")
    return text


def _window(text: str) -> tuple[float, float]:
    start, separator, end = text.partition(":")
    if not separator:
        raise ValueError(f"{text!r} is not a start:end pair such as 0.2:0.8")
    return _number(start), _number(end)


_SAFE_TEXT = re.compile(r"[A-Za-z0-9._-]+")
MAX_NAME_LENGTH = 200
"""Longest generated job name (it names a folder and the saved files' prefix; file names stop at 255)."""


def _number_name(value: float, text: str) -> str:
    """A number as it goes into a job name: as written when that is a plain name (``0.5``, ``-1``), else
    from the value, in one spelling per value (``+1`` → ``1``, ``1e+30`` → ``1e30``): distinct values get
    distinct names, so ``+1`` and ``-1`` never meet."""
    if _SAFE_TEXT.fullmatch(text):
        return text
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value).replace("+", "")


def _window_name(value: tuple[float, float], text: str) -> str:
    start, _, end = text.partition(":")
    return f"{_number_name(value[0], start.strip())}-{_number_name(value[1], end.strip())}"


@dataclass(frozen=True)
class AxisKind:
    """How one sweep axis reads its values, names them in job names, and which job-file columns a value
    sets."""

    parse: Callable[[str], object]
    columns: Callable[[object], dict[str, object]]
    name: Callable[[object, str], str] = lambda value, text: text


def _column(name: str) -> Callable[[object], dict[str, object]]:
    return lambda value: {name: value}


AXES: dict[str, AxisKind] = {
    "tab_shape": AxisKind(_shape, _column("tab_shape")),
    **{name: AxisKind(_number, _column(name), _number_name) for name in FLOAT_COLUMNS},  # type: ignore[arg-type]
    "tab_window": AxisKind(
        _window,
        lambda value: {"tab_start": value[0], "tab_end": value[1]},  # type: ignore[index]
        _window_name,  # type: ignore[arg-type]
    ),
    "seed": AxisKind(_seed, _column("seed"), lambda value, text: str(value)),
}
"""Sweep axes: the job file's number columns (``jobs.FLOAT_COLUMNS``, one list), the TAB shape, the TAB
window (start and end at once) and the seed."""


@dataclass(frozen=True)
class SweepAxis:
    """One axis: its name and its values as written (``texts``) and as parsed (``values``)."""

    name: str
    texts: tuple[str, ...]
    values: tuple[object, ...]

    def value_name(self, index: int) -> str:
        """Value ``index`` as it appears in job names (distinct values, distinct names)."""
        return AXES[self.name].name(self.values[index], self.texts[index])


def parse_axis(text: str) -> SweepAxis:
    """``"tab_peak=0,0.5,1"`` → ``SweepAxis``; raises :class:`SweepError` saying what is wrong."""
    name, separator, listing = text.partition("=")
    name = name.strip()
    if not separator or name not in AXES:
        raise SweepError(f"--sweep {text!r}: expected AXIS=V1,V2,… with AXIS one of {', '.join(AXES)}")
    texts = tuple(item.strip() for item in listing.split(",") if item.strip())
    if not texts:
        raise SweepError(f"--sweep {text!r}: give at least one value after '='")
    values: list[object] = []
    for item in texts:
        try:
            value = AXES[name].parse(item)
        except ValueError as error:
            raise SweepError(f"--sweep {name}: {error}") from None
        if value in values:
            same = texts[values.index(value)]
            detail = "" if same == item else f" ({same!r} and {item!r} are the same value)"
            raise SweepError(f"--sweep {text!r}: a value is repeated{detail}; list each value once")
        values.append(value)
    return SweepAxis(name, texts, tuple(values))


def check_axes(axes: Sequence[SweepAxis]) -> None:
    """Refuse axes that set the same column twice (e.g. ``tab_window`` with ``tab_start``)."""
    seen: dict[str, str] = {}
    for axis in axes:
        for column in AXES[axis.name].columns(axis.values[0]):
            if column in seen:
                raise SweepError(
                    f"--sweep {axis.name} and --sweep {seen[column]} both set {column}; keep one"
                )
            seen[column] = axis.name


@dataclass(frozen=True)
class SweepPoint:
    """One job of the grid: its name and the value text of every axis (as the user wrote it)."""

    name: str
    settings: tuple[tuple[str, str], ...]

    def label(self) -> str:
        """``tab_peak=+1, seed=2``: the point in the user's own words."""
        return ", ".join(f"{axis}={text}" for axis, text in self.settings)


def point_name(base: str, settings: Sequence[tuple[str, str]]) -> str:
    """``<base>__<axis>-<value name>…`` from ``(axis, value name)`` pairs."""
    return "__".join([base, *(f"{axis}-{value}" for axis, value in settings)])


def job_fields(job: Job) -> dict[str, object]:
    """A job as a JSONL object of the job-file format (absolute image paths)."""
    fields: dict[str, object] = {
        "reference": str(job.reference),
        "prompt": job.prompt,
        "seed": job.seed,
        **job_settings(job),
    }
    if job.mask is not None:
        fields["mask"] = str(job.mask)
    if job.entity_words:
        fields["entity_words"] = job.entity_words
    return fields


def expand(base: Job, axes: Sequence[SweepAxis]) -> tuple[list[SweepPoint], list[dict[str, object]]]:
    """The grid (every combination, first axis slowest) as points and as job-file rows."""
    check_axes(axes)
    points, rows = [], []
    for combination in product(*(range(len(axis.values)) for axis in axes)):
        settings = tuple((axis.name, axis.texts[i]) for axis, i in zip(axes, combination, strict=True))
        name = point_name(
            base.name, [(axis.name, axis.value_name(i)) for axis, i in zip(axes, combination, strict=True)]
        )
        row = job_fields(base)
        for axis, i in zip(axes, combination, strict=True):
            row.update(AXES[axis.name].columns(axis.values[i]))
        row["output"] = name
        points.append(SweepPoint(name, settings))
        rows.append(row)
    return points, rows


def check_points(
    points: Sequence[SweepPoint],
    rows: Sequence[Mapping[str, object]],
    workflow: ApiWorkflow,
    targets: WorkflowTargets,
    ranges: InputRanges = PACK_RANGES,
) -> None:
    """Refuse a grid with a point that cannot run, in terms of the ``--sweep`` values the user wrote.

    Each point is checked as its generated job will be (the job's own checks, what the workflow can
    take, the node inputs' ``ranges``); a problem shared by several points is told once, with the axis
    values those points have in common (``--sweep tab_peak=1e30: …``).
    """
    problems: dict[str, list[SweepPoint]] = {}
    for point, row in zip(points, rows, strict=True):
        job, errors = job_from_fields(row, base_dir=Path.cwd())
        if job is not None:
            errors = job_workflow_errors(targets, job) + job_range_errors(workflow, targets, job, ranges)
        if len(point.name) > MAX_NAME_LENGTH:
            errors.append(
                f"its job name is {len(point.name)} characters long (at most {MAX_NAME_LENGTH}: it names a "
                "folder and the saved files); give the job a shorter output name, or sweep fewer axes"
            )
        for message in errors:
            problems.setdefault(message, []).append(point)
    if problems:
        listing = "\n  ".join(
            f"--sweep {_shared_label(where)}: {message}" for message, where in problems.items()
        )
        raise SweepError(f"the sweep cannot run; nothing was queued:\n  {listing}")


def _shared_label(points: Sequence[SweepPoint]) -> str:
    """The axis values every one of ``points`` has (``tab_peak=1e30``), else the first point and a count."""
    shared = [setting for setting in points[0].settings if all(setting in p.settings for p in points)]
    if shared:
        return ", ".join(f"{axis}={text}" for axis, text in shared)
    return f"{points[0].label()} (and {len(points) - 1} more point(s))"


def write_sweep_jobs(
    config: BatchConfig, axes: Sequence[SweepAxis], ranges: InputRanges = PACK_RANGES
) -> tuple[Path, list[SweepPoint]]:
    """Expand the one job of ``config.jobs_file`` into ``<output-dir>/sweep.jobs.jsonl``, after checking
    every point (:func:`check_points`, against ``ranges``)."""
    jobs = load_jobs(config.jobs_file)
    if len(jobs) != 1:
        raise SweepError(
            f"a sweep expands one job, but {config.jobs_file} holds {len(jobs)}; keep one row (or use "
            "--reference/--prompt)"
        )
    if not axes:
        raise SweepError("give at least one --sweep AXIS=V1,V2,…")
    points, rows = expand(jobs[0], axes)
    check_points(points, rows, *load_targets(config.workflow_path), ranges)
    path = check_file_place(make_output_dir(config.output_dir) / SWEEP_JOBS_FILE)
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path, points


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _job_scores(record: JobRecord | None) -> dict[str, float]:
    """The first score node's finite means of a done job (``{}`` otherwise)."""
    if record is None or record.state != "done" or not record.scores:
        return {}
    summary = record.scores[min(record.scores, key=node_order)]
    return {
        metric: float(summary[metric])
        for metric in SUMMARY_METRICS
        if isinstance(summary.get(metric), int | float) and math.isfinite(summary[metric])
    }


def comparison(
    axes: Sequence[SweepAxis], points: Sequence[SweepPoint], records: Mapping[str, JobRecord]
) -> tuple[list[str], list[dict]]:
    """Header and rows of the comparison table (see the module doc)."""
    grouped = [axis.name for axis in axes if axis.name != "seed"] or [axis.name for axis in axes]
    groups: dict[tuple[str, ...], list[dict[str, float]]] = {}
    for point in points:
        settings = dict(point.settings)
        key = tuple(settings[name] for name in grouped)
        groups.setdefault(key, [])
        scores = _job_scores(records.get(point.name))
        if scores:
            groups[key].append(scores)
    present = [
        metric for metric in SUMMARY_METRICS if any(metric in s for group in groups.values() for s in group)
    ]
    header = [*grouped, "n", *present]
    rows = []
    for key, members in groups.items():
        row: dict[str, object] = dict(zip(grouped, key, strict=True))
        row["n"] = len(members)
        for metric in present:
            mean = _mean([scores[metric] for scores in members if metric in scores])
            row[metric] = "" if mean is None else mean
        rows.append(row)
    return header, rows


def marginal_means(
    axis: SweepAxis, points: Sequence[SweepPoint], records: Mapping[str, JobRecord]
) -> dict[str, list[float | None]]:
    """Per metric, the mean score at each of ``axis``'s values over every other axis."""
    series: dict[str, list[float | None]] = {}
    for metric in SUMMARY_METRICS:
        values = []
        for text in axis.texts:
            scores = [
                _job_scores(records.get(point.name)).get(metric)
                for point in points
                if dict(point.settings)[axis.name] == text
            ]
            values.append(_mean([s for s in scores if s is not None]))
        if any(value is not None for value in values):
            series[metric] = values
    return series


CHART_COLOURS = ((220, 80, 30), (40, 110, 200), (40, 160, 80), (150, 60, 170), (200, 150, 20), (20, 150, 160))
PANEL_HEIGHT, PANEL_GAP, CHART_LEFT, CHART_RIGHT, CHART_TOP = 264, 60, 60, 620, 36


def _panels(series: Mapping[str, Sequence[float | None]]) -> list[dict[str, Sequence[float | None]]]:
    """The series split by unit: cosines and shares first, motion (percent) second; empty panels dropped."""
    scores = {metric: values for metric, values in series.items() if metric not in MOTION_METRICS}
    motion = {metric: values for metric, values in series.items() if metric in MOTION_METRICS}
    return [panel for panel in (scores, motion) if panel]


def draw_chart(path: Path, axis: SweepAxis, series: Mapping[str, Sequence[float | None]]) -> Path | None:
    """``score vs axis value`` as a PNG (Pillow, imported here); ``None`` when Pillow is missing.

    One panel per unit (:func:`_panels`), each with its own y range, sharing the x axis.
    """
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        logger.warning("Pillow is not installed, so %s is not drawn (the tables are written)", path.name)
        return None
    panels = _panels(series)
    width = 640
    height = CHART_TOP + len(panels) * (PANEL_HEIGHT + PANEL_GAP)
    image = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    count = len(axis.texts)
    left, right = CHART_LEFT, CHART_RIGHT

    def x_of(index: int) -> float:
        return left + (index + 0.5) / count * (right - left)

    colour_of = {metric: CHART_COLOURS[i % len(CHART_COLOURS)] for i, metric in enumerate(series)}
    draw.text((left, 10), f"score vs {axis.name} (mean over the other settings)", fill=(90, 90, 90))
    for number, panel in enumerate(panels):
        top = CHART_TOP + number * (PANEL_HEIGHT + PANEL_GAP)
        bottom = top + PANEL_HEIGHT
        known = [v for values in panel.values() for v in values if v is not None]
        low, high = min(known), max(known)
        if high - low < 0.01:
            low, high = low - 0.005, high + 0.005

        def y_of(value: float, top: int = top, bottom: int = bottom, low: float = low, high: float = high):
            return bottom - (value - low) / (high - low) * (bottom - top)

        draw.rectangle([left, top, right, bottom], outline=(90, 90, 90))
        for index, text in enumerate(axis.texts):
            draw.line([(x_of(index), top), (x_of(index), bottom)], fill=(225, 225, 225))
            draw.text((x_of(index) - 4 * len(text), bottom + 6), text, fill=(90, 90, 90))
        legend_x = left + 8
        for metric, values in panel.items():
            colour = colour_of[metric]
            points = [(x_of(i), y_of(v)) for i, v in enumerate(values) if v is not None]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
            for x, y in points:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
            label = SUMMARY_LABELS[metric]
            draw.text((legend_x, top + 6), label, fill=colour)
            legend_x += 7 * len(label) + 16
        draw.text((4, top - 4), f"{high:.3f}", fill=(90, 90, 90))
        draw.text((4, bottom - 8), f"{low:.3f}", fill=(90, 90, 90))
        unit = "% of short side" if set(panel) <= set(MOTION_METRICS) else "cosine / share"
        draw.text(
            ((left + right) // 2 - 4 * len(axis.name), bottom + 24),
            f"{axis.name}   ({unit})",
            fill=(90, 90, 90),
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@dataclass(frozen=True)
class SweepResult:
    """The batch's outcome and the files the sweep wrote."""

    batch: BatchResult
    table_csv: Path | None
    table_markdown: Path | None
    """``None`` when the tables could not be written (a warning said why)."""
    charts: tuple[Path, ...]


def write_comparison(
    output_dir: Path,
    axes: Sequence[SweepAxis],
    points: Sequence[SweepPoint],
    records: Mapping[str, JobRecord],
) -> tuple[Path, Path, tuple[Path, ...]]:
    """``sweep.csv``, ``sweep.md`` and one ``sweep_<axis>.png`` per charted axis."""
    header, rows = comparison(axes, points, records)
    csv_path, markdown_path = output_dir / SWEEP_CSV, output_dir / SWEEP_MARKDOWN
    atomic_write_text(csv_path, to_csv(header, rows))
    atomic_write_text(markdown_path, to_markdown(header, rows))
    charted = [axis for axis in axes if axis.name != "seed"] or list(axes)
    charts = []
    for axis in charted:
        series = marginal_means(axis, points, records)
        if not series:
            logger.warning(
                "no scores to draw against %s: does the workflow have a CustomVideoXScore node?", axis.name
            )
            continue
        chart = draw_chart(output_dir / sweep_chart_name(axis.name), axis, series)
        if chart is not None:
            charts.append(chart)
    return csv_path, markdown_path, tuple(charts)


def run_sweep(config: BatchConfig, axes: Sequence[SweepAxis]) -> SweepResult:
    """Expand, run (or resume) the grid as a batch, then write the comparison table and pictures."""
    jobs_path, points = write_sweep_jobs(config, axes)
    batch = run_batch(replace(config, jobs_file=jobs_path))
    _, records = read_manifest(batch.manifest_path)
    try:
        csv_path, markdown_path, charts = write_comparison(config.output_dir, axes, points, records)
    except OSError as error:  # the jobs are recorded; tables that cannot be written must not hide that
        logger.warning(
            "could not write the sweep's tables and charts in %s (%s); every job's scores are in %s",
            config.output_dir,
            error,
            batch.manifest_path,
        )
        csv_path = markdown_path = None
        charts = ()
    return SweepResult(batch=batch, table_csv=csv_path, table_markdown=markdown_path, charts=charts)
