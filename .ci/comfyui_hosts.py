"""Build (or reuse) the real ComfyUI installations the host tier runs against.

Stdlib only; run with any Python 3.10+:

    python3 .ci/comfyui_hosts.py setup            # every host below, cached under ~/.cache/customvideox
    python3 .ci/comfyui_hosts.py shell 0.33.0     # prints `export ...` lines for one host

Each host is a ComfyUI source tree at a pinned commit plus the Python that runs it:

- the tree comes from the archive in ``../shared/comfyui/`` (this project's machines) or, where no
  archive is present, from a clone of ComfyUI at the pinned commit;
- one virtual environment (``venv``) serves every tree: torch, ComfyUI 0.33.0's requirements without
  its torch lines and torchsde, with this pack's requirements (``PACK_REQUIREMENTS``: the pack's, the
  test tools and the optional FaceSim runtime, so its tests run here) installed into it on every setup; a tree
  whose exact ``==`` pins of the packages in ``OVERLAY_PACKAGES`` (the frontend, comfy-aimdo,
  comfy-kitchen) differ from 0.33.0's gets those in an overlay folder put first on ``PYTHONPATH``, so
  each tree runs with the frontend and helpers it was released with.

Everything is built in a temporary folder and renamed into place when complete, so an interrupted
setup is rebuilt, never half-reused. The cache key of the environment is a hash of the Python version,
torch's pins, the extra requirements (torchsde) and ComfyUI's requirements (the pack's own requirements are installed on every setup, so
changing them never forces a rebuild). Any failure exits non-zero: CI never skips the host tier because the setup broke.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

LOG = logging.getLogger("comfyui_hosts")

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("CVX_CACHE_DIR", Path.home() / ".cache" / "customvideox"))
ARCHIVE_DIR = Path(os.environ.get("CVX_COMFYUI_ARCHIVES", REPO_ROOT.parent / "shared" / "comfyui"))
CLONE_URL = "https://github.com/Comfy-Org/ComfyUI.git"

# The torch that runs every tree on a CPU-only machine (CUDA builds run on the CPU with --cpu).
TORCH_PINS = ("torch==2.11.0", "torchvision==0.26.0", "torchaudio==2.11.0")
# Requirement lines of ComfyUI that the environment takes from TORCH_PINS instead.
TORCH_NAMES = frozenset({"torch", "torchvision", "torchaudio"})
EXTRA_REQUIREMENTS = ("torchsde",)
# Exact pins a tree may differ in from the reference release and gets in its own overlay: the frontend
# its workflows open in, and the native helpers its Python code calls. (Template and docs packages are
# content only and stay at the reference release's versions.)
OVERLAY_PACKAGES = frozenset({"comfyui-frontend-package", "comfy-aimdo", "comfy-kitchen"})


@dataclass(frozen=True)
class Host:
    """One ComfyUI release the host tier runs against.

    ``tests`` are the pytest arguments for this host (the README's ``python -m pytest`` for the
    reference release).
    """

    name: str
    commit: str
    archive: str
    role: str
    tests: tuple[str, ...]

    @property
    def tree(self) -> Path:
        return CACHE_DIR / f"ComfyUI-{self.name}"

    @property
    def overlay(self) -> Path:
        return CACHE_DIR / f"overlay-{self.name}"


# The reference release comes first: its requirements define the shared environment.
HOSTS = (
    Host(
        name="0.33.0",
        commit="2f35f4a08176d993cded35dac3332be4f7287f41",
        archive="ComfyUI-0.33.0.tar.gz",
        role="the release the example workflows are saved from: everything, the browser test included",
        tests=(),
    ),
    Host(
        name="0.21.0",
        commit="52976f3ea33cc2312c7b5a32e1c7510b203eefb6",
        archive="ComfyUI-0.21.0.tar.gz",
        role="the declared minimum (requires-comfyui): the pack's nodes",
        tests=(
            "tests/host",
            "--ignore=tests/host/test_workflows.py",
            "--ignore=tests/host/test_browser.py",
        ),
    ),
    Host(
        name="main-2026-08-22",
        commit="783545f689a0af730065994b46b382ae24844c99",
        archive="ComfyUI-main-2026-08-22.tar.gz",
        role="the newest source here: forward compatibility, all but what is pinned to 0.33's core nodes",
        tests=("tests/host", "-m", "not pinned_core_schemas"),
    ),
)
REFERENCE = HOSTS[0]


def host_named(name: str) -> Host:
    for host in HOSTS:
        if host.name == name:
            return host
    raise SystemExit(f"unknown ComfyUI host {name!r}; known: {', '.join(h.name for h in HOSTS)}")


def run(*command: str | Path) -> None:
    LOG.info("$ %s", shlex.join(str(part) for part in command))
    subprocess.run([str(part) for part in command], check=True)


def ensure_tree(host: Host) -> None:
    """Put the source of ``host`` at ``host.tree`` (unpacked archive, or a clone at the commit)."""
    if (host.tree / "comfyui_version.py").is_file():
        return
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tree-{host.name}-", dir=CACHE_DIR))
    try:
        archive = ARCHIVE_DIR / host.archive
        if archive.is_file():
            LOG.info("unpacking %s", archive)
            with tarfile.open(archive) as tar:
                tar.extractall(staging, filter="data")
            (unpacked,) = [p for p in staging.iterdir() if p.is_dir()]
        else:
            LOG.info("no archive at %s: cloning ComfyUI at %s", archive, host.commit)
            unpacked = staging / "ComfyUI"
            run("git", "init", "-q", unpacked)
            run("git", "-C", unpacked, "fetch", "-q", "--depth=1", CLONE_URL, host.commit)
            run("git", "-C", unpacked, "checkout", "-q", "FETCH_HEAD")
        if not (unpacked / "comfyui_version.py").is_file():
            raise SystemExit(f"{host.name}: {unpacked} is not a ComfyUI source tree")
        shutil.rmtree(host.tree, ignore_errors=True)
        unpacked.rename(host.tree)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def requirement_lines(path: Path) -> list[str]:
    """The requirement lines of a requirements file, comments and blanks dropped."""
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def requirement_name(line: str) -> str:
    for separator in ("==", ">=", "<=", "~=", "!=", ">", "<", "[", ";", " "):
        line = line.split(separator, 1)[0]
    return line.strip().lower().replace("_", "-")


def comfy_requirements(host: Host) -> list[str]:
    return [
        line
        for line in requirement_lines(host.tree / "requirements.txt")
        if requirement_name(line) not in TORCH_NAMES
    ]


def overlay_pins(host: Host) -> list[str]:
    """The exact pins of ``host`` that differ from the reference release's (its overlay)."""
    reference = {requirement_name(line): line for line in comfy_requirements(REFERENCE)}
    return [
        line
        for line in comfy_requirements(host)
        if "==" in line
        and requirement_name(line) in OVERLAY_PACKAGES
        and reference.get(requirement_name(line)) != line
    ]


