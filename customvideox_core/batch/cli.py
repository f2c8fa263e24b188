"""Command line of the batch client (argument parsing, logging set-up, exit codes).

Two forms: a job file (``jobs.csv`` / ``jobs.jsonl``) for a batch, or ``--reference IMAGE --prompt
TEXT`` (with ``--entity-words``, ``--mask``, ``--seed``, ``--output``) for one job — see
:mod:`.single`. Both share the output folder's manifest, servers, retries and resume.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from .comfy_client import ComfyRequestError, ServerUnavailable
from .config import DEFAULT_SERVER, BatchConfig
from .input_ranges import PACK_RANGES
from .jobs import JobFileError
from .manifest import ManifestError, ManifestWriteError
from .output_folder import OutputDirError, check_output_dir
from .runner import load_targets, prepare_batch, run_batch, server_ranges
from .single import (
    DEFAULT_SEED,
    SingleJob,
    SingleJobError,
    check_single_job,
    single_job_results,
    write_single_job,
)
from .sweep import SweepAxis, SweepError, parse_axis, run_sweep, write_sweep_jobs
from .workflow import WorkflowError

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_UNFINISHED = 1
EXIT_INVALID_INPUT = 2
EXIT_INTERRUPTED = 130
SINGLE_JOB_OPTIONS = ("reference", "prompt", "entity_words", "mask", "seed", "output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m customvideox_core.batch",
        description=(
            "Queue CustomVideoX jobs (CSV or JSONL) on ComfyUI servers, download the results, "
            "and resume after a crash from <output-dir>/manifest.json."
        ),
        epilog=(
            "examples: python -m customvideox_core.batch jobs.csv --output-dir out "
            "--server http://127.0.0.1:8188 --server http://127.0.0.1:8189  |  "
            'python -m customvideox_core.batch --reference dog.png --prompt "a dog running on a beach" '
            "--entity-words dog --output-dir out"
        ),
    )
    parser.add_argument(
        "jobs", type=Path, nargs="?", help="job file: .csv with a header row, or .jsonl (or use --reference)"
    )
    single = parser.add_argument_group(
        "one job instead of a job file",
        "kept as <output-dir>/<name>.job.jsonl and run as a batch of one (same manifest, same resume)",
    )
    single.add_argument("--reference", type=Path, metavar="IMAGE", help="reference image of the subject")
    single.add_argument("--prompt", metavar="TEXT", help="text prompt")
    single.add_argument(
        "--entity-words", metavar="WORDS", help="words of the prompt naming the subject (ERAE)"
    )
    single.add_argument("--mask", type=Path, metavar="IMAGE", help="subject mask of the reference image")
    single.add_argument("--seed", type=int, metavar="N", help=f"seed (default {DEFAULT_SEED})")
    single.add_argument(
        "--output", metavar="NAME", help="name of the job and its results folder (default: the image's name)"
    )
    parser.add_argument("--output-dir", type=Path, required=True, help="results and manifest.json go here")
    parser.add_argument(
        "--server",
        action="append",
        dest="servers",
        metavar="URL",
        help=f"ComfyUI server; repeat for several (default {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--workflow", type=Path, help="API-format workflow JSON (default: the pack's CogVideoX-5B workflow)"
    )
    parser.add_argument("--retries", type=int, default=5, help="tries in a row before a server is given up")
    parser.add_argument(
        "--backoff", type=float, default=1.0, help="first retry wait in seconds, doubled each try"
    )
    parser.add_argument("--max-backoff", type=float, default=60.0, help="longest retry wait in seconds")
    parser.add_argument("--job-timeout", type=float, default=None, help="fail a job running longer (seconds)")
    parser.add_argument(
        "--poll-interval", type=float, default=1.0, help="websocket wait per receive (seconds)"
    )
    parser.add_argument(
        "--history-poll", type=float, default=5.0, help="/history check while silent (seconds)"
    )
    parser.add_argument(
        "--sweep",
        action="append",
        metavar="AXIS=V1,V2",
        help="expand the one job over a grid (repeat for more axes): tab_shape, tab_peak, tab_floor, "
        "tab_start, tab_end, tab_window (start:end), erae_strength, erae_threshold, cfg, seed; writes "
        "sweep.csv/.md and sweep_<axis>.png",
    )
    parser.add_argument("--keep-failed", action="store_true", help="on resume, do not re-run failed jobs")
    parser.add_argument(
        "--check",
        action="store_true",
        help="only validate jobs, workflow and values (against the ranges each --server's /object_info "
        "declares, else the pack's own); queue nothing",
    )
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def _single_job(parser: argparse.ArgumentParser, arguments: argparse.Namespace) -> SingleJob | None:
    """The ``--reference/--prompt`` job, ``None`` for a job file; exit 2 on a mix of the two forms."""
    given = [name for name in SINGLE_JOB_OPTIONS if getattr(arguments, name) is not None]
    flags = ", ".join("--" + name.replace("_", "-") for name in given)
    if arguments.jobs is not None and given:
        parser.error(
            f"a job file and {flags} are mutually exclusive: put the job in the file, or drop the file"
        )
    if arguments.jobs is not None:
        return None
    if not given:
        parser.error("give a job file (.csv or .jsonl), or --reference IMAGE --prompt TEXT for one job")
    missing = [f"--{name}" for name in ("reference", "prompt") if getattr(arguments, name) is None]
    if missing:
        parser.error(f"{flags} describe one job, which also needs {' and '.join(missing)}")
    return SingleJob(
        reference=arguments.reference,
        prompt=arguments.prompt,
        seed=DEFAULT_SEED if arguments.seed is None else arguments.seed,
        entity_words=arguments.entity_words or "",
        mask=arguments.mask,
        output=arguments.output,
    )


def _check(config: BatchConfig, axes: tuple[SweepAxis, ...], *, servers_given: bool) -> int:
    """``--check``: validate the jobs (or the sweep's grid) against the workflow and the nodes' ranges.

    The ranges come from each ``--server``'s ``/object_info`` when servers are given, else from the pack.
    """
    sources = [PACK_RANGES]
    if servers_given:
        try:
            sources = [server_ranges(s, config.workflow_path, config.request_timeout) for s in config.servers]
        except (ServerUnavailable, ComfyRequestError) as error:
            logger.error(
                "cannot read the nodes' ranges from the server (%s); start it, or leave out --server to "
                "check against the pack's own ranges",
                error,
            )
            return EXIT_UNFINISHED
    for ranges in sources:
        if axes:
            jobs_path, points = write_sweep_jobs(config, axes, ranges)
            prepare_batch(replace(config, jobs_file=jobs_path), ranges)
            count = len(points)
        else:
            count = len(prepare_batch(config, ranges).jobs)
        logger.info(
            "%d %s valid for %s (ranges: %s); nothing queued (--check)",
            count,
            "sweep job(s)" if axes else "job(s)",
            config.workflow_path,
            ranges.source,
        )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    single = _single_job(parser, arguments)
    level = logging.DEBUG if arguments.verbose else logging.WARNING if arguments.quiet else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = BatchConfig(
            jobs_file=arguments.jobs if single is None else single.job_file(arguments.output_dir),
            output_dir=arguments.output_dir,
            servers=tuple(arguments.servers or (DEFAULT_SERVER,)),
            workflow=arguments.workflow,
            retries=arguments.retries,
            backoff=arguments.backoff,
            max_backoff=arguments.max_backoff,
            quiet=arguments.quiet,
            poll_interval=arguments.poll_interval,
            history_poll=arguments.history_poll,
            job_timeout=arguments.job_timeout,
            retry_failed=not arguments.keep_failed,
        )
        axes = tuple(parse_axis(text) for text in arguments.sweep or ())
        check_output_dir(config.output_dir)
    except ValueError as error:
        logger.error("%s", error)
        return EXIT_INVALID_INPUT
    try:
        if single is not None:
            check_single_job(single, load_targets(config.workflow_path)[1])
            if arguments.check and not axes:
                logger.info("the job is valid for %s; nothing queued (--check)", config.workflow_path)
                return EXIT_OK
            write_single_job(single, config.output_dir)  # a sweep's --check expands and checks it below
        if arguments.check:
            return _check(config, axes, servers_given=arguments.servers is not None)
        if axes:
            sweep = run_sweep(config, axes)
            result = sweep.batch
            if sweep.table_csv is not None:
                logger.info(
                    "sweep table: %s (and .md); pictures: %s", sweep.table_csv, list(map(str, sweep.charts))
                )
        else:
            result = run_batch(config)
    except (
        JobFileError,
        SingleJobError,
        WorkflowError,
        ManifestError,
        SweepError,
        OutputDirError,
        FileNotFoundError,
    ) as error:
        logger.error("%s", error)
        return EXIT_INVALID_INPUT
    except (ManifestWriteError, OSError) as error:  # a file of the output folder could not be written
        logger.error("%s", error)
        return EXIT_UNFINISHED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    if single is not None and result.ok and not axes:
        for path in single_job_results(config.manifest_path, single.name):
            logger.info("saved %s", path)
    if result.failed:
        logger.warning(
            "%d job(s) failed: %s (errors in %s)",
            len(result.failed),
            ", ".join(result.failed),
            result.manifest_path,
        )
    return EXIT_OK if result.ok else EXIT_UNFINISHED
