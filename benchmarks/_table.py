"""The benchmarks' result table: rows of text cells, printed as aligned text or as Markdown, and the
cell formats the scripts share (a peak in MiB or GiB, a ratio that is "n/a" without a base)."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool, rule: bool = False
) -> str:
    """Markdown (``| a | b |`` with a ``|---|`` line) or text: left-aligned columns two spaces apart,
    with a line of dashes under the header when ``rule``."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    lines = [line(header)]
    if rule:
        lines.append(line(["-" * width for width in widths]))
    return "\n".join(lines + [line(row) for row in rows])


def memory(value: int | None, unit: int, digits: int) -> str:
    """``value`` bytes in ``unit`` bytes (``2**20``: MiB, ``2**30``: GiB), "n/a" when not measured."""
    return "n/a" if value is None else f"{value / unit:.{digits}f}"


def ratio(value: float | None, base: float | None, digits: int = 2) -> str:
    """``value / base``, "n/a" when either is missing or the base is 0."""
    if value is None or not base:
        return "n/a"
    return f"{value / base:.{digits}f}"
