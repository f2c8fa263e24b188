"""Progress rendering: one rewritten line on a terminal, log records otherwise, silence when quiet."""

from __future__ import annotations

import io
import itertools
import logging

from customvideox_core.batch.progress import ProgressReporter


def run_one_job(reporter: ProgressReporter) -> None:
    reporter.state("clip0", "uploading", "http://a:1")
    reporter.state("clip0", "running", "http://a:1")
    reporter.nodes("clip0", total=4, finished=2)
    for step in range(1, 51):
        reporter.step("clip0", step, 50)
    reporter.state("clip0", "done", "http://a:1", "1 file(s)")
    reporter.state("clip1", "failed", "http://a:1", "boom")
    reporter.finish()


def test_live_line_is_rewritten_in_place_and_cleared(caplog) -> None:
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger="customvideox_core.batch.progress"):
        clock = itertools.count(step=1.0).__next__  # every redraw is due
        run_one_job(ProgressReporter(total_jobs=2, stream=stream, quiet=False, live=True, clock=clock))
    written = stream.getvalue()
    assert "\n" not in written, "the live line never scrolls"
    assert "0/2 done, 0 failed, 1 in flight | clip0 running 50%\r" in written  # 2 of 4 nodes, no step yet
    assert "clip0 running 62% step 25/50" in written  # (2 + 25/50) / 4
    assert "clip0 running 75% step 50/50" in written
    assert written.endswith("\r")
    assert [record.getMessage().split(" [")[0] for record in caplog.records] == [
        "clip0: uploading on http://a:1",
        "clip0: running on http://a:1",
        "clip0: done on http://a:1 (1 file(s))",
        "clip1: failed on http://a:1 (boom)",
        "batch finished: 1/2 done, 1 failed, 0 in flight",
    ]


def test_step_redraws_are_throttled(caplog) -> None:
    stream = io.StringIO()
    frozen_clock = itertools.repeat(5.0).__next__
    reporter = ProgressReporter(total_jobs=1, stream=stream, quiet=False, live=True, clock=frozen_clock)
    reporter.state("clip0", "running", "http://a:1")
    before = stream.getvalue()
    for step in range(1, 51):
        reporter.step("clip0", step, 50)
    assert stream.getvalue() == before, "no redraw within 0.1 s"


def test_not_a_terminal_logs_state_changes_only(caplog) -> None:
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger="customvideox_core.batch.progress"):
        run_one_job(ProgressReporter(total_jobs=2, stream=stream, quiet=False, live=False))
    assert stream.getvalue() == ""
    assert len(caplog.records) == 5, "no record per sampler step"


def test_quiet_keeps_only_failures(caplog) -> None:
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger="customvideox_core.batch.progress"):
        run_one_job(ProgressReporter(total_jobs=2, stream=stream, quiet=True, live=True))
    assert stream.getvalue() == ""
    assert [record.levelno for record in caplog.records] == [logging.WARNING]
