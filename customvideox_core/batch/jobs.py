"""Job files (CSV or JSONL) → validated, frozen :class:`Job` rows.

Every row problem is collected with its line number and reported at once (:class:`JobFileError`),
so a user fixes the whole file in one go and nothing is queued from a file that has any bad row.

Columns (CSV header) or keys (JSONL objects):

============================  ==========================================================================
``reference`` (required)      reference image path; relative paths are read from the job file's folder
``prompt`` (required)         text prompt
``seed`` (required)           integer in ``[0, 2**64 - 1]``
``mask``                      subject mask image path (uploaded as a separate image)
``entity_words``              words naming the subject (ERAE); a JSON list is joined with ", "
``tab_shape``                 ``parabolic`` | ``constant`` | ``linear`` | ``custom``
``tab_peak`` ``tab_floor``    TAB values (finite numbers)
``tab_start`` ``tab_end``     TAB window, numbers in ``[0, 1]`` with start <= end
``tab_custom_values``         comma-separated numbers (a JSON list of numbers is accepted)
``erae_strength``             ERAE strength (finite number)
``erae_threshold``            ERAE threshold (finite number)
``cfg``                       guidance scale of every sampler / guider with a ``cfg`` input (finite number)
``standin_strength``          ``CustomVideoXApplyStandIn``'s strength, in ``[0, 2]``
``output``                    output name: the save nodes' ``filename_prefix`` and the job's folder in
                              the output directory; unique per file, and not a name the client writes
                              there itself (:mod:`.output_folder`). Default ``job_<row number>``.
============================  ==========================================================================

Empty cells and JSON ``null`` mean "not given". Values outside the range of the node input they set are refused too (by
:func:`.runner.prepare_batch`, against :mod:`.input_ranges`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from ..constants import SEED_MAX
from ..ranges import STANDIN_STRENGTH
from ..tab import (
    TABShape,
    check_tab_shape,
    check_tab_values,
    check_tab_window,
    parse_custom_values,
)
from .output_folder import reserved_name_error

REQUIRED_COLUMNS = ("reference", "prompt", "seed")
OPTIONAL_COLUMNS = (
    "mask",
    "entity_words",
    "tab_shape",
    "tab_peak",
    "tab_floor",
    "tab_start",
    "tab_end",
    "tab_custom_values",
    "erae_strength",
    "erae_threshold",
    "cfg",
    "standin_strength",
    "output",
)
KNOWN_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
FLOAT_COLUMNS = (
    "tab_peak",
    "tab_floor",
    "tab_start",
    "tab_end",
    "erae_strength",
    "erae_threshold",
    "cfg",
    "standin_strength",
)


@dataclass(frozen=True)
class TabOverrides:
    """Values for ``CustomVideoXTimeAwareBias`` inputs; ``None`` keeps the workflow's value."""

    shape: TABShape | None = None
    peak: float | None = None
    floor: float | None = None
    start: float | None = None
    end: float | None = None
    custom_values: str | None = None

    def __post_init__(self) -> None:
        """``TABSchedule``'s own checks, on the values that are given (the rest is the workflow's)."""
        if self.shape is not None:
            check_tab_shape(self.shape, "tab_shape")
        check_tab_window(self.start, self.end, names=("tab_start", "tab_end"))
        if self.custom_values is not None:
            check_tab_values(parse_custom_values(self.custom_values, "tab_custom_values"))

    def node_inputs(self) -> dict[str, object]:
        """The given values keyed by ``CustomVideoXTimeAwareBias`` input name."""
        return {name: value for name, value in asdict(self).items() if value is not None}


@dataclass(frozen=True)
class EraeOverrides:
    """Values for ``CustomVideoXERAEMask`` inputs; ``None`` keeps the workflow's value."""

    strength: float | None = None
    threshold: float | None = None

    def node_inputs(self) -> dict[str, object]:
        """The given values keyed by ``CustomVideoXERAEMask`` input name."""
        return {name: value for name, value in asdict(self).items() if value is not None}


