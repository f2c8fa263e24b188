"""Names and paths from a prompt: the allow-list for file names, and folders confined to allowed roots.

The oracle is the rule itself, written out per case: which inputs are accepted (and what they resolve
to, compared with the folder the test made) and which are refused (the message names the rule, and never
a file on disk or a root's path).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from customvideox_core.safe_paths import (
    AllowedRoot,
    UnsafeNameError,
    confined_folder,
    is_inside,
    plain_file_name,
)

SECRET = "secret_file_name_on_disk.txt"


# ---------------------------------------------------------------------------------------------------
# File names
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["my_subject", "my subject", "v1.2-final", "A", "x" * 128, "  padded  "])
def test_plain_names_are_accepted(name) -> None:
    assert plain_file_name(name, what="adapter_name", where="models/customvideox") == name.strip()


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("C:evil", "':'"),
        ("evil\nname", "'\\n'"),
        ("a/b", "'/'"),
        ("a\\b", "'\\\\'"),
        ("../up", "'/'"),
        (".hidden", "starts with a dot"),
        ("..", "starts with a dot"),
        ("trailing.", "ends with a dot"),
        ("", "empty"),
        ("   ", "empty"),
        ("x" * 129, "129 characters"),
        ("CON", "Windows reserves"),
        ("nul.txt", "Windows reserves"),
        ("com1", "Windows reserves"),
        ("LPT9 .x", "Windows reserves"),
        ("caf\u00e9", "'\\xe9'"),
        ("a\0b", "'\\x00'"),
        ("a*b?", "'*', '?'"),
    ],
)
def test_unsafe_names_are_refused_with_the_rule(name, rule) -> None:
    with pytest.raises(UnsafeNameError) as caught:
        plain_file_name(name, what="adapter_name", where="models/customvideox")
    message = str(caught.value)
    assert rule in message
    assert "adapter_name" in message and "models/customvideox" in message
    assert "\n" not in message  # a newline in the name is shown escaped, not echoed raw


# ---------------------------------------------------------------------------------------------------
# Folders
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def disk(tmp_path) -> dict[str, Path]:
    """An input root with a dataset, a registered second root, and an outside folder holding a secret."""
    paths = {name: tmp_path / name for name in ("input", "datasets", "outside")}
    for path in paths.values():
        path.mkdir()
    (paths["input"] / "dogs" / "sub").mkdir(parents=True)
    (paths["datasets"] / "cats").mkdir()
    (paths["datasets"] / "dogs").mkdir()
    (paths["outside"] / SECRET).write_text("private")
    return paths


def roots_of(disk) -> list[AllowedRoot]:
    return [
        AllowedRoot("ComfyUI's input folder", disk["input"]),
        AllowedRoot("a datasets folder", disk["datasets"]),
    ]


def refused_text(disk, text: str, error=UnsafeNameError) -> str:
    with pytest.raises(error) as caught:
        confined_folder(text, roots_of(disk), what="dataset_path")
    message = str(caught.value)
    assert SECRET not in message
    for path in disk.values():
        assert str(path) not in message or str(path) in text  # only the user's own text is echoed
    return message


def test_relative_names_resolve_inside_the_roots_in_order(disk) -> None:
    roots = roots_of(disk)
    assert confined_folder("dogs", roots, what="dataset_path") == (disk["input"] / "dogs").resolve()
    assert (
        confined_folder("dogs/sub", roots, what="dataset_path") == (disk["input"] / "dogs" / "sub").resolve()
    )
    assert confined_folder(" cats ", roots, what="dataset_path") == (disk["datasets"] / "cats").resolve()


def test_absolute_paths_inside_a_root_are_accepted(disk) -> None:
    path = disk["datasets"] / "cats"
    assert confined_folder(str(path), roots_of(disk), what="dataset_path") == path.resolve()


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("../outside", "'..'"),
        ("dogs/../../outside", "'..'"),
        ("..\\outside", "'..'"),
        ("~", "'~'"),
        ("~/.ssh", "'~'"),
        ("C:evil", "drive"),
        ("\\\\server\\share", "drive"),
        ("dogs\nx", "line break"),
        ("dogs\0", "NUL"),
        ("", "empty"),
    ],
)
def test_escapes_are_refused_before_the_disk_is_read(disk, text, rule) -> None:
    assert rule in refused_text(disk, text)


def test_absolute_paths_outside_the_roots_are_refused_alike_whether_they_exist_or_not(disk) -> None:
    existing = refused_text(disk, str(disk["outside"]))
    missing = refused_text(disk, str(disk["outside"] / "nothing_here"))
    assert existing.replace(str(disk["outside"]), "<p>") == missing.replace(
        str(disk["outside"] / "nothing_here"), "<p>"
    )
    assert "absolute paths are refused" in existing
    assert "/etc" in refused_text(disk, "/etc")


def test_a_missing_relative_folder_names_the_roots_by_label_only(disk) -> None:
    message = refused_text(disk, "nowhere", NotADirectoryError)
    assert "ComfyUI's input folder or a datasets folder" in message


@pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")
def test_links_out_of_a_root_are_refused(disk) -> None:
    (disk["input"] / "escape").symlink_to(disk["outside"], target_is_directory=True)
    assert "through a link" in refused_text(disk, "escape")
    (disk["input"] / "inside").symlink_to(disk["datasets"] / "cats", target_is_directory=True)
    assert "through a link" in refused_text(disk, "inside")  # a link into another root still leaves its own


def test_no_roots_means_nothing_is_allowed(disk) -> None:
    with pytest.raises(UnsafeNameError, match="no folder is allowed"):
        confined_folder("dogs", [], what="dataset_path")


@pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")
def test_is_inside_follows_links(disk) -> None:
    link = disk["input"] / "link"
    link.symlink_to(disk["outside"] / SECRET)
    assert not is_inside(link, disk["input"])
    assert is_inside(disk["input"] / "dogs" / "sub", disk["input"])
    assert not is_inside(disk["input"] / "missing", disk["input"])
