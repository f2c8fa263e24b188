"""Overall and per-job progress on stderr: one rewritten status line on a terminal, state changes as
log records otherwise (never one line per sampler step), nothing but warnings when quiet.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

logger = logging.getLogger(__name__)

_TERMINAL_STATES = ("done", "failed")
_REFRESH_SECONDS = 0.1


@dataclass
class _JobProgress:
    server: str
    state: str
    nodes_total: int = 0
    nodes_finished: int = 0
    step: int = 0
    steps: int = 0

    def fraction(self) -> float:
        if self.nodes_total <= 0:
            return 0.0
        within = self.step / self.steps if self.steps else 0.0
        return min(1.0, (self.nodes_finished + within) / self.nodes_total)


class ProgressReporter:
    """Collects job states and node/step progress; renders them to ``stream`` (see module docstring).

    ``live`` selects the single rewritten line (use it when ``stream`` is a terminal); the line is
    redrawn at most every 0.1 s of ``clock`` for step updates, at once for state changes.
    """

    def __init__(
        self,
        total_jobs: int,
        stream: TextIO,
        quiet: bool,
        live: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._total = total_jobs
        self._stream = stream
        self._quiet = quiet
        self._live = live and not quiet
        self._lock = threading.Lock()
        self._active: dict[str, _JobProgress] = {}
        self._counts = {"done": 0, "failed": 0}
        self._clock = clock
        self._last_render = float("-inf")
        self._line_width = 0

    def preset(self, done: int, failed: int) -> None:
        """Jobs already finished before this run (resume)."""
        with self._lock:
            self._counts = {"done": done, "failed": failed}

    def state(self, job: str, state: str, server: str, detail: str = "") -> None:
        """A job changed state (``pending``/``uploading``/``queued``/``running``/``done``/``failed``)."""
        with self._lock:
            if state in _TERMINAL_STATES:
                self._counts[state] += 1
                self._active.pop(job, None)
            elif state == "pending":
                self._active.pop(job, None)
            else:
                entry = self._active.setdefault(job, _JobProgress(server=server, state=state))
                entry.server, entry.state = server, state
            summary = self._summary_locked()
        message = f"{job}: {state}" + (f" on {server}" if server else "") + (f" ({detail})" if detail else "")
        level = logging.WARNING if state == "failed" else logging.INFO
        if not self._quiet or level >= logging.WARNING:
            self._clear_line()
            logger.log(level, "%s [%s]", message, summary)
        self._render(force=True)

    def nodes(self, job: str, total: int, finished: int) -> None:
        """Node counts of the job's running prompt (finished includes cached nodes)."""
        with self._lock:
            entry = self._active.get(job)
            if entry is not None:
                entry.nodes_total, entry.nodes_finished = total, min(finished, total)
                entry.step, entry.steps = 0, 0
        self._render()

    def step(self, job: str, value: int, maximum: int) -> None:
        """Step progress of the node running now (``progress`` messages)."""
        with self._lock:
            entry = self._active.get(job)
            if entry is not None:
                entry.step, entry.steps = value, maximum
        self._render()

    def finish(self) -> None:
        """Clear the live line and log the final counts."""
        self._clear_line()
        with self._lock:
            summary = self._summary_locked()
        if not self._quiet:
            logger.info("batch finished: %s", summary)

    def _summary_locked(self) -> str:
        running = len(self._active)
        return (
            f"{self._counts['done']}/{self._total} done, {self._counts['failed']} failed, {running} in flight"
        )

    def _render(self, force: bool = False) -> None:
        if not self._live:
            return
        now = self._clock()
        with self._lock:
            if not force and now - self._last_render < _REFRESH_SECONDS:
                return
            self._last_render = now
            parts = [self._summary_locked()]
            for job, entry in sorted(self._active.items()):
                steps = f" step {entry.step}/{entry.steps}" if entry.steps else ""
                parts.append(f"{job} {entry.state} {entry.fraction():.0%}{steps}")
            line = " | ".join(parts)
            padding = max(0, self._line_width - len(line))
            self._line_width = len(line)
            self._stream.write("\r" + line + " " * padding)
            self._stream.flush()

    def _clear_line(self) -> None:
        if not self._live:
            return
        with self._lock:
            if self._line_width:
                self._stream.write("\r" + " " * self._line_width + "\r")
                self._stream.flush()
                self._line_width = 0