def environment_key() -> str:
    digest = hashlib.sha256()
    digest.update(sys.version.encode())
    for part in (*TORCH_PINS, *EXTRA_REQUIREMENTS, *comfy_requirements(REFERENCE)):
        digest.update(part.encode() + b"\n")
    return digest.hexdigest()[:16]


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def pip_install(venv: Path, *arguments: str | Path) -> None:
    run(venv_python(venv), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *arguments)


def ensure_venv() -> Path:
    """The shared environment, rebuilt when torch or ComfyUI's requirements changed.

    This pack's own requirements are installed on every setup (a no-op when satisfied), so a change of
    them never forces the multi-GB rebuild.
    """
    venv = CACHE_DIR / "venv"
    marker = venv / "cvx-environment-key"
    key = environment_key()
    if marker.is_file() and marker.read_text().strip() == key and venv_python(venv).exists():
        install_pack_requirements(venv)
        return venv
    LOG.info("building the ComfyUI environment at %s (key %s)", venv, key)
    shutil.rmtree(venv, ignore_errors=True)
    run(sys.executable, "-m", "venv", venv)
    pip_install(venv, *TORCH_PINS)
    with tempfile.TemporaryDirectory() as scratch:
        requirements = Path(scratch) / "comfyui-requirements.txt"
        requirements.write_text("\n".join(comfy_requirements(REFERENCE)) + "\n")
        pip_install(venv, "-c", torch_constraints(), "-r", requirements, *EXTRA_REQUIREMENTS)
    install_pack_requirements(venv)
    marker.write_text(key + "\n")
    return venv


def torch_constraints() -> Path:
    """A constraints file holding TORCH_PINS (so no later install moves torch)."""
    path = CACHE_DIR / "torch-constraints.txt"
    path.write_text("\n".join(TORCH_PINS) + "\n")
    return path


PACK_REQUIREMENTS = ("requirements.txt", "requirements-dev.txt", "requirements-face.txt")
"""The pack's requirement files the host environment holds: the pack's own, the test tools, and the
optional dependency of FaceSim (onnxruntime), which the host tier tests with."""


def install_pack_requirements(venv: Path) -> None:
    files = [argument for name in PACK_REQUIREMENTS for argument in ("-r", REPO_ROOT / name)]
    pip_install(venv, "-c", torch_constraints(), *files)


def ensure_overlay(host: Host, venv: Path) -> None:
    pins = overlay_pins(host)
    marker = host.overlay / "cvx-overlay-pins"
    wanted = "\n".join(pins) + "\n"
    if marker.is_file() and marker.read_text() == wanted:
        return
    shutil.rmtree(host.overlay, ignore_errors=True)
    host.overlay.mkdir(parents=True)
    if pins:
        LOG.info("%s: overlay %s", host.name, ", ".join(pins))
        pip_install(venv, "--no-deps", "--target", host.overlay, *pins)
    marker.write_text(wanted)


def setup() -> None:
    for host in HOSTS:
        ensure_tree(host)
    venv = ensure_venv()
    for host in HOSTS:
        ensure_overlay(host, venv)
    run(venv_python(venv), "-c", "import torch, aiohttp, einops, peft; print('torch', torch.__version__)")


def shell(name: str) -> None:
    """Print the environment of one host as shell assignments (for ``eval`` in .ci/run)."""
    host = host_named(name)
    values = {
        "COMFYUI_PATH": str(host.tree),
        "COMFYUI_PYTHON": str(venv_python(CACHE_DIR / "venv")),
        "CVX_HOST_PYTHONPATH": str(host.overlay),
        "CVX_HOST_TESTS": shlex.join(host.tests),
        "CVX_HOST_ROLE": host.role,
    }
    for variable, value in values.items():
        sys.stdout.write(f"{variable}={shlex.quote(value)}\n")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[comfyui_hosts] %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("setup", help="unpack or clone every host and build the environment")
    commands.add_parser("names", help="list the hosts, reference first")
    shell_parser = commands.add_parser("shell", help="print one host's environment as shell assignments")
    shell_parser.add_argument("name")
    arguments = parser.parse_args()
    if arguments.command == "setup":
        setup()
    elif arguments.command == "names":
        for host in HOSTS:
            sys.stdout.write(host.name + "\n")
    else:
        shell(arguments.name)


if __name__ == "__main__":
    main()
