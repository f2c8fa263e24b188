"""One worker per server, taking jobs from a shared pool; one job in flight per server.

A job's life on a worker: upload the images → fill the workflow → ``POST /prompt`` → follow the
websocket (``/history`` as the source of truth) → download the outputs. A server that cannot be
reached is retried with exponential backoff; after ``retries`` failures in a row the job goes back
to the pool (state ``pending``) and the worker stops. A prompt the server lost (restarted) is queued
again, at most ``retries`` times per run.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from .comfy_client import (
    ComfyClient,
    ComfyRequestError,
    DownloadFailed,
    LocalWriteError,
    ServerUnavailable,
    describe_execution_error,
    history_error,
    output_files,
)
from .config import BatchConfig
from .jobs import Job
from .manifest import ManifestStore, ManifestWriteError
from .progress import ProgressReporter
from .results import expects_scores, scores_from_history
from .websocket import WebSocketConnection, WebSocketError
from .workflow import ApiWorkflow, JobWorkflowError, UploadedImages, WorkflowTargets, fill_workflow

logger = logging.getLogger(__name__)
_Result = TypeVar("_Result")


class _PromptLost(Exception):
    """The server no longer knows the prompt (not in its queue nor its history)."""


class JobPool:
    """Jobs waiting for a server. ``take`` blocks while other workers might still give a job back."""

    def __init__(self, pending: list[str], reattach: dict[str, list[str]]) -> None:
        self._condition = threading.Condition()
        self._pending = deque(pending)
        self._reattach = {server: deque(names) for server, names in reattach.items()}
        self._in_flight = 0

    def take(self, server: str) -> str | None:
        """Next job for ``server`` (its own re-attachments first); ``None`` once nothing can come."""
        with self._condition:
            while True:
                own = self._reattach.get(server)
                if own:
                    self._in_flight += 1
                    return own.popleft()
                if self._pending:
                    self._in_flight += 1
                    return self._pending.popleft()
                if self._in_flight == 0 and not any(self._reattach.values()):
                    return None
                self._condition.wait()

    def finish(self) -> None:
        with self._condition:
            self._in_flight -= 1
            self._condition.notify_all()

    def give_back(self, name: str) -> None:
        with self._condition:
            self._in_flight -= 1
            self._pending.append(name)
            self._condition.notify_all()

    def retire(self, server: str) -> None:
        """``server``'s worker stops: its re-attachments become ordinary pending jobs."""
        with self._condition:
            self._pending.extend(self._reattach.pop(server, ()))
            self._condition.notify_all()


@dataclass(frozen=True)
class BatchContext:
    """What every worker shares."""

    config: BatchConfig
    jobs: dict[str, Job]
    workflow: ApiWorkflow
    targets: WorkflowTargets
    store: ManifestStore
    pool: JobPool
    progress: ProgressReporter
    stop: threading.Event
    halted: list[ManifestWriteError] = field(default_factory=list)
    """Why the batch stopped early (a manifest that cannot be written); empty while it runs."""

    def halt(self, error: ManifestWriteError) -> None:
        """Stop every worker: ``error`` keeps the batch from recording anything more."""
        self.halted.append(error)
        self.stop.set()


