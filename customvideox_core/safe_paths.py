"""Names and paths that come from a prompt: plain file names, and folders confined to allowed roots.

Anything that reaches the disk from ComfyUI's API (a widget value any HTTP client can set) goes through
here first. The rules (also in the README's troubleshooting):

- **File names** the pack writes (``adapter_name``) are plain names by an allow-list of characters:
  ASCII letters, digits, space, ``-``, ``_`` and ``.``; at most :data:`MAX_NAME_LENGTH` characters; not
  starting with a dot or a space, not ending with a dot or a space (Windows drops them), and not a name
  Windows reserves (``CON``, ``NUL``, ``COM1`` …, with or without an extension). The same rule holds on
  every OS, so ``C:evil``, ``a/b``, ``a\\b`` and names holding a newline are refused everywhere.
- **Folders** (``dataset_path``) are names *relative to an allowed root* (ComfyUI's input folder, and
  every folder registered as ``customvideox_datasets``), tried in the order given. ``..`` parts, ``~``,
  drive letters and NUL are refused before the disk is touched. An absolute path is accepted only when
  it already lies inside an allowed root (so a path copied from the file manager works); any other
  absolute path is refused the same way whether it exists or not. After resolving links the folder must
  still lie inside the root it was found in: a link that leads out is refused.
- **Errors never echo the disk**: a refusal names the rule and the value the user typed, never the
  roots' absolute paths or what a folder holds, and says the same for a missing folder and a forbidden
  one outside the roots (no probing).

Torch-free and host-free: the node passes ComfyUI's folders in as :class:`AllowedRoot`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

MAX_NAME_LENGTH = 128
NAME_CHARACTERS = "ASCII letters, digits, spaces, '-', '_' and '.'"
_NAME_PATTERN = re.compile(r"[A-Za-z0-9 _.\-]+")
WINDOWS_RESERVED_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{device}{index}" for device in ("COM", "LPT") for index in (*"123456789", "¹", "²", "³")}
)
_PATH_PART = re.compile(r"[^/\\]+")


class UnsafeNameError(ValueError):
    """A name or path from a prompt that the pack's rules refuse (see the module docstring)."""


@dataclass(frozen=True)
class AllowedRoot:
    """A folder the server owner chose, and how messages call it (``"ComfyUI's input folder"``)."""

    label: str
    path: Path


def plain_file_name(name: str, *, what: str, where: str) -> str:
    """``name`` stripped of surrounding whitespace, if it is a plain file name by the rules above.

    ``what`` names the input in the message (``"adapter_name"``), ``where`` the folder the file goes to
    (``"models/customvideox"``). Raises :class:`UnsafeNameError` saying which rule failed.
    """
    if not isinstance(name, str):
        raise UnsafeNameError(f"{what} must be text, got {type(name).__name__}")
    stripped = name.strip()
    problem = _name_problem(stripped)
    if problem:
        shown = ascii(name) if len(name) <= MAX_NAME_LENGTH + 8 else ascii(name[:MAX_NAME_LENGTH]) + "..."
        raise UnsafeNameError(
            f"{what} {shown} is not a plain file name ({problem}); use only {NAME_CHARACTERS}, at most "
            f"{MAX_NAME_LENGTH} characters, not starting with a dot (the file goes into {where})"
        )
    return stripped


def _name_problem(name: str) -> str | None:
    if not name:
        return "it is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"it is {len(name)} characters long"
    if not _NAME_PATTERN.fullmatch(name):
        bad = sorted({char for char in name if not _NAME_PATTERN.fullmatch(char)})
        return "it holds " + ", ".join(ascii(char) for char in bad[:5])
    if name.startswith("."):
        return "it starts with a dot"
    if name.endswith((".", " ")):
        return "it ends with a dot or a space"
    if name.split(".")[0].rstrip(" ").upper() in WINDOWS_RESERVED_NAMES:
        return "Windows reserves that name"
    return None


def confined_folder(text: str, roots: Sequence[AllowedRoot], *, what: str) -> Path:
    """The existing folder ``text`` names inside one of ``roots`` (resolved, links followed).

    ``text``: relative to a root (tried in order, the first that holds the folder wins), or absolute
    inside a root. Raises :class:`UnsafeNameError` for anything the rules refuse, and
    :class:`NotADirectoryError` when no root holds the folder; neither message names the roots' paths
    or anything on disk.
    """
    if not roots:
        raise UnsafeNameError(f"no folder is allowed for {what}; the server has none registered")
    allowed = _allowed_text(roots)
    if not isinstance(text, str) or not text.strip():
        raise UnsafeNameError(f"{what} is empty; give a folder inside {allowed}")
    stripped = text.strip()
    _refuse_unsafe_text(stripped, what=what, allowed=allowed)
    for root in roots:
        base = _resolved(root.path)
        if base is None:
            continue
        if _is_absolute(stripped):
            candidate = Path(os.path.abspath(stripped))
            if not (_inside(candidate, Path(os.path.abspath(root.path))) or _inside(candidate, base)):
                continue  # decided on the text alone: nothing outside the roots is looked at
        else:
            candidate = root.path / stripped
        resolved = _resolved(candidate)
        if resolved is None or not resolved.is_dir():
            continue
        if not _inside(resolved, base):
            raise UnsafeNameError(
                f"{what} {ascii(stripped)} leads outside {root.label} through a link; links out of the "
                f"allowed folders are refused. Copy or move the dataset into {allowed}"
            )
        return resolved
    if _is_absolute(stripped):
        raise UnsafeNameError(
            f"{what} {ascii(stripped)} is not a folder inside {allowed}; other absolute paths are refused. "
            "Put the dataset in one of those folders and give its name relative to it"
        )
    raise NotADirectoryError(
        f"{what} {ascii(stripped)}: no such folder in {allowed}; give the folder's name relative to one of "
        "them (see docs/TRAINING.md for the layout)"
    )


def is_inside(path: Path, root: Path) -> bool:
    """Whether ``path`` lies in ``root`` (or is it) once both are resolved; False when either cannot be."""
    resolved, base = _resolved(path), _resolved(root)
    return resolved is not None and base is not None and _inside(resolved, base)


def _refuse_unsafe_text(text: str, *, what: str, allowed: str) -> None:
    shown = ascii(text) if len(text) <= 200 else ascii(text[:200]) + "..."
    problem = None
    if any(char in text for char in "\0\r\n"):
        problem = "it holds a NUL or a line break"
    elif text.startswith("~"):
        problem = "'~' (a home folder) is not allowed"
    elif ".." in _PATH_PART.findall(text):
        problem = "'..' parts are not allowed"
    elif PureWindowsPath(text).drive and not (os.name == "nt" and PureWindowsPath(text).is_absolute()):
        problem = "drive letters and network shares are not allowed here"
    if problem:
        raise UnsafeNameError(f"{what} {shown} is refused ({problem}); give a folder inside {allowed}")


def file_in_the_way(path: Path) -> Path | None:
    """The nearest parent of ``path`` that exists but is not a folder (so ``path`` cannot be created
    under it), or ``None`` when there is none."""
    return next((parent for parent in Path(path).parents if parent.exists() and not parent.is_dir()), None)


def _allowed_text(roots: Sequence[AllowedRoot]) -> str:
    labels = list(dict.fromkeys(root.label for root in roots))
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " or " + labels[-1]


def _is_absolute(text: str) -> bool:
    return Path(text).is_absolute() or PurePosixPath(text).is_absolute()


def _resolved(path: Path) -> Path | None:
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
