"""Command line of the batch client (argument parsing, logging set-up, exit codes)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import DEFAULT_SERVER, BatchConfig
from .jobs import JobFileError
from .manifest import ManifestError
from .runner import prepare_batch, run_batch
from .workflow import WorkflowError

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_UNFINISHED = 1
EXIT_INVALID_INPUT = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m customvideox_core.batch",
        description=(
            "Queue CustomVideoX jobs (CSV or JSONL) on ComfyUI servers, download the results, "
            "and resume after a crash from <output-dir>/manifest.json."
        ),
        epilog=(
            "example: python -m customvideox_core.batch jobs.csv --output-dir out "
            "--server http://127.0.0.1:8188 --server http://127.0.0.1:8189"
        ),
    )
    parser.add_argument("jobs", type=Path, help="job file: .csv with a header row, or .jsonl")
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
    parser.add_argument("--keep-failed", action="store_true", help="on resume, do not re-run failed jobs")
    parser.add_argument("--check", action="store_true", help="only validate jobs and workflow, queue nothing")
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    level = logging.DEBUG if arguments.verbose else logging.WARNING if arguments.quiet else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = BatchConfig(
            jobs_file=arguments.jobs,
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
    except ValueError as error:
        logger.error("%s", error)
        return EXIT_INVALID_INPUT
    try:
        if arguments.check:
            prepared = prepare_batch(config)
            logger.info(
                "%d job(s) valid for %s; nothing queued (--check)", len(prepared.jobs), config.workflow_path
            )
            return EXIT_OK
        result = run_batch(config)
    except (JobFileError, WorkflowError, ManifestError, FileNotFoundError) as error:
        logger.error("%s", error)
        return EXIT_INVALID_INPUT
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    if result.failed:
        logger.warning(
            "%d job(s) failed: %s (errors in %s)",
            len(result.failed),
            ", ".join(result.failed),
            result.manifest_path,
        )
    return EXIT_OK if result.ok else EXIT_UNFINISHED