@dataclass(frozen=True)
class Job:
    """One validated row of a job file.

    ``name`` identifies the job in the manifest and names its folder in the output directory: the
    row's ``output`` when given, else ``job_<index>`` (1-based position among the file's jobs).
    """

    line: int
    name: str
    reference: Path
    prompt: str
    seed: int
    mask: Path | None = None
    entity_words: str = ""
    output: str | None = None
    tab: TabOverrides = field(default_factory=TabOverrides)
    erae: EraeOverrides = field(default_factory=EraeOverrides)
    cfg: float | None = None
    """Guidance scale for the workflow's samplers; ``None`` keeps the workflow's."""
    standin_strength: float | None = None
    """Strength of the workflow's Apply Stand-In nodes; ``None`` keeps the workflow's."""

    def __post_init__(self) -> None:
        if self.line < 1:
            raise ValueError(f"line numbers start at 1, got {self.line}")
        if not self.prompt.strip():
            raise ValueError("prompt must not be empty")
        if not 0 <= self.seed <= SEED_MAX:
            raise ValueError(f"seed must be in [0, {SEED_MAX}], got {self.seed}")
        if not self.name:
            raise ValueError("job name must not be empty")
        if self.standin_strength is not None and self.standin_strength not in STANDIN_STRENGTH:
            raise ValueError(f"standin_strength must be in {STANDIN_STRENGTH}, got {self.standin_strength}")

    def fingerprint(self) -> str:
        """Digest of everything that defines the job's result (not its line number)."""
        content = {
            "name": self.name,
            "reference": str(self.reference),
            "mask": None if self.mask is None else str(self.mask),
            "prompt": self.prompt,
            "seed": self.seed,
            "entity_words": self.entity_words,
            "output": self.output,
            "tab": asdict(self.tab),
            "erae": asdict(self.erae),
        }
        if self.cfg is not None:  # only when given, so manifests written before cfg existed still match
            content["cfg"] = self.cfg
        if self.standin_strength is not None:  # likewise
            content["standin_strength"] = self.standin_strength
        encoded = json.dumps(content, sort_keys=True, ensure_ascii=True).encode("utf-8")
        return hashlib.sha256(encoded).hexdigest()[:16]


