"""Batch client: queue many CustomVideoX jobs on one or more ComfyUI servers, resumably.

HTTP through ``urllib`` (uploads encoded by ``urllib3``), the websocket through ``websocket-client``; never
imports torch or ComfyUI, so ``python -m customvideox_core.batch --help`` starts instantly.

Usage::

    python -m customvideox_core.batch jobs.csv --output-dir out/ \\
        --server http://127.0.0.1:8188 --server http://127.0.0.1:8189 \\
        [--workflow my_workflow_api.json] [--retries 5] [--backoff 1.0] [--quiet] [--check]

One job (the main job: one reference image and a prompt), with the same options otherwise::

    python -m customvideox_core.batch --server http://127.0.0.1:8188 --reference dog.png \\
        --prompt "a dog running on a beach" --entity-words dog --output-dir out/ \\
        [--mask dog_mask.png] [--seed 0] [--output NAME]

It is kept as ``out/<name>.job.jsonl`` (``name``: ``--output``, else the image's name, ``dog``) and
run as a batch of one: the video lands in ``out/dog/``, and the same command again resumes.

``jobs.csv`` (or ``jobs.jsonl``, one JSON object per line)::

    reference,mask,prompt,entity_words,seed,tab_shape,tab_peak,erae_strength,output
    refs/cat.png,refs/cat_mask.png,a cat surfing a wave at sunset,cat,42,parabolic,1.5,1.0,cat_surf
    refs/mug.jpg,,a red mug on a rotating table,mug,7,,,,mug_turn

Columns: ``reference`` (image path, relative to the job file), ``prompt`` and ``seed`` are required;
``mask``, ``entity_words``, ``tab_shape``/``tab_peak``/``tab_floor``/``tab_start``/``tab_end``/
``tab_custom_values``, ``erae_strength``/``erae_threshold``, ``cfg`` and ``output`` (name of the
results) are optional. Every bad row (missing prompt, reference file not found, bad seed, non-numeric
override, unknown column, an input the workflow lacks) is reported with its line number before
anything is queued, and the client exits with status 2.

The workflow must be in API format (ComfyUI: Workflow → Export (API)); by default the pack's
``workflows/api/customvideox_cogvideox5b_api.json``. Nodes are found by class, not by id: the
``LoadImage`` feeding ``CustomVideoXReferenceEncode``, the ``CLIPTextEncode`` feeding the sampler's
``positive``, the seed of ``CustomVideoXSample``/``KSampler``/``RandomNoise``, the
``CustomVideoXTimeAwareBias`` and ``CustomVideoXERAEMask`` inputs, and every ``filename_prefix``.

Each server runs one job at a time; jobs go to whichever server is free. Results land in
``<output-dir>/<output name>/`` and ``<output-dir>/manifest.json`` records every job's state after
each change (pending → uploading → queued → running → done | failed). Running the same command
again resumes: done jobs are kept, jobs still queued on a server are re-attached by prompt id, and
jobs that failed are tried again (``--keep-failed`` keeps them failed). A server that cannot be
reached is retried with exponential backoff (``--backoff`` seconds, doubled, ``--retries`` times);
if it stays down its job goes to another server. Exit status: 0 when every job is done, 1 when
some failed or could not run, 2 for invalid input, 130 when interrupted.

Scores: when the workflow has a ``CustomVideoXScore`` node, each job's scores (from ``/history``) go
into the manifest and into ``<output-dir>/results.csv`` / ``results.md`` (:mod:`.results`).
``--sweep AXIS=V1,V2`` (repeatable) expands the one job of the file over a grid of TAB / ERAE / cfg /
seed values and writes ``sweep.csv``, ``sweep.md`` and ``sweep_<axis>.png`` (:mod:`.sweep`).

As a library::

    from customvideox_core.batch import BatchConfig, run_batch

    result = run_batch(BatchConfig(jobs_file="jobs.csv", output_dir="out", servers=("http://127.0.0.1:8188",)))
    assert result.ok, (result.failed, result.unfinished)
"""

from .config import DEFAULT_SERVER, DEFAULT_WORKFLOW, BatchConfig, BatchResult
from .jobs import EraeOverrides, Job, JobFileError, RowError, TabOverrides, load_jobs, read_jobs
from .manifest import JobRecord, ManifestError, ManifestStore
from .runner import PreparedBatch, prepare_batch, run_batch
from .workflow import (
    JobWorkflowError,
    UploadedImages,
    WorkflowError,
    WorkflowTargets,
    fill_workflow,
    load_workflow,
    locate_targets,
)

__all__ = [
    "DEFAULT_SERVER",
    "DEFAULT_WORKFLOW",
    "BatchConfig",
    "BatchResult",
    "EraeOverrides",
    "Job",
    "JobFileError",
    "JobRecord",
    "JobWorkflowError",
    "ManifestError",
    "ManifestStore",
    "PreparedBatch",
    "RowError",
    "TabOverrides",
    "UploadedImages",
    "WorkflowError",
    "WorkflowTargets",
    "fill_workflow",
    "load_jobs",
    "load_workflow",
    "locate_targets",
    "prepare_batch",
    "read_jobs",
    "run_batch",
]
