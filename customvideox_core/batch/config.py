"""Batch settings (:class:`BatchConfig`) and outcome (:class:`BatchResult`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .output_folder import MANIFEST_NAME

DEFAULT_SERVER = "http://127.0.0.1:8188"
DEFAULT_WORKFLOW = (
    Path(__file__).resolve().parents[2] / "workflows" / "api" / "customvideox_cogvideox5b_api.json"
)
"""The pack's API-format CogVideoX-5B workflow (used when no workflow is given)."""
MAX_WAIT_SECONDS = 86400
"""Longest wait, poll or request timeout (a day): beyond it the clock functions refuse the number."""


@dataclass(frozen=True)
class BatchConfig:
    """Everything one batch run needs.

    ``retries``: how many times in a row a server that cannot be reached is retried before its job
    goes back to the pool and the server is left alone for the rest of the run; ``backoff``: first
    wait in seconds, doubled after every failed try, at most ``max_backoff``. ``poll_interval``:
    websocket receive timeout; ``history_poll``: how often ``/history`` is checked while no message
    arrives. ``job_timeout``: a job running longer than this (seconds) is recorded as failed (``None``:
    no limit). ``retry_failed``: re-run jobs that failed in an earlier run of the same manifest.
    """

    jobs_file: Path
    output_dir: Path
    servers: tuple[str, ...] = (DEFAULT_SERVER,)
    workflow: Path | None = None
    retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    quiet: bool = False
    poll_interval: float = 1.0
    history_poll: float = 5.0
    request_timeout: float = 30.0
    job_timeout: float | None = None
    retry_failed: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "jobs_file", Path(self.jobs_file))
        object.__setattr__(self, "output_dir", Path(self.output_dir))
        if self.workflow is not None:
            object.__setattr__(self, "workflow", Path(self.workflow))
        object.__setattr__(self, "servers", tuple(server.rstrip("/") for server in self.servers))
        if not self.servers:
            raise ValueError("at least one server is needed, e.g. http://127.0.0.1:8188")
        for server in self.servers:
            parts = urlsplit(server)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"server {server!r} must look like http://127.0.0.1:8188")
        repeated = sorted({server for server in self.servers if self.servers.count(server) > 1})
        if repeated:
            raise ValueError(f"server(s) listed more than once: {', '.join(repeated)}; list each once")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        for name in ("backoff", "max_backoff", "poll_interval", "history_poll", "request_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= MAX_WAIT_SECONDS):
                raise ValueError(
                    f"{name} must be a positive number of seconds, at most {MAX_WAIT_SECONDS} (a day), "
                    f"got {value}"
                )
        if self.job_timeout is not None and not self.job_timeout > 0:
            raise ValueError(f"job_timeout must be positive (seconds) or None, got {self.job_timeout}")

    @property
    def workflow_path(self) -> Path:
        return self.workflow if self.workflow is not None else DEFAULT_WORKFLOW

    @property
    def manifest_path(self) -> Path:
        return self.output_dir / MANIFEST_NAME


@dataclass(frozen=True)
class BatchResult:
    """Job names by outcome. ``unfinished``: left pending because no server could take them."""

    manifest_path: Path
    done: tuple[str, ...]
    failed: tuple[str, ...]
    unfinished: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.unfinished

    @property
    def exit_code(self) -> int:
        """0 only if every job is done."""
        return 0 if self.ok else 1
