"""Tiny, generic timing and peak-memory helpers shared by the benchmark scripts.

Time: median wall-clock seconds of ``repeats`` calls after ``warmup`` calls, with
``torch.cuda.synchronize`` around every call on CUDA (so queued kernels are counted). ``compare`` times
several callables in interleaved rounds (one call each, the order rotated every round), so that drifting
machine load (shared CPUs, clocks) affects all of them alike; ``Measurement.ratio_to`` is the median of
the per-round ratios, which cancels load that changes between rounds.

Peak memory: how far memory rose above its level just before one call, at the call's worst moment —
the call's own working set including its output, excluding what already existed (its inputs).
  * CUDA: ``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` before (tensor bytes; the
    caching allocator's reserved-but-free blocks do not count).
  * CPU (Linux only): peak resident set size, reset right before the call through
    ``/proc/self/clear_refs`` ("5" resets VmHWM) after returning freed heap pages to the OS
    (glibc ``malloc_trim``), minus the RSS before. It counts pages the call touched, so it sees real
    tensor data, not untouched reservations. ``None`` where this is unavailable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Measurement:
    """Median time of a callable and the peak memory one call added; ``samples``: seconds per round."""

    median_seconds: float
    peak_bytes: int | None
    samples: tuple[float, ...] = ()

    def ratio_to(self, base: Measurement) -> float:
        """Time against ``base``: the median of the per-round ratios when both come from one ``compare``
        (paired samples), else the ratio of the medians."""
        ratios = self.paired_ratios(base)
        return statistics.median(ratios) if ratios else self.median_seconds / base.median_seconds

    def min_ratio_to(self, base: Measurement) -> float:
        """Fastest round against ``base``'s fastest: other processes only ever add time, so on a shared
        machine the minima are the least disturbed estimate of the calls' own cost."""
        if not self.samples or not base.samples:
            return self.median_seconds / base.median_seconds
        return min(self.samples) / min(base.samples)

    def paired_ratios(self, base: Measurement) -> list[float]:
        """Per-round time ratios against ``base`` (empty unless both come from one ``compare``)."""
        if not self.samples or len(self.samples) != len(base.samples):
            return []
        return [ours / theirs for ours, theirs in zip(self.samples, base.samples, strict=True)]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], device: torch.device, *, warmup: int, repeats: int) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` untimed calls."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}.")
    for _ in range(warmup):
        fn()
    synchronize(device)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def peak_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    """Bytes by which memory rose above its pre-call level at the peak of one ``fn()`` call."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = fn()
        synchronize(device)
        del result
        return torch.cuda.max_memory_allocated(device) - before
    if device.type == "cpu":
        return _cpu_peak_rss_increase(fn)
    return None


def measure(fn: Callable[[], object], device: torch.device, *, warmup: int, repeats: int) -> Measurement:
    """Time ``fn`` (median) and then measure its peak memory in one extra call."""
    seconds = median_seconds(fn, device, warmup=warmup, repeats=repeats)
    return Measurement(median_seconds=seconds, peak_bytes=peak_bytes(fn, device))


def compare(
    callables: dict[str, Callable[[], object]], device: torch.device, *, warmup: int, repeats: int
) -> dict[str, Measurement]:
    """Like ``measure`` for each callable, but timed in ``repeats`` interleaved rounds (one call each).

    Round ``r`` starts at callable ``r mod n``, so that no callable always runs right after the same one.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}.")
    for fn in callables.values():
        for _ in range(warmup):
            fn()
    names = list(callables)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            start = time.perf_counter()
            callables[name]()
            synchronize(device)
            samples[name].append(time.perf_counter() - start)
    return {
        name: Measurement(statistics.median(samples[name]), peak_bytes(fn, device), tuple(samples[name]))
        for name, fn in callables.items()
    }


def _cpu_peak_rss_increase(fn: Callable[[], object]) -> int | None:
    try:
        _release_free_heap()
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        before = _status_bytes("VmRSS")
    except OSError:
        return None
    result = fn()
    peak = _status_bytes("VmHWM")
    del result
    return max(peak - before, 0)


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {field} line")


def _release_free_heap() -> None:
    library = ctypes.util.find_library("c")
    if library is None:
        return
    libc = ctypes.CDLL(library)
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