@dataclass(frozen=True)
class RowError:
    """A problem in a job file, at a 1-based line number."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class JobFileError(ValueError):
    """A job file that cannot be used; ``errors`` lists every problem found, by line."""

    def __init__(self, path: Path, errors: list[RowError]) -> None:
        self.path = path
        self.errors = tuple(sorted(errors, key=lambda error: error.line))
        listing = "\n".join(f"  {error}" for error in self.errors)
        super().__init__(
            f"{path}: {len(self.errors)} problem(s); nothing was queued. Fix these rows and run again:\n"
            f"{listing}"
        )


def load_jobs(path: Path | str) -> list[Job]:
    """Read and validate a ``.csv`` or ``.jsonl`` (``.ndjson``) job file.

    Raises :class:`JobFileError` listing every bad row (line numbers are the file's own lines), or
    :class:`FileNotFoundError` when the file itself is missing.
    """
    jobs, errors = read_jobs(path)
    if errors:
        raise JobFileError(Path(path), errors)
    return jobs


def read_jobs(path: Path | str) -> tuple[list[Job], list[RowError]]:
    """The valid jobs of a job file and the problems of the others (see :func:`load_jobs`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"job file {path} does not exist; pass a .csv or .jsonl file of jobs")
    suffix = path.suffix.lower()
    readers = {".csv": _csv_rows, ".jsonl": _jsonl_rows, ".ndjson": _jsonl_rows}
    if suffix not in readers:
        return [], [RowError(1, f"unknown job file type {suffix!r}; use .csv or .jsonl")]
    try:
        rows = list(readers[suffix](path))
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        message = f"the file is not UTF-8 text (byte {error.start}: {error.reason}); save it as UTF-8"
        return [], [RowError(line, message)]
    except csv.Error as error:
        return [], [RowError(1, f"not a readable CSV file ({error}); save it as plain CSV text")]

    jobs: list[Job] = []
    errors: list[RowError] = []
    names: dict[str, int] = {}
    for index, (line, row) in enumerate(rows, start=1):
        if isinstance(row, RowError):
            errors.append(row)
            continue
        row_errors: list[str] = []
        job = _job_from_row(row, line, index, path.parent, row_errors)
        if job is not None and job.name in names:
            row_errors.append(f"output name {job.name!r} is also used on line {names[job.name]}")
        if row_errors:
            errors.extend(RowError(line, message) for message in row_errors)
        elif job is not None:
            names[job.name] = line
            jobs.append(job)
    if not rows:
        errors.append(RowError(1, "the file has no jobs"))
    return jobs, errors


def job_from_fields(
    fields: Mapping[str, object], base_dir: Path, line: int = 1
) -> tuple[Job | None, list[str]]:
    """Validate one job given as column → value (as a JSONL object would give it).

    Relative image paths are read from ``base_dir``. Returns the job and no problems, or ``None``
    and every problem found (unknown keys included), so a caller can report them all at once.
    """
    unknown = [key for key in fields if key not in KNOWN_COLUMNS]
    if unknown:
        return None, [f"unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(KNOWN_COLUMNS)}"]
    errors: list[str] = []
    job = _job_from_row(fields, line, 1, base_dir, errors)
    return (None, errors) if errors else (job, [])


def _csv_rows(path: Path) -> Iterator[tuple[int, Mapping[str, object] | RowError]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        columns = [column.strip() for column in header]
        header_errors = _header_errors(columns)
        if header_errors:
            yield 1, RowError(1, "; ".join(header_errors))
            return
        line = reader.line_num + 1
        for cells in reader:
            if any(cell.strip() for cell in cells):
                if len(cells) != len(columns):
                    message = f"row has {len(cells)} cells, the header has {len(columns)} columns"
                    yield line, RowError(line, message)
                else:
                    yield line, dict(zip(columns, cells, strict=True))
            line = reader.line_num + 1


def _header_errors(columns: list[str]) -> list[str]:
    errors = []
    unknown = [column for column in columns if column not in KNOWN_COLUMNS]
    if unknown:
        errors.append(f"unknown column(s) {', '.join(map(repr, unknown))}; known: {', '.join(KNOWN_COLUMNS)}")
    duplicated = sorted({column for column in columns if columns.count(column) > 1})
    if duplicated:
        errors.append(f"duplicated column(s) {', '.join(map(repr, duplicated))}")
    missing = [column for column in REQUIRED_COLUMNS if column not in columns]
    if missing:
        errors.append(f"missing required column(s) {', '.join(missing)}")
    return errors


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Mapping[str, object] | RowError]]:
    with path.open(encoding="utf-8-sig") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as error:
                yield line, RowError(line, f"not valid JSON ({error.msg} at column {error.colno})")
                continue
            if not isinstance(row, dict):
                yield line, RowError(line, f"expected a JSON object per line, got {type(row).__name__}")
                continue
            unknown = [key for key in row if key not in KNOWN_COLUMNS]
            if unknown:
                message = f"unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(KNOWN_COLUMNS)}"
                yield line, RowError(line, message)
                continue
            yield line, row


def _job_from_row(
    row: Mapping[str, object], line: int, index: int, base_dir: Path, errors: list[str]
) -> Job | None:
    """Validate one row; append every problem to ``errors`` and return ``None`` if there is any."""
    values = {key: _normalise(value, key) for key, value in row.items()}
    for key, value in values.items():
        if isinstance(value, _BadValue):
            errors.append(f"{key}: {value.message}")
    bad = {key for key, value in values.items() if isinstance(value, _BadValue)}
    values = {key: value for key, value in values.items() if key not in bad}
    errors.extend(
        f"{key} is missing" for key in REQUIRED_COLUMNS if values.get(key) is None and key not in bad
    )

    reference = _image_path(values.get("reference"), "reference", base_dir, errors)
    mask = _image_path(values.get("mask"), "mask", base_dir, errors)
    prompt = values.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        errors.append(f"prompt must be text, got {prompt!r}")
    entity_words = values.get("entity_words") or ""
    if not isinstance(entity_words, str):
        errors.append(f"entity_words must be text, got {entity_words!r}")
    seed = _seed(values.get("seed"), errors)
    floats = {key: _finite_float(values.get(key), key, errors) for key in FLOAT_COLUMNS}
    tab = _tab_overrides(values, floats, errors)
    output = values.get("output")
    if output is not None:
        _check_output_name(output, errors)
    if errors:
        return None
    try:
        erae = EraeOverrides(strength=floats["erae_strength"], threshold=floats["erae_threshold"])
        return Job(
            line=line,
            name=output or f"job_{index:04d}",
            reference=reference,  # type: ignore[arg-type]
            prompt=prompt,  # type: ignore[arg-type]
            seed=seed,  # type: ignore[arg-type]
            mask=mask,
            entity_words=entity_words,  # type: ignore[arg-type]
            output=output,
            tab=tab,  # type: ignore[arg-type]
            erae=erae,
            cfg=floats["cfg"],
            standin_strength=floats["standin_strength"],
        )
    except ValueError as error:
        errors.append(str(error))
        return None