class ServerWorker(threading.Thread):
    """Runs jobs from the pool on one server until the pool is empty or the server stays down."""

    def __init__(self, server: str, context: BatchContext) -> None:
        super().__init__(name=f"cvx-batch {server}", daemon=True)
        self.server = server
        self.context = context
        self.client = ComfyClient(server, timeout=context.config.request_timeout)
        self._websocket: WebSocketConnection | None = None
        self._failures_in_a_row = 0

    def run(self) -> None:
        pool = self.context.pool
        try:
            while not self.context.stop.is_set():
                name = pool.take(self.server)
                if name is None or not self._run_job(name):
                    return
        except ManifestWriteError as error:  # nothing more can be recorded: the whole batch stops
            self.context.halt(error)
        finally:
            pool.retire(self.server)
            self._close_websocket()

    def _run_job(self, name: str) -> bool:
        """Run ``name``: ``True`` to take the next job, ``False`` when this worker stops (the job went back
        to the pool). A manifest that cannot be written is raised, after giving the job back."""
        pool = self.context.pool
        try:
            finished = self._process(name)
        except ManifestWriteError:
            pool.give_back(name)
            raise
        except Exception:  # A bug must not lose the job: log it, give the job back, stop.
            logger.exception("%s: unexpected error while running %s; leaving this server", self.server, name)
            finished = False
        if finished:
            pool.finish()
            return True
        try:
            self._set_state(name, "pending", server=None, prompt_id=None)
        finally:  # even if the manifest cannot be written, other workers may take the job
            pool.give_back(name)
        return False

    def _process(self, name: str) -> bool:
        """Run one job to done/failed (``True``), or give up on this server (``False``)."""
        job = self.context.jobs[name]
        config = self.context.config
        lost = downloads = 0
        while not self.context.stop.is_set():
            try:
                self._drive(job)
                return True
            except _PromptLost:
                lost += 1
                if lost > config.retries:
                    self._fail(job, f"{self.server} lost the prompt {lost} times (restarted while running?)")
                    return True
                logger.warning("%s: %s lost the prompt; queueing it again", job.name, self.server)
            except DownloadFailed as error:  # /history answers, so the run of failures is counted here
                downloads += 1
                if downloads > config.retries:
                    self._fail(job, f"{error} ({downloads} tries); the file stays on the server")
                    return True
                self._wait_to_retry(error, downloads)
            except ServerUnavailable as error:
                self._close_websocket()
                self._failures_in_a_row += 1
                if self._failures_in_a_row > config.retries:
                    logger.warning(
                        "%s: giving up after %d tries (%s); %s goes back to the pool",
                        self.server,
                        self._failures_in_a_row,
                        error,
                        job.name,
                    )
                    return False
                self._wait_to_retry(error, self._failures_in_a_row)
            except (ComfyRequestError, JobWorkflowError, LocalWriteError, OSError) as error:
                self._fail(job, str(error))
                return True
        return False

    def _wait_to_retry(self, error: Exception, tries: int) -> None:
        """Log ``error`` and wait before try ``tries + 1``: the backoff doubles per try up to its maximum
        (an earlier stop ends the wait)."""
        config = self.context.config
        delay = min(config.backoff * 2 ** (tries - 1), config.max_backoff)
        logger.warning("%s; retrying in %.2f s (try %d of %d)", error, delay, tries, config.retries)
        self.context.stop.wait(delay)

    def _drive(self, job: Job) -> None:
        """Continue ``job`` from its recorded state on this server."""
        record = self.context.store.get(job.name)
        recorded_here = record.state in ("queued", "running") and record.server == self.server
        if recorded_here and record.prompt_id:
            if self._reattach(job, record.prompt_id, record.state):
                return
            logger.warning(
                "%s: %s no longer knows prompt %s; queueing it again", job.name, self.server, record.prompt_id
            )
        self._queue_and_wait(job)

    def _reattach(self, job: Job, prompt_id: str, state: str) -> bool:
        """Pick up a prompt queued earlier: ``True`` when finished, ``False`` when it must be re-queued."""
        entry = self._call(self.client.history, prompt_id)
        if entry is not None:
            self._finish_from_history(job, prompt_id, entry)
            return True
        queue = self._call(self.client.queue)
        if prompt_id not in queue:
            return False
        logger.info("%s: re-attached to prompt %s on %s", job.name, prompt_id, self.server)
        self._ensure_websocket()
        if prompt_id in queue.running and state != "running":
            self._set_state(job.name, "running")
        try:
            self._wait(job, prompt_id)
        except _PromptLost:
            return False
        return True

    def _queue_and_wait(self, job: Job) -> None:
        store = self.context.store
        self._set_state(job.name, "uploading", server=self.server, prompt_id=None, files=(), error=None)
        reference = self._call(self.client.upload_image, job.reference)
        mask = None if job.mask is None else self._call(self.client.upload_image, job.mask)
        filled = fill_workflow(
            self.context.workflow, self.context.targets, job, UploadedImages(reference=reference, mask=mask)
        )
        self._ensure_websocket()  # before queueing, so that no message of the prompt is missed
        prompt_id = str(uuid.uuid4())
        attempts = store.get(job.name).attempts + 1
        self._set_state(job.name, "queued", server=self.server, prompt_id=prompt_id, attempts=attempts)
        returned = self._call(self.client.queue_prompt, filled, store.client_id, prompt_id)
        if returned != prompt_id:  # a server that does not honour client-chosen prompt ids
            store.update(job.name, prompt_id=returned)
        self._wait(job, returned)

    def _wait(self, job: Job, prompt_id: str) -> None:
        """Follow the prompt until it is recorded done or failed; raise :class:`_PromptLost` if it vanished."""
        config = self.context.config
        started = time.monotonic()
        last_check = started
        finished_nodes: set[str] = set()
        node_count = len(self.context.workflow)
        ended = False
        while True:
            if config.job_timeout is not None and time.monotonic() - started > config.job_timeout:
                self._cancel(prompt_id)
                self._fail(job, f"no result after {config.job_timeout:g} s on {self.server} (job timeout)")
                return
            websocket = self._ensure_websocket()
            try:
                message = websocket.receive(timeout=0.05 if ended else config.poll_interval)
            except WebSocketError as error:
                raise ServerUnavailable(f"{self.server}: websocket dropped: {error}") from error
            event, data = _parse_event(message)
            if data.get("prompt_id") == prompt_id:
                if event == "execution_error":
                    self._fail(job, describe_execution_error(data))
                    return
                if event == "execution_interrupted":
                    self._fail(job, f"execution was interrupted on {self.server}")
                    return
                ended = (
                    ended
                    or event == "execution_success"
                    or (event == "executing" and data.get("node") is None)
                )
                self._follow(job, event, data, finished_nodes, node_count)
            now = time.monotonic()
            if ended or now - last_check >= config.history_poll:
                last_check = now
                entry = self._call(self.client.history, prompt_id)
                if entry is not None:
                    self._finish_from_history(job, prompt_id, entry)
                    return
                if not ended and prompt_id not in self._call(self.client.queue):
                    entry = self._call(self.client.history, prompt_id)  # it may have just finished
                    if entry is None:
                        raise _PromptLost(prompt_id)
                    self._finish_from_history(job, prompt_id, entry)
                    return

    def _follow(self, job: Job, event: str, data: dict, finished_nodes: set[str], node_count: int) -> None:
        """Progress bookkeeping for the messages of a running prompt."""
        if event in ("execution_start", "executing") and self.context.store.get(job.name).state != "running":
            self._set_state(job.name, "running")
        if event == "execution_cached":
            finished_nodes.update(str(node) for node in data.get("nodes") or [])
        elif event == "executed" and data.get("node") is not None:
            finished_nodes.add(str(data["node"]))
        elif event == "progress":
            self.context.progress.step(job.name, int(data.get("value", 0)), int(data.get("max", 0)))
            return
        elif event != "executing":
            return
        self.context.progress.nodes(job.name, node_count, len(finished_nodes))

    def _finish_from_history(self, job: Job, prompt_id: str, entry: dict) -> None:
        error = history_error(entry)
        if error is not None:
            self._fail(job, error)
            return
        output_dir = self.context.config.output_dir
        job_dir = output_dir / job.name
        saved: list[str] = []
        for output in output_files(entry):
            destination = _unique(job_dir / Path(output.filename).name, saved, output_dir)
            self._call(self.client.download, output, destination)
            saved.append(destination.relative_to(output_dir).as_posix())
        if not saved:
            logger.warning(
                "%s: prompt %s finished without output files (no save node ran?)", job.name, prompt_id
            )
        scores = scores_from_history(entry)
        if scores is None and expects_scores(self.context.workflow):
            logger.warning(
                "%s: the workflow has a CustomVideoXScore node but prompt %s reported no scores; ComfyUI "
                "skips an output node that fails validation (see the server's log)",
                job.name,
                prompt_id,
            )
        self._set_state(job.name, "done", files=tuple(saved), error=None, scores=scores)

    def _fail(self, job: Job, error: str) -> None:
        self._set_state(job.name, "failed", error=error)

    def _set_state(self, name: str, state: str, **changes: object) -> None:
        record = self.context.store.update(name, state=state, **changes)
        detail = record.error if state == "failed" else ""
        if state == "done":
            detail = f"{len(record.files)} file(s)"
        self.context.progress.state(name, state, self.server if state != "pending" else "", detail)

    def _call(self, function: Callable[..., _Result], *args: object) -> _Result:
        """Call the server; a success ends a run of failures (the backoff starts over)."""
        result = function(*args)
        self._failures_in_a_row = 0
        return result

    def _cancel(self, prompt_id: str) -> None:
        """Free the server from a prompt we stop waiting for (best effort: it may be gone already)."""
        try:
            self.client.cancel(prompt_id)
        except (ServerUnavailable, ComfyRequestError) as error:
            logger.warning("%s: could not cancel prompt %s: %s", self.server, prompt_id, error)

    def _ensure_websocket(self) -> WebSocketConnection:
        if self._websocket is None or self._websocket.closed:
            self._websocket = self._call(self.client.open_websocket, self.context.store.client_id)
        return self._websocket

    def _close_websocket(self) -> None:
        if self._websocket is not None:
            self._websocket.close()
            self._websocket = None


def _parse_event(message: str | bytes | None) -> tuple[str, dict]:
    """``{"type": ..., "data": {...}}`` text messages → ``(type, data)``; anything else → ``("", {})``.

    Binary messages are previews (``<event:u32><payload>``); the batch client ignores them.
    """
    if not isinstance(message, str):
        return "", {}
    try:
        decoded = json.loads(message)
    except json.JSONDecodeError:
        logger.debug("ignoring a websocket message that is not JSON: %.100s", message)
        return "", {}
    if not isinstance(decoded, dict) or not isinstance(decoded.get("data"), dict):
        return "", {}
    return str(decoded.get("type", "")), decoded["data"]


def _unique(destination: Path, taken: list[str], root: Path) -> Path:
    """``destination``, or ``stem_2.ext``, ``stem_3.ext``... if this job already saved that name."""
    candidate, counter = destination, 1
    while candidate.relative_to(root).as_posix() in taken:
        counter += 1
        candidate = destination.with_name(f"{destination.stem}_{counter}{destination.suffix}")
    return candidate
