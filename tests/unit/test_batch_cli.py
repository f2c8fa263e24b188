"""The single-job form of the command line (``--reference IMAGE --prompt TEXT``), against a stub server.

Oracles: the stub's record of what it ran (the prompt texts, seeds and digests of the uploaded images
it was given) compared with the command's arguments, and the files on disk.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from batch_stub_server import StubComfyServer, api_workflow

from customvideox_core.batch.cli import main as cli_main
from customvideox_core.batch.single import SingleJob

PROMPT = "a dog running on a beach"
NEGATIVE = "blurry, low quality"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current directory, holding the images and the workflow (relative paths are read from it)."""
    (tmp_path / "dog.png").write_bytes(b"a picture of a dog")
    (tmp_path / "dog_mask.png").write_bytes(b"the dog's mask")
    (tmp_path / "wf.json").write_text(json.dumps(api_workflow()))
    (tmp_path / "wf_no_mask.json").write_text(json.dumps(api_workflow(with_mask=False)))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def single_argv(stub: StubComfyServer, *extra: str, workflow: str = "wf.json") -> list[str]:
    """The README's main-job command (plus the stub's workflow and fast polling)."""
    return [
        "--server",
        stub.url,
        "--reference",
        "dog.png",
        "--prompt",
        PROMPT,
        "--entity-words",
        "dog",
        "--output-dir",
        "out/",
        "--workflow",
        workflow,
        "--poll-interval",
        "0.05",
        "--history-poll",
        "0.2",
        "--quiet",
        *extra,
    ]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest(folder: Path) -> dict:
    return json.loads((folder / "out" / "manifest.json").read_text())


def test_one_job_from_the_command_line_runs_and_is_saved_locally(stub, workdir: Path) -> None:
    assert cli_main(single_argv(stub)) == 0

    (prompt,) = stub.executed_prompts("success")
    assert prompt["pos"]["inputs"]["text"] == PROMPT
    assert prompt["erae"]["inputs"]["prompt"] == PROMPT
    assert prompt["erae"]["inputs"]["entity_words"] == "dog"
    assert prompt["sample"]["inputs"]["seed"] == 0, "no --seed: seed 0"
    assert prompt["save"]["inputs"]["filename_prefix"] == "dog", "the job is named after the image"
    assert "maskload" not in prompt, "no --mask: the mask loader is detached"
    record = manifest(workdir)["jobs"]["dog"]
    assert record["state"] == "done"
    (relative,) = record["files"]
    assert relative.startswith("dog/")
    saved = json.loads((workdir / "out" / relative).read_bytes())
    assert saved == {
        "texts": sorted([PROMPT, NEGATIVE]),
        "seeds": [0],
        "images": {"LoadImage:img": digest(workdir / "dog.png")},
    }
    job_file = workdir / "out" / "dog.job.jsonl"
    assert json.loads(job_file.read_text()) == {
        "reference": str(workdir / "dog.png"),
        "prompt": PROMPT,
        "seed": 0,
        "output": "dog",
        "entity_words": "dog",
    }
    assert len(job_file.read_text().splitlines()) == 1, "a JSONL file: one job per line"


def test_the_same_command_again_resumes_without_running_the_job_twice(stub, workdir: Path) -> None:
    assert cli_main(single_argv(stub)) == 0
    first = manifest(workdir)
    assert cli_main(single_argv(stub)) == 0
    assert len(stub.executions) == 1
    assert manifest(workdir)["jobs"] == first["jobs"]


def test_seed_mask_and_output_name_reach_the_workflow(stub, workdir: Path) -> None:
    extra = ("--seed", "1234", "--mask", "dog_mask.png", "--output", "beach/dog_run")
    assert cli_main(single_argv(stub, *extra)) == 0
    (prompt,) = stub.executed_prompts("success")
    assert prompt["sample"]["inputs"]["seed"] == 1234
    assert prompt["save"]["inputs"]["filename_prefix"] == "beach/dog_run"
    (relative,) = manifest(workdir)["jobs"]["beach/dog_run"]["files"]
    saved = json.loads((workdir / "out" / relative).read_bytes())
    assert saved["images"] == {
        "LoadImage:img": digest(workdir / "dog.png"),
        "LoadImageMask:maskload": digest(workdir / "dog_mask.png"),
    }
    assert (workdir / "out" / "beach" / "dog_run.job.jsonl").is_file()


