"""Model folders the pack registers in ComfyUI's ``folder_paths``, all in one way."""

from __future__ import annotations

import os
from collections.abc import Iterable

import folder_paths


def register_folder(name: str, extensions: Iterable[str]) -> None:
    """``models/<name>`` for files ending in ``extensions`` (none: any file); idempotent. Where the folder
    is already registered (by the user's ``extra_model_paths.yaml`` or another pack) its paths are kept and
    the default path and extensions are added to them."""
    default = os.path.join(folder_paths.models_dir, name)
    if name in folder_paths.folder_names_and_paths:
        paths, known = folder_paths.folder_names_and_paths[name]
        if default not in paths:
            paths.append(default)
        if isinstance(known, set):
            known.update(extensions)
        return
    folder_paths.folder_names_and_paths[name] = ([default], set(extensions))
