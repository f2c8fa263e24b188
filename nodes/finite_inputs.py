"""Every float input of a pack node refuses NaN and infinity before the node runs.

ComfyUI's range check lets NaN through (``NaN < min`` and ``NaN > max`` are both false), and a prompt sent
over the API may hold ``NaN`` or ``Infinity``. :func:`finite_float_inputs` wraps a node's ``execute`` so
that each of its ``io.Float`` inputs is checked (``customvideox_core.finite.check_finite_number``) and a
bad one is refused with the node, the input and its range. The float inputs are read from the node's own
schema, so an input added later is covered without a change here. (``validate_inputs`` is not used: a
node that defines it switches off ComfyUI's own min/max and combo checks for the inputs it takes.)
"""

from __future__ import annotations

import functools
import inspect

from comfy_api.latest import io

from ..customvideox_core.finite import check_finite_number


def float_input_ranges(node: type[io.ComfyNode]) -> dict[str, tuple[float | None, float | None]]:
    """``{input id: (min, max)}`` of the node's ``io.Float`` inputs, from its schema."""
    return {
        item.id: (item.min, item.max)
        for item in node.define_schema().inputs
        if isinstance(item, io.Float.Input)
    }


def finite_float_inputs(node: type[io.ComfyNode]) -> type[io.ComfyNode]:
    """Class decorator: ``node.execute`` first refuses a NaN or infinite value of any float input
    (given by name, as ComfyUI passes inputs, or by position)."""
    original = node.__dict__["execute"].__func__
    signature = inspect.signature(original)

    @functools.cache
    def checked() -> tuple[str, dict[str, tuple[float | None, float | None]]]:
        """The node's title and float inputs, read from its schema on first use (not at import)."""
        return node.define_schema().display_name or node.__name__, float_input_ranges(node)

    @functools.wraps(original)
    def execute(cls, *args, **kwargs):
        title, ranges = checked()
        given = dict(signature.bind_partial(cls, *args, **kwargs).arguments)
        for parameter in signature.parameters.values():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:  # ``**widgets``: inputs by name too
                given.update(given.pop(parameter.name, {}))
        for name, (low, high) in ranges.items():
            if name in given:
                check_finite_number(given[name], name, owner=title, low=low, high=high)
        return original(cls, *args, **kwargs)

    node.execute = classmethod(execute)
    return node
