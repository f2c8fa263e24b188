"""Lists of numbers typed into a text widget (TAB's ``custom_values``, the Reference Guider's per-step
scales): one parser, one wording of its refusal. Torch-free, so the batch client shares it."""

from __future__ import annotations


def parse_numbers(text: str, label: str, example: str) -> tuple[float, ...]:
    """``"0, 0.5, 1"`` → ``(0.0, 0.5, 1.0)``: commas, spaces or new lines separate values; empty items
    (a trailing comma, doubled separators) are skipped. An item that is not a number is refused naming
    ``label``, its place among the values and ``example`` (how such a list is written)."""
    items = [item for item in text.replace("\n", ",").replace(" ", ",").split(",") if item.strip()]
    values = []
    for index, item in enumerate(items):
        try:
            values.append(float(item))
        except ValueError:
            raise ValueError(
                f"{label} item {index + 1}: '{item.strip()}' is not a number; write {example}"
            ) from None
    return tuple(values)
