"""Job files: CSV and JSONL rows → validated jobs, every bad row reported with its line number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from customvideox_core.batch.jobs import SEED_MAX, JobFileError, load_jobs, read_jobs


@pytest.fixture
def images(tmp_path: Path) -> Path:
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "cat.png").write_bytes(b"cat")
    (tmp_path / "refs" / "cat_mask.png").write_bytes(b"mask")
    (tmp_path / "mug.jpg").write_bytes(b"mug")
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def error_lines(error: JobFileError) -> dict[int, str]:
    by_line: dict[int, str] = {}
    for row_error in error.errors:
        by_line[row_error.line] = by_line.get(row_error.line, "") + row_error.message + " | "
    return by_line


def test_csv_rows_become_jobs_with_paths_from_the_file_folder(images: Path) -> None:
    jobs_file = write(
        images / "jobs.csv",
        "reference,mask,prompt,entity_words,seed,tab_shape,tab_peak,tab_start,tab_end,erae_strength,output\n"
        "refs/cat.png,refs/cat_mask.png,a cat surfing,cat,42,linear,1.5,0.1,0.9,2,cat_surf\n"
        f"{images / 'mug.jpg'},,  a red mug  ,,7,,,,,,\n",
    )
    first, second = load_jobs(jobs_file)
    assert first.line == 2 and second.line == 3
    assert first.reference == (images / "refs" / "cat.png").resolve()
    assert first.mask == (images / "refs" / "cat_mask.png").resolve()
    assert (first.prompt, first.entity_words, first.seed, first.name, first.output) == (
        "a cat surfing",
        "cat",
        42,
        "cat_surf",
        "cat_surf",
    )
    assert first.tab.node_inputs() == {"shape": "linear", "peak": 1.5, "start": 0.1, "end": 0.9}
    assert first.erae.node_inputs() == {"strength": 2.0}
    assert second.mask is None and second.output is None
    assert second.name == "job_0002"
    assert second.prompt == "a red mug"
    assert second.tab.node_inputs() == {} and second.erae.node_inputs() == {}


def test_jsonl_accepts_lists_nulls_and_blank_lines_and_keeps_file_line_numbers(images: Path) -> None:
    rows = [
        {"reference": "refs/cat.png", "prompt": "a cat", "seed": 3, "entity_words": ["cat", " kitten "]},
        None,
        {
            "reference": "mug.jpg",
            "prompt": "a mug",
            "seed": "8",
            "mask": None,
            "tab_custom_values": [0, 0.5, 1],
        },
    ]
    text = "\n".join("" if row is None else json.dumps(row) for row in rows) + "\n"
    first, second = load_jobs(write(images / "jobs.jsonl", text))
    assert (first.line, second.line) == (1, 3)
    assert first.entity_words == "cat, kitten"
    assert second.seed == 8 and second.mask is None
    assert second.tab.custom_values == "0,0.5,1"


def test_every_bad_csv_row_is_reported_with_its_line(images: Path) -> None:
    jobs_file = write(
        images / "jobs.csv",
        "reference,prompt,seed,tab_peak,tab_shape,tab_start,tab_end,output\n"
        "refs/cat.png,fine,1,,,,,a\n"  # line 2: valid
        "refs/cat.png,,2,,,,,\n"  # line 3: missing prompt
        "refs/missing.png,x,3,,,,,\n"  # line 4: reference not found
        "refs/cat.png,x,abc,,,,,\n"  # line 5: bad seed
        "refs/cat.png,x,4,high,,,,\n"  # line 6: non-numeric override
        "refs/cat.png,x,-1,,,,,\n"  # line 7: negative seed
        "refs/cat.png,x,1.5,,,,,\n"  # line 8: fractional seed
        "refs/cat.png,x,5,,spiral,,,\n"  # line 9: unknown TAB shape
        "refs/cat.png,x,6,,,0.8,0.2,\n"  # line 10: start after end
        "refs/cat.png,x,7,,,,,a\n"  # line 11: output name used on line 2
        "refs/cat.png,x,8,nan,,,,\n"  # line 12: non-finite override
        "refs/cat.png,x\n",  # line 13: short row
    )
    with pytest.raises(JobFileError) as raised:
        load_jobs(jobs_file)
    lines = error_lines(raised.value)
    assert sorted(lines) == list(range(3, 14))
    expected = {
        3: "prompt is missing",
        4: "reference file not found",
        5: "seed must be a non-negative integer",
        6: "tab_peak must be a number",
        7: "seed must be a non-negative integer",
        8: "seed must be a non-negative integer",
        9: "tab_shape 'spiral'",
        10: "must not exceed tab_end",
        11: "also used on line 2",
        12: "tab_peak must be a finite number",
        13: "row has 2 cells",
    }
    for line, fragment in expected.items():
        assert fragment in lines[line], (line, lines[line])
    assert "nothing was queued" in str(raised.value)


def test_unknown_and_missing_columns_are_header_errors(images: Path) -> None:
    jobs_file = write(images / "jobs.csv", "reference,prompt,colour\nrefs/cat.png,x,red\n")
    with pytest.raises(JobFileError) as raised:
        load_jobs(jobs_file)
    message = error_lines(raised.value)[1]
    assert "unknown column(s) 'colour'" in message
    assert "missing required column(s) seed" in message


def test_multiline_csv_cells_do_not_shift_line_numbers(images: Path) -> None:
    jobs_file = write(
        images / "jobs.csv",
        'reference,prompt,seed\nrefs/cat.png,"a cat\non two lines",1\nrefs/cat.png,,2\n',
    )
    with pytest.raises(JobFileError) as raised:
        load_jobs(jobs_file)
    assert [error.line for error in raised.value.errors] == [4]


def test_bad_jsonl_lines_are_reported_with_their_line(images: Path) -> None:
    lines = [
        json.dumps({"reference": "refs/cat.png", "prompt": "ok", "seed": 1}),
        "{not json",
        "[1, 2]",
        json.dumps({"reference": "refs/cat.png", "prompt": "x", "seed": 1, "colour": "red"}),
        json.dumps({"reference": "refs/cat.png", "prompt": "x", "seed": True}),
        json.dumps({"reference": "refs/cat.png", "prompt": "x", "seed": 2.0}),
        json.dumps({"reference": "refs/cat.png", "prompt": 5, "seed": 2}),
        json.dumps({"reference": "refs/cat.png", "prompt": "x", "seed": 3, "erae_threshold": "high"}),
        json.dumps({"reference": "refs/cat.png", "prompt": "x", "seed": 4, "tab_custom_values": "0, a"}),
    ]
    jobs, errors = read_jobs(write(images / "jobs.jsonl", "\n".join(lines)))
    assert [job.line for job in jobs] == [1]
    by_line = {error.line: error.message for error in errors}
    assert sorted(by_line) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert "not valid JSON" in by_line[2]
    assert "JSON object" in by_line[3]
    assert "'colour'" in by_line[4]
    assert "boolean" in by_line[5]
    assert "seed must be a non-negative integer" in by_line[6]
    assert "prompt must be text" in by_line[7]
    assert "erae_threshold must be a number" in by_line[8]
    assert "'a' is not" in by_line[9]


def test_unsafe_output_names_are_refused(images: Path) -> None:
    text = "reference,prompt,seed,output\nrefs/cat.png,x,1,../escape\nrefs/cat.png,x,2,/abs\nrefs/cat.png,x,3,ok/sub\n"
    jobs, errors = read_jobs(write(images / "jobs.csv", text))
    assert [error.line for error in errors] == [2, 3]
    assert [job.name for job in jobs] == ["ok/sub"]


def test_unknown_file_type_and_empty_file(images: Path) -> None:
    with pytest.raises(JobFileError, match="use .csv or .jsonl"):
        load_jobs(write(images / "jobs.txt", "x"))
    with pytest.raises(JobFileError, match="no jobs"):
        load_jobs(write(images / "jobs.csv", "reference,prompt,seed\n"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_jobs(images / "absent.csv")


def test_fingerprint_ignores_the_line_but_not_the_content(images: Path) -> None:
    header = "reference,prompt,seed,output\n"
    (a,) = load_jobs(write(images / "a.csv", header + "refs/cat.png,x,1,n\n"))
    (b,) = load_jobs(write(images / "b.csv", header + "\n\nrefs/cat.png,x,1,n\n"))
    (c,) = load_jobs(write(images / "c.csv", header + "refs/cat.png,x,2,n\n"))
    assert a.line != b.line
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(min_value=-(2**65), max_value=2**65))
def test_seed_range_is_the_unsigned_64_bit_range(tmp_path_factory: pytest.TempPathFactory, seed: int) -> None:
    folder = tmp_path_factory.mktemp("seed")
    (folder / "r.png").write_bytes(b"r")
    jobs, errors = read_jobs(write(folder / "jobs.csv", f"reference,prompt,seed\nr.png,x,{seed}\n"))
    if 0 <= seed <= SEED_MAX:
        assert [job.seed for job in jobs] == [seed] and not errors
    else:
        assert not jobs and [error.line for error in errors] == [2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0 1 2", (0.0, 1.0, 2.0)), ("0, 0.5, 1,", (0.0, 0.5, 1.0)), ("0,,1\n2", (0.0, 1.0, 2.0))],
)
def test_batch_accepts_what_the_node_accepts_for_custom_values(images: Path, text: str, expected) -> None:
    """One parser: the TimeAwareBias node's (spaces, commas, new lines, a trailing comma)."""
    from customvideox_core.tab import TABSchedule, parse_custom_values

    row = {"reference": "refs/cat.png", "prompt": "x", "seed": 1, "tab_custom_values": text}
    jobs, errors = read_jobs(write(images / "jobs.jsonl", json.dumps(row)))
    assert errors == []
    assert jobs[0].tab.custom_values == text
    assert TABSchedule(shape="custom", values=parse_custom_values(text)).values == expected
