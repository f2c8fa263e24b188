"""Host tier: every script in ``benchmarks/`` runs end to end against the session's ComfyUI.

Each script runs as a subprocess in its smallest mode (tiny models, one timed round, one torch thread)
with ``COMFYUI_PATH`` set to the session's checkout and this interpreter (the one that runs that
ComfyUI); the test asserts exit status 0 and that the script's table has its columns and rows. Nothing
is timed or compared: the numbers of a tiny model on a shared CPU mean nothing. This is how CI keeps
``gpu_step.py`` (real sizes need CUDA) and ``training_memory.py``'s measurement ready without a GPU.

The scripts run two at a time (their ComfyUI imports are mostly single-threaded), started once per
module; each test waits for its own.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import REPO_ROOT

BENCHMARKS_DIR = REPO_ROOT / "benchmarks"
TIMEOUT_S = 300

# The smallest mode of every script, the longest first (they are started in this order).
COMMANDS: dict[str, tuple[str, ...]] = {
    "standin_step": ("standin_step.py", "--preset", "cpu-tiny", "--repeats", "1", "--threads", "1"),
    "real_size": ("real_size.py", "--tiny", "--markdown"),
    "sampling_step": ("sampling_step.py", "--preset", "cpu-tiny", "--repeats", "1", "--threads", "1"),
    "gpu_step": ("gpu_step.py", "--tiny", "--device", "cpu", "--repeats", "1", "--markdown"),
    "training_memory": ("training_memory.py", "--tiny", "--steps", "1", "--markdown"),
    "guidance": ("guidance.py", "--preset", "cpu-tiny", "--repeats", "1", "--threads", "1", "--markdown"),
    "training_memory_fake": (
        "training_memory.py",
        "--fake",
        "tiny-cogvideox,tiny-wan",
        "--tiny",
        "--rank",
        "4",
        "--markdown",
    ),
    "attention": (
        "attention.py",
        "--preset",
        "cpu-quick",
        "--repeats",
        "1",
        "--threads",
        "1",
        "--markdown",
    ),
}


@dataclass(frozen=True)
class Run:
    command: list[str]
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> str:
        """``stdout`` after asserting the exit status 0."""
        assert self.returncode == 0, (
            f"{' '.join(self.command)} exited with {self.returncode}\n"
            f"stdout (end):\n{self.stdout[-3000:]}\nstderr (end):\n{self.stderr[-6000:]}"
        )
        return self.stdout


def run_script(arguments: tuple[str, ...], comfyui_path: Path) -> Run:
    command = [sys.executable, str(BENCHMARKS_DIR / arguments[0]), *arguments[1:]]
    environment = {**os.environ, "COMFYUI_PATH": str(comfyui_path), "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run(
            command,
            cwd=REPO_ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as timeout:
        return Run(
            command, -1, _text(timeout.stdout), _text(timeout.stderr) + f"\ntimed out after {TIMEOUT_S} s"
        )
    return Run(command, done.returncode, done.stdout, done.stderr)


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


@pytest.fixture(scope="module")
def runs(comfyui_path: Path) -> Iterator[dict[str, Future[Run]]]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {name: pool.submit(run_script, arguments, comfyui_path) for name, arguments in COMMANDS.items()}


def result(runs: dict[str, Future[Run]], name: str) -> str:
    return runs[name].result(timeout=2 * TIMEOUT_S).check()


def markdown_table(stdout: str, first_column: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the last Markdown table in ``stdout`` whose header starts with ``first_column``."""
    lines = stdout.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("|") and _cells(line)[0] == first_column]
    assert starts, f"no Markdown table with a {first_column!r} column in:\n{stdout}"
    start = starts[-1]
    assert re.fullmatch(r"\|(:?---+:?\|)+", lines[start + 1]), lines[start + 1]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(_cells(line))
    return _cells(lines[start]), rows


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().removeprefix("|").removesuffix("|").split("|")]


def text_table(stdout: str, header: tuple[str, ...]) -> list[list[str]]:
    """The rows after the last text header line ``header`` (cells two or more spaces apart), up to a
    blank line; empty cells are not kept."""
    lines = stdout.splitlines()
    starts = [i for i, line in enumerate(lines) if tuple(re.split(r"\s{2,}", line.strip())) == header]
    assert starts, f"no text table with header {header} in:\n{stdout}"
    rows = []
    for line in lines[starts[-1] + 1 :]:
        if not line.strip():
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


def is_number(cell: str) -> bool:
    return re.fullmatch(r"-?\d+(\.\d+)?(e[-+]\d+)?", cell) is not None


def declared_header(script: str) -> tuple[str, ...]:
    """The columns ``benchmarks/<script>.py`` declares in its ``HEADER`` (the script loaded by path, not
    run): its printed table must carry exactly these."""
    name = f"cvx_benchmark_{script}"
    if name not in sys.modules:  # registered before it runs: its dataclasses look their module up
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS_DIR / f"{script}.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name].HEADER


def test_sampling_step(runs):
    header = declared_header("sampling_step")
    rows = text_table(result(runs, "sampling_step"), header)
    assert [row[0] for row in rows] == [
        "no reference",
        "reference, TAB 0",
        "reference + TAB 2",
        "reference + TAB 2 + ERAE",
        "reference + TAB 2 + ERAE, uncond sees",
    ]
    for row in rows:
        assert len(row) == len(header), row
        assert all(is_number(cell) for cell in row[1:5]), row
    assert rows[0][2] == "1.00" and rows[1][3] == "1.00", rows


