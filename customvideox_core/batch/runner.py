"""``run_batch(BatchConfig) -> BatchResult``: validate everything, resume the manifest, run the workers."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .comfy_client import ComfyClient
from .config import BatchConfig, BatchResult
from .input_ranges import PACK_RANGES, InputRanges, job_range_errors, ranges_from_object_info, setting_classes
from .jobs import Job, JobFileError, RowError, read_jobs
from .manifest import ManifestStore
from .output_folder import RESULTS_CSV, RESULTS_MARKDOWN, make_output_dir
from .progress import ProgressReporter
from .results import write_results
from .worker import BatchContext, JobPool, ServerWorker
from .workflow import (
    ApiWorkflow,
    WorkflowError,
    WorkflowTargets,
    job_workflow_errors,
    load_workflow,
    locate_targets,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedBatch:
    """Validated jobs and the workflow they fill."""

    jobs: tuple[Job, ...]
    workflow: ApiWorkflow
    targets: WorkflowTargets


def prepare_batch(config: BatchConfig, ranges: InputRanges = PACK_RANGES) -> PreparedBatch:
    """Read and check the job file against the workflow and ``ranges``; nothing touches a server.

    Raises :class:`~.jobs.JobFileError` listing every bad row with its line number (including jobs the
    workflow cannot take, e.g. "workflow has no mask input", and values outside a node input's range),
    :class:`~.workflow.WorkflowError` for an unusable workflow, :class:`FileNotFoundError` for a missing
    job file.
    """
    workflow, targets = load_targets(config.workflow_path)
    jobs, errors = read_jobs(config.jobs_file)
    for job in jobs:
        problems = job_workflow_errors(targets, job) + job_range_errors(workflow, targets, job, ranges)
        errors.extend(RowError(job.line, message) for message in problems)
    if errors:
        raise JobFileError(config.jobs_file, errors)
    return PreparedBatch(jobs=tuple(jobs), workflow=workflow, targets=targets)


def load_targets(workflow_path: Path) -> tuple[ApiWorkflow, WorkflowTargets]:
    """The API-format workflow at ``workflow_path`` and the nodes a job fills in it.

    Raises :class:`~.workflow.WorkflowError` when the file is missing or unusable.
    """
    workflow = load_workflow(workflow_path)
    return workflow, locate_targets(workflow)


def server_ranges(server: str, workflow_path: Path, timeout: float = 30.0) -> InputRanges:
    """What ``server``'s ``/object_info`` declares for the node classes a job can set in the workflow.

    Raises :class:`~.comfy_client.ServerUnavailable` when the server cannot be reached, and
    :class:`~.workflow.WorkflowError` when it lacks one of those nodes.
    """
    workflow, targets = load_targets(workflow_path)
    client = ComfyClient(server, timeout=timeout)
    infos = {}
    for node_class in setting_classes(workflow, targets):
        info = client.object_info(node_class)
        if info is None:
            raise WorkflowError(
                f"{server} has no {node_class} node, which the workflow uses; install the node pack that "
                "provides it there (and restart the server), or use another --server"
            )
        infos[node_class] = info
    return ranges_from_object_info(infos, source=f"{server}/object_info")


def run_batch(config: BatchConfig, *, on_manifest_write: Callable[[dict], None] | None = None) -> BatchResult:
    """Run (or resume) a batch; every job ends done or failed unless no server could take it.

    Everything is validated before anything is queued (see :func:`prepare_batch`); a manifest from an
    earlier run with the same output directory is resumed: done jobs are kept, jobs queued on a
    server are re-attached by prompt id (or queued again if the server lost them).
    ``on_manifest_write`` is called with every manifest document written (for observers and tests).

    Raises what :func:`prepare_batch` raises, :class:`~.output_folder.OutputDirError` when the output folder
    is a file or cannot be created, and :class:`~.manifest.ManifestWriteError` (after stopping every worker)
    when the manifest cannot be written. A job whose file cannot be written here fails (its error says
    why) and the others go on; a results table that cannot be written is a warning.
    """
    prepared = prepare_batch(config)
    make_output_dir(config.output_dir)
    jobs = {job.name: job for job in prepared.jobs}
    header = {"jobs_file": str(config.jobs_file.resolve()), "workflow": str(config.workflow_path.resolve())}
    store = ManifestStore.open(config.manifest_path, prepared.jobs, header, on_write=on_manifest_write)
    pending, reattach = _resume_plan(config, store, jobs)

    snapshot = store.snapshot()
    progress = ProgressReporter(
        total_jobs=len(jobs), stream=sys.stderr, quiet=config.quiet, live=_is_terminal(sys.stderr)
    )
    progress.preset(
        done=sum(snapshot[name].state == "done" for name in jobs),
        failed=sum(snapshot[name].state == "failed" for name in jobs),
    )
    if not config.quiet:
        logger.info(
            "%d job(s): %d to run, %d to re-attach, on %d server(s); manifest %s",
            len(jobs),
            len(pending),
            sum(map(len, reattach.values())),
            len(config.servers),
            store.path,
        )
    context = BatchContext(
        config=config,
        jobs=jobs,
        workflow=prepared.workflow,
        targets=prepared.targets,
        store=store,
        pool=JobPool(pending, reattach),
        progress=progress,
        stop=threading.Event(),
    )
    workers = [ServerWorker(server, context) for server in config.servers]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            while worker.is_alive() and not context.halted:
                worker.join(timeout=0.5)
    except KeyboardInterrupt:
        context.stop.set()
        logger.warning("interrupted; %s keeps every job's state: run the same command to resume", store.path)
        raise
    progress.finish()
    if context.halted:
        raise context.halted[0]
    try:
        csv_path, _ = write_results(config.output_dir, prepared.jobs, store.snapshot())
    except OSError as error:  # the jobs are recorded; a table that cannot be written must not hide that
        folders = [name for name in (RESULTS_CSV, RESULTS_MARKDOWN) if (config.output_dir / name).is_dir()]
        logger.warning(
            "could not write the results table in %s (%s)%s; every job's state and scores are in %s",
            config.output_dir,
            error.strerror or error,
            f": move the folder {', '.join(folders)} out of the way" if folders else "",
            store.path,
        )
    else:
        if not config.quiet:
            logger.info("results table: %s (and .md)", csv_path)
    return _result(store, jobs, config)


def _resume_plan(
    config: BatchConfig, store: ManifestStore, jobs: dict[str, Job]
) -> tuple[list[str], dict[str, list[str]]]:
    """Jobs to queue, and jobs to re-attach per server, from the manifest's recorded states."""
    pending: list[str] = []
    reattach: dict[str, list[str]] = {server: [] for server in config.servers}
    for name in jobs:
        record = store.get(name)
        if record.state == "done" or (record.state == "failed" and not config.retry_failed):
            continue
        if record.state in ("queued", "running") and record.server in reattach:
            reattach[record.server].append(name)
            continue
        if record.state in ("queued", "running"):
            logger.warning(
                "%s was queued on %s, which is not among the servers now; queueing it again",
                name,
                record.server,
            )
        if record.state != "pending":
            store.update(name, state="pending", server=None, prompt_id=None, error=None)
        pending.append(name)
    return pending, {server: names for server, names in reattach.items() if names}


def _result(store: ManifestStore, jobs: dict[str, Job], config: BatchConfig) -> BatchResult:
    snapshot = store.snapshot()
    by_state: dict[str, list[str]] = {"done": [], "failed": [], "unfinished": []}
    for name in jobs:
        state = snapshot[name].state
        by_state[state if state in ("done", "failed") else "unfinished"].append(name)
    if by_state["unfinished"]:
        logger.warning(
            "%d job(s) could not be run (no server reachable); run the same command again to resume",
            len(by_state["unfinished"]),
        )
    return BatchResult(
        manifest_path=config.manifest_path,
        done=tuple(by_state["done"]),
        failed=tuple(by_state["failed"]),
        unfinished=tuple(by_state["unfinished"]),
    )


def _is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