@dataclass(frozen=True)
class _BadValue:
    message: str


def _normalise(value: object, key: str) -> str | int | float | None | _BadValue:
    """CSV cells and JSON values → stripped string, JSON number, or ``None`` for "not given"."""
    if value is None:
        return None
    if isinstance(value, bool):
        return _BadValue(f"expected a string or number, got a boolean ({value})")
    if isinstance(value, str):
        stripped = value.strip()
        return stripped or None
    if isinstance(value, int | float):
        return value
    if isinstance(value, list) and key == "entity_words" and all(isinstance(item, str) for item in value):
        return ", ".join(item.strip() for item in value if item.strip()) or None
    if isinstance(value, list) and key == "tab_custom_values":
        if all(isinstance(item, int | float) and not isinstance(item, bool) for item in value):
            return ",".join(repr(item) for item in value) or None
        return _BadValue("expected a list of numbers")
    return _BadValue(f"expected a string or number, got {type(value).__name__}")


def _image_path(value: object, key: str, base_dir: Path, errors: list[str]) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str):
        errors.append(f"{key} must be a file path, got {value!r}")
        return None
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    if not path.is_file():
        errors.append(f"{key} file not found: {path}")
        return None
    return path.resolve()


def _seed(value: object, errors: list[str]) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) or (isinstance(value, str) and not value.isdecimal()):
        errors.append(f"seed must be a non-negative integer, got {value!r}")
        return None
    seed = int(value)  # type: ignore[arg-type]
    if not 0 <= seed <= SEED_MAX:
        errors.append(f"seed must be in [0, {SEED_MAX}], got {seed}")
        return None
    return seed


def _finite_float(value: object, key: str, errors: list[str]) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except ValueError:
        errors.append(f"{key} must be a number, got {value!r}")
        return None
    if not math.isfinite(number):
        errors.append(f"{key} must be a finite number, got {value!r}")
        return None
    return number


def _tab_overrides(
    values: Mapping[str, object], floats: Mapping[str, float | None], errors: list[str]
) -> TabOverrides | None:
    """The row's TAB overrides, or ``None`` with the problem appended to ``errors``."""
    custom_values = values.get("tab_custom_values")
    if custom_values is not None and not isinstance(custom_values, str):
        errors.append(f"tab_custom_values must be comma-separated numbers, got {custom_values!r}")
        return None
    try:
        return TabOverrides(
            shape=values.get("tab_shape"),  # type: ignore[arg-type]
            peak=floats["tab_peak"],
            floor=floats["tab_floor"],
            start=floats["tab_start"],
            end=floats["tab_end"],
            custom_values=custom_values,
        )
    except (TypeError, ValueError) as error:
        errors.append(str(error))
        return None


def _check_output_name(output: object, errors: list[str]) -> None:
    if not isinstance(output, str):
        errors.append(f"output must be a name, got {output!r}")
        return
    parts = PurePosixPath(output.replace("\\", "/")).parts
    if output.startswith(("/", "\\")) or ":" in output or any(part in ("..", ".") for part in parts):
        errors.append(f"output {output!r} must be a relative name without '..' (it names a folder)")
    elif any(not character.isprintable() for character in output):
        errors.append(
            f"output {output!r} must not hold control characters such as new lines (it names a folder)"
        )
    elif (reserved := reserved_name_error(output)) is not None:
        errors.append(reserved)