def test_another_job_under_a_taken_name_is_refused_and_a_new_name_runs(stub, workdir: Path) -> None:
    assert cli_main(single_argv(stub)) == 0
    job_file = workdir / "out" / "dog.job.jsonl"
    recorded = job_file.read_text()
    other_prompt = single_argv(stub)
    other_prompt[other_prompt.index(PROMPT)] = "a dog sleeping on a sofa"
    assert cli_main(other_prompt) == 2
    assert len(stub.executions) == 1 and job_file.read_text() == recorded, "nothing queued or rewritten"

    assert cli_main([*other_prompt, "--output", "dog_sofa"]) == 0
    jobs = manifest(workdir)["jobs"]
    assert {name: record["state"] for name, record in jobs.items()} == {"dog": "done", "dog_sofa": "done"}
    texts = sorted(prompt["pos"]["inputs"]["text"] for prompt in stub.executed_prompts("success"))
    assert texts == sorted([PROMPT, "a dog sleeping on a sofa"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("--reference", "nowhere.png"), "reference file not found"),
        (("--seed", "-1"), "seed must be in"),
        (("--output", "../escape"), "must be a relative name"),
        (("--mask", "dog_mask.png", "--workflow", "wf_no_mask.json"), "workflow has no mask input"),
        (("--workflow", "absent.json"), "does not exist"),
    ],
)
def test_an_invalid_job_is_reported_before_anything_is_queued_or_written(
    stub, workdir: Path, caplog: pytest.LogCaptureFixture, change: tuple[str, ...], message: str
) -> None:
    argv = single_argv(stub)
    for flag, value in zip(change[::2], change[1::2], strict=True):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    with caplog.at_level("ERROR"):
        assert cli_main(argv) == 2
    assert message in caplog.text
    assert stub.requests == []
    assert not (workdir / "out").exists()


def test_check_validates_the_single_job_and_writes_nothing(stub, workdir: Path) -> None:
    assert cli_main([*single_argv(stub), "--check"]) == 0
    assert stub.requests == [] and not (workdir / "out").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["jobs.csv", "--reference", "dog.png", "--prompt", PROMPT], "mutually exclusive"),
        (["--prompt", PROMPT], "also needs --reference"),
        (["--reference", "dog.png", "--seed", "3"], "also needs --prompt"),
        ([], "give a job file"),
    ],
)
def test_a_job_file_and_single_job_options_do_not_mix(
    stub, workdir: Path, capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main([*argv, "--output-dir", "out", "--server", stub.url])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert stub.requests == [] and not (workdir / "out").exists()


@pytest.mark.parametrize(
    ("reference", "output", "name"),
    [
        ("refs/dog.png", None, "dog"),
        ("my dog (1).jpg", None, "my_dog_1"),
        ("..png", None, "job"),
        ("dog.png", "runs/first", "runs/first"),
    ],
)
def test_job_name_is_the_output_or_the_image_name(reference: str, output: str | None, name: str) -> None:
    single = SingleJob(reference=Path(reference), prompt=PROMPT, output=output)
    assert single.name == name
    assert single.job_file(Path("out")) == Path("out") / f"{name}.job.jsonl"


def test_the_readme_command_fits_the_shipped_workflow(stub, workdir: Path) -> None:
    """``--check`` of the main-job command with the default workflow: the client can fill it."""
    from customvideox_core.batch import DEFAULT_WORKFLOW

    if not DEFAULT_WORKFLOW.is_file():
        pytest.skip(f"the shipped workflow {DEFAULT_WORKFLOW.name} is not written yet")
    argv = single_argv(stub)
    del argv[argv.index("--workflow") : argv.index("--workflow") + 2]
    assert cli_main([*argv, "--check"]) == 0
    assert stub.requests == [] and not (workdir / "out").exists()


def test_a_job_without_entity_words_is_refused_when_the_workflows_are_not_in_its_prompt(
    stub, workdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    workflow = api_workflow()
    workflow["erae"]["inputs"]["entity_words"] = "teddy bear"
    (workdir / "wf_teddy.json").write_text(json.dumps(workflow))
    argv = single_argv(stub, workflow="wf_teddy.json")
    del argv[argv.index("--entity-words") : argv.index("--entity-words") + 2]
    with caplog.at_level("ERROR"):
        assert cli_main(argv) == 2
    assert "keeps its own ('teddy bear'), which this prompt does not contain" in caplog.text
    assert stub.requests == [] and not (workdir / "out").exists()


def test_help_is_instant_and_never_imports_torch_or_comfyui() -> None:
    """``--help`` runs in a fresh interpreter without torch (the shared TAB facts are torch-free)."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    probe = (
        "import sys, contextlib, io\n"
        "from customvideox_core.batch.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "assert '--server' in out.getvalue(), out.getvalue()\n"
        "heavy = sorted(m for m in ('torch', 'comfy', 'numpy', 'einops') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=repo, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_check_of_a_single_job_sweep_checks_the_grid(stub, workdir: Path) -> None:
    """``--check`` with ``--sweep`` checks the expanded grid, as it does for a job file: two axes that set
    the same column are refused; a valid grid passes and queues nothing."""
    clash = ["--sweep", "tab_window=0:1", "--sweep", "tab_start=0.1", "--check"]
    assert cli_main([*single_argv(stub), *clash]) == 2
    assert cli_main([*single_argv(stub), "--sweep", "cfg=3,7", "--check"]) == 0
    assert stub.requests and all(  # --check with a server only reads the nodes' ranges from it
        method == "GET" and path.startswith("/object_info/") for method, path in stub.requests
    )