def test_gpu_step(runs):
    header, rows = markdown_table(result(runs, "gpu_step"), "model")
    assert tuple(header) == declared_header("gpu_step")
    variants = ["no reference", "reference", "reference + TAB + ERAE"]
    for model in ("tiny CogVideoX", "tiny Wan"):
        sdpa = [row for row in rows if row[:2] == [model, "sdpa"]]
        assert [row[2] for row in sdpa] == variants, rows
        assert sdpa[0][4] == "1.00", sdpa
        assert all(is_number(row[3]) and is_number(row[4]) for row in sdpa), sdpa
        assert all(row[7] == "n/a" for row in sdpa), sdpa  # total peak: CUDA only


def test_standin_step(runs):
    rows = text_table(result(runs, "standin_step"), declared_header("standin_step"))
    assert [row[0] for row in rows] == [
        "no reference",
        "Stand-In, cached K/V",
        "Stand-In, recomputed",
        "own adapter, joint layout (video-size reference)",
        "own adapter, cached layout (same reference)",
        "reference branch alone (once per sampling)",
    ]
    assert all(len(row) == 5 for row in rows[:-1]), rows
    assert len(rows[-1]) == 3, rows[-1]  # the reference branch has no peak cells
    assert all(is_number(row[1]) and is_number(row[2]) for row in rows), rows
    assert rows[0][2] == "1.000", rows[0]


def test_attention(runs):
    header, rows = markdown_table(result(runs, "attention"), "size")
    assert tuple(header) == declared_header("attention")
    assert all(len(row) == len(header) for row in rows), rows
    variants = [row[2] for row in rows]
    for variant in (
        "SDPA text+video",
        "SDPA +ref, no bias",
        "ours, lse-merge",
        "ours, augmented",
        "ours, row without reference",
        "dense bias",
    ):
        assert variant in variants, variants
    baseline = rows[variants.index("SDPA +ref, no bias")]
    assert baseline[4] == "1.000", baseline
    for name in ("ours, lse-merge", "lse-merge, kernels alone"):  # the CPU run has the kernels-alone row
        row = rows[variants.index(name)]
        assert is_number(row[3]) and float(row[9]) < 1e-4, row  # exact: float32 against the dense bias


def test_training_memory(runs):
    stdout = result(runs, "training_memory")
    assert "Estimated training memory: tiny CogVideoX" in stdout, stdout
    header, rows = markdown_table(stdout, "")
    assert header == ["", "with checkpointing", "without", "what"]
    assert [row[0] for row in rows] == [
        "base weights",
        "LoRA weights",
        "LoRA gradients",
        "AdamW state",
        "activations",
        "latents + text",
        "CUDA context, workspaces",
        "**total**",
    ]
    assert re.search(r"^measured on 1 CPU steps \(with checkpointing\): .* s/step", stdout, re.MULTILINE), (
        stdout
    )


def test_guidance(runs):
    """The table lists every guidance with its counted calls and passes: 10 steps of three passes, the
    image pass in the first 4 steps only, the distill recipe's one pass after step 4, and plain cfg's two."""
    header, rows = markdown_table(result(runs, "guidance"), "guidance")
    assert tuple(header) == declared_header("guidance")
    assert [(row[0], row[2]) for row in rows] == [
        ("three-pass (Phantom)", "30"),
        ("three-pass, image pass in the first 40 %", "24"),
        ("distill recipe: cfg 3 then 1, image pass in the first 40 %", "18"),
        ("plain cfg (no image pass)", "20"),
    ]
    assert all(is_number(row[1]) and is_number(row[3]) and is_number(row[4]) for row in rows), rows
    assert rows[0][4] == "1.00", rows[0]


def test_real_size(runs):
    stdout = result(runs, "real_size")
    header, rows = markdown_table(stdout, "model")
    assert tuple(header) == declared_header("real_size")
    assert all(len(row) == len(header) for row in rows), rows
    wan_only = [
        "Phantom three-pass (full)",
        "Stand-In, cached K/V",
        "Stand-In, recomputed",
        "own adapter, cached layout",
    ]
    shared = ["no reference", "reference, TAB 0", "reference + TAB 2 + ERAE", "own adapter, joint layout"]
    assert [row[1] for row in rows if row[0] == "tiny CogVideoX"] == shared
    assert sorted(row[1] for row in rows if row[0] == "tiny Wan") == sorted(shared + wan_only)
    for row in rows:
        assert re.fullmatch(r"\d\.\d{3} \(\d\.\d{3}\)", row[3]), row  # measured (floor)
        assert is_number(row[8]) and float(row[8]) > 0, row
    for row in rows:
        if row[1] == "no reference":
            assert row[3] == "1.000 (1.000)" and row[9] == "1.000", row
        if row[1] == "reference, TAB 0":
            assert row[7] == "1.000 (1.000)", row  # the negative pass does not see it: the base pass
    assert stdout.count("(equal)") == 2, (
        stdout
    )  # Stand-In's cache and the cached adapter's, against the formula


def test_training_memory_under_fake_tensors(runs):
    stdout = result(runs, "training_memory_fake")
    assert "Measured training memory under fake tensors" in stdout, stdout
    header, rows = markdown_table(stdout, "model")
    assert header == [
        "model",
        "video",
        "tokens per layer",
        "LoRA rank 4",
        "weights GiB",
        "the rest GiB",
        "peak GiB",
        "≤ 24 GiB",
    ]
    assert [row[0] for row in rows] == ["tiny CogVideoX", "tiny Wan"]
    for row in rows:
        assert all(is_number(cell) for cell in row[4:7]) and row[7] == "met", row
