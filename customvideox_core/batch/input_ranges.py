"""The ranges a job's values must lie in: the pack's own (offline), or a server's ``/object_info``.

A job sets node inputs (:func:`.workflow.node_settings`: TAB / ERAE overrides, seed, cfg, Stand-In
strength); ComfyUI refuses a prompt whose number lies outside the input's ``min``/``max`` or whose choice is
not in its list. The client checks the same before it queues anything, so that ``--check`` passes only
what the server will take:

- without a server, against the pack's ranges (:mod:`customvideox_core.ranges`, which the nodes declare),
  for the pack's nodes (ComfyUI's own samplers are then left to the server);
- with ``--check --server URL``, against what that server's ``/object_info/<class>`` declares for every
  node class the jobs set, the pack's and ComfyUI's alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..ranges import (
    ERAE_STRENGTH,
    ERAE_THRESHOLD,
    GUIDANCE_SCALE,
    STANDIN_STRENGTH,
    TAB_LEVEL,
    TAB_PROGRESS,
    Bounds,
)
from ..tab import TAB_SHAPES
from .jobs import Job
from .workflow import APPLY_STANDIN, ERAE_MASK, TIME_AWARE_BIAS, ApiWorkflow, WorkflowTargets, node_settings

InputKey = tuple[str, str]
"""``(node class, input name)``."""


@dataclass(frozen=True)
class InputRanges:
    """What each ``(node class, input)`` accepts, and where that was read (``source``, for messages)."""

    source: str
    numbers: Mapping[InputKey, Bounds] = field(default_factory=dict)
    choices: Mapping[InputKey, tuple[str, ...]] = field(default_factory=dict)


PACK_RANGES = InputRanges(
    source="the pack's node definition",
    numbers={
        (TIME_AWARE_BIAS, "peak"): TAB_LEVEL,
        (TIME_AWARE_BIAS, "floor"): TAB_LEVEL,
        (TIME_AWARE_BIAS, "start"): TAB_PROGRESS,
        (TIME_AWARE_BIAS, "end"): TAB_PROGRESS,
        (ERAE_MASK, "strength"): ERAE_STRENGTH,
        (ERAE_MASK, "threshold"): ERAE_THRESHOLD,
        ("CustomVideoXSample", "cfg"): GUIDANCE_SCALE,
        (APPLY_STANDIN, "strength"): STANDIN_STRENGTH,
    },
    choices={(TIME_AWARE_BIAS, "shape"): TAB_SHAPES},
)
"""The pack's nodes' ranges for the inputs a job can set (used when no server is asked)."""


def ranges_from_object_info(object_info: Mapping[str, object], source: str) -> InputRanges:
    """The number ranges and choice lists in ComfyUI's ``/object_info`` answer (``{class: info}``).

    ``info["input"]["required" | "optional"][name]`` is ``["FLOAT" | "INT", {"min", "max", ...}]``, or a
    choice list: ``[[choices...], {...}]`` or ``["COMBO", {"options": [...]}]``.
    """
    numbers: dict[InputKey, Bounds] = {}
    choices: dict[InputKey, tuple[str, ...]] = {}
    for node_class, info in object_info.items():
        inputs = info.get("input") if isinstance(info, Mapping) else None
        for section in ("required", "optional"):
            declared = inputs.get(section) if isinstance(inputs, Mapping) else None
            for name, spec in (declared or {}).items() if isinstance(declared, Mapping) else ():
                if not isinstance(spec, list | tuple) or not spec:
                    continue
                kind, options = spec[0], spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
                if (
                    kind in ("FLOAT", "INT")
                    and _is_number(options.get("min"))
                    and _is_number(options.get("max"))
                ):
                    numbers[(node_class, name)] = Bounds(float(options["min"]), float(options["max"]))
                listed = (
                    kind if isinstance(kind, list) else options.get("options") if kind == "COMBO" else None
                )
                if isinstance(listed, list):
                    choices[(node_class, name)] = tuple(str(choice) for choice in listed)
    return InputRanges(source=source, numbers=numbers, choices=choices)


def setting_classes(workflow: ApiWorkflow, targets: WorkflowTargets) -> list[str]:
    """The node classes whose inputs a job can set (what to ask ``/object_info`` about), sorted."""
    return sorted({workflow[node_id]["class_type"] for node_id in targets.setting_nodes})


def job_range_errors(
    workflow: ApiWorkflow, targets: WorkflowTargets, job: Job, ranges: InputRanges
) -> list[str]:
    """Every value of ``job`` that the node input it sets would refuse (empty when all fit)."""
    errors: list[str] = []
    for setting in node_settings(targets, job):
        key = (workflow[setting.node_id]["class_type"], setting.input)
        label = f"{key[0]}.{key[1]}"
        bounds = ranges.numbers.get(key)
        if bounds is not None and setting.value not in bounds:
            message = (
                f"{setting.column} {setting.value!r} is outside {label}'s range {bounds} ({ranges.source}); "
                f"give a value from {bounds.low:g} to {bounds.high:g}"
            )
        elif key in ranges.choices and setting.value not in ranges.choices[key]:
            message = (
                f"{setting.column} {setting.value!r} is not one of {label}'s choices "
                f"({', '.join(ranges.choices[key])}; {ranges.source})"
            )
        else:
            continue
        if message not in errors:  # a value set on several nodes of one class is reported once
            errors.append(message)
    return errors


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
