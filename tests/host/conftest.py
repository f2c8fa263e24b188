"""Host tier: tests that run the pack inside a real ComfyUI (``COMFYUI_PATH``), marked ``comfy``.

Every test under ``tests/host`` gets the ``comfy`` marker. When ``COMFYUI_PATH`` is unset or invalid,
or ComfyUI cannot be imported by this interpreter (e.g. the unit-tier venv has no aiohttp), they are
skipped with one line saying so, unless ``CVX_REQUIRE_COMFYUI=1`` (CI sets it for the host tier): then
the session stops with that reason and a non-zero exit. Test modules must not import ComfyUI at import time — only inside
fixtures and tests — because they are collected by the unit-tier interpreter too.

Fixtures (all session-scoped unless noted):

- ``comfyui_path`` → ``Path`` of the checkout.
- ``comfy_host`` → ``harness.ComfyHost``: ComfyUI in-process with core nodes, our pack and the fixture
  pack loaded; ``run_graph(api_prompt, capture=...)``, ``node_class(id)``, ``models_dir``...
- ``pack_module`` → our pack's module as ComfyUI loaded it. Skips while ``nodes/extension.py`` does
  not exist yet; *fails* with ComfyUI's traceback if the pack exists but does not import.
- ``pack`` → ``nodes_support.Pack``, the pack's modules as ComfyUI loaded them; ``vae`` → the tiny
  TAEHV VAE loaded with ComfyUI's own class.
- ``tiny_models`` → ``TinyModels``: file names (as ``UNETLoader`` / ``VAELoader`` list them) of the tiny
  random-weight models written once into the host's ``models/diffusion_models`` and ``models/vae``.
- ``tiny_encoders`` → ``TinyEncoders``: file names (as ``models/clip_vision`` lists them) of a tiny CLIP
  vision model and a tiny DINOv2 (``tiny_models.write_tiny_clip_vision``), for the score node.
- ``comfy_server`` → a ready ``harness.ComfyServer`` sharing the host's models directory, killed at
  the end of the session. It is launched in the background during collection when any selected
  test uses it, so its startup overlaps the in-process tests. ``comfy_server_factory`` (function
  scope) starts extra servers, each with its own base directory.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import (
    REPO_ROOT,
    ComfyHost,
    ComfyServer,
    ComfyUnavailable,
    bootstrap_comfyui,
    comfyui_path_from_env,
)
from nodes_support import Pack, load_vae
from tiny_models import (
    COGVIDEOX_VARIANTS,
    TINY_CLIP_VISION_CONFIG,
    TINY_DINOV2_CONFIG,
    write_tiny_clip_vision,
    write_tiny_cogvideox,
    write_tiny_sd15_unet,
    write_tiny_vae,
    write_tiny_wan,
    write_tiny_wan_vace,
)

HOST_TESTS_DIR = Path(__file__).resolve().parent
REQUIRE_COMFYUI_VARIABLE = "CVX_REQUIRE_COMFYUI"
"""Set to 1 (CI does) to fail, not skip, when the host tier cannot import ComfyUI."""
_PROBE_KEY = pytest.StashKey["ComfyProbe"]()
_SERVER_KEY = pytest.StashKey[ComfyServer]()


@dataclass(frozen=True)
class ComfyProbe:
    """Result of importing ComfyUI once per session: a usable checkout and base dir, or why not."""

    comfyui_path: Path | None
    base_dir: Path | None
    reason: str | None


def _probe(config: pytest.Config, *, launch_server: bool = False) -> ComfyProbe:
    """Import ComfyUI in-process once per session (cached); optionally launch the session server first.

    Launching the server before the in-process import overlaps two ~10-20 s single-threaded
    import phases; the server is killed again if this interpreter turns out unable to run ComfyUI.
    """
    cached = config.stash.get(_PROBE_KEY, None)
    if cached is not None:
        return cached
    try:
        comfyui_path = comfyui_path_from_env()
    except ComfyUnavailable as unavailable:
        probe = ComfyProbe(None, None, str(unavailable))
    else:
        base_dir = Path(tempfile.mkdtemp(prefix="cvx-comfyui-base-"))
        if launch_server and importlib.util.find_spec("aiohttp") is not None:
            _session_server(config, comfyui_path, base_dir).start(wait=False)
        try:
            bootstrap_comfyui(comfyui_path, base_dir)
        except ComfyUnavailable as unavailable:
            server = config.stash.get(_SERVER_KEY, None)
            if server is not None:
                server.kill()
            shutil.rmtree(base_dir, ignore_errors=True)
            probe = ComfyProbe(None, None, str(unavailable))
        else:
            probe = ComfyProbe(comfyui_path, base_dir, None)
    config.stash[_PROBE_KEY] = probe
    return probe


def _is_host_test(item: pytest.Item) -> bool:
    return Path(str(item.path)).resolve().is_relative_to(HOST_TESTS_DIR)


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m deselection sees the items
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _is_host_test(item):
            item.add_marker(pytest.mark.comfy)
    comfy_items = [item for item in items if item.get_closest_marker("comfy") is not None]
    if not comfy_items:
        return
    wants_server = not config.option.collectonly and any(
        "comfy_server" in item.fixturenames for item in comfy_items
    )
    probe = _probe(config, launch_server=wants_server)
    if probe.reason is not None:
        if os.environ.get(REQUIRE_COMFYUI_VARIABLE) == "1":
            pytest.exit(
                f"{REQUIRE_COMFYUI_VARIABLE}=1 but the host tier cannot run: {probe.reason}", returncode=3
            )
        skip = pytest.mark.skip(reason=probe.reason)
        for item in comfy_items:
            item.add_marker(skip)


def _session_server(config: pytest.Config, comfyui_path: Path, base_dir: Path) -> ComfyServer:
    """The session's server (created once, not started): own base dir, the host's models directory."""
    server = config.stash.get(_SERVER_KEY, None)
    if server is None:
        models_dir = base_dir / "models"  # what folder_paths.models_dir is under --base-directory
        (models_dir / "diffusion_models").mkdir(parents=True, exist_ok=True)
        (models_dir / "vae").mkdir(parents=True, exist_ok=True)
        server = ComfyServer(comfyui_path, base_dir / "session_server", models_dir=models_dir)
        config.stash[_SERVER_KEY] = server
    return server


def pytest_unconfigure(config: pytest.Config) -> None:
    server = config.stash.get(_SERVER_KEY, None)
    if server is not None:
        server.kill()
    probe = config.stash.get(_PROBE_KEY, None)
    if probe is not None and probe.base_dir is not None:
        shutil.rmtree(probe.base_dir, ignore_errors=True)


def _available_probe(config: pytest.Config) -> ComfyProbe:
    probe = _probe(config)
    if probe.reason is not None:
        pytest.skip(probe.reason)
    return probe


@pytest.fixture(scope="session")
def comfyui_path(pytestconfig: pytest.Config) -> Path:
    return _available_probe(pytestconfig).comfyui_path


@pytest.fixture(scope="session")
def comfy_host(pytestconfig: pytest.Config) -> Iterator[ComfyHost]:
    probe = _available_probe(pytestconfig)
    host = ComfyHost(probe.comfyui_path, probe.base_dir)
    yield host
    host.close()


@pytest.fixture(scope="session")
def pack_module(comfy_host: ComfyHost):
    """Our pack's module; skip while the pack's ``nodes/extension.py`` is not written yet."""
    if comfy_host.pack_module is not None:
        return comfy_host.pack_module
    if not (REPO_ROOT / "nodes" / "extension.py").exists():
        pytest.skip("pack not ready: nodes/extension.py does not exist yet, so ComfyUI cannot load the pack")
    pytest.fail(f"ComfyUI could not load the pack at {REPO_ROOT}:\n{comfy_host.pack.log}")


@dataclass(frozen=True)
class TinyModels:
    """File names of the tiny models, as ComfyUI's loaders list them."""

    cogvideox: dict[str, str]
    """Variant ("5b", "2b", "1.5") → ``diffusion_models`` file name."""
    wan: str
    wan_vace: str
    """A Wan 2.1 VACE file (``WAN21_Vace``) of the tiny Wan's sizes."""
    sd15: str
    vae: str
    """A ``vae`` file name (TAEHV, 16 latent channels)."""
    diffusion_models_dir: Path
    vae_dir: Path


@pytest.fixture(scope="session")
def tiny_models(comfy_host: ComfyHost) -> TinyModels:
    diffusion_models_dir = comfy_host.models_dir / "diffusion_models"
    vae_dir = comfy_host.models_dir / "vae"
    cogvideox = {}
    for variant in COGVIDEOX_VARIANTS:
        name = f"cvx_tiny_cogvideox_{variant.replace('.', '_')}.safetensors"
        write_tiny_cogvideox(diffusion_models_dir / name, variant=variant, seed=1)
        cogvideox[variant] = name
    write_tiny_wan(diffusion_models_dir / "cvx_tiny_wan21_t2v.safetensors", seed=2)
    write_tiny_wan_vace(diffusion_models_dir / "cvx_tiny_wan21_vace.safetensors", seed=5)
    write_tiny_sd15_unet(diffusion_models_dir / "cvx_tiny_sd15_unet.safetensors", seed=3)
    write_tiny_vae(vae_dir / "cvx_tiny_taehv.safetensors", seed=4)
    return TinyModels(
        cogvideox=cogvideox,
        wan="cvx_tiny_wan21_t2v.safetensors",
        wan_vace="cvx_tiny_wan21_vace.safetensors",
        sd15="cvx_tiny_sd15_unet.safetensors",
        vae="cvx_tiny_taehv.safetensors",
        diffusion_models_dir=diffusion_models_dir,
        vae_dir=vae_dir,
    )


@dataclass(frozen=True)
class TinyEncoders:
    """File names of the tiny image encoders in the host's ``models/clip_vision``."""

    clip_vision: str
    dinov2: str
    folder: Path


@pytest.fixture(scope="session")
def tiny_encoders(comfy_host: ComfyHost) -> TinyEncoders:
    folder = comfy_host.models_dir / "clip_vision"
    clip_name, dino_name = "cvx_tiny_clip_vision.safetensors", "cvx_tiny_dinov2.safetensors"
    write_tiny_clip_vision(folder / clip_name, config=TINY_CLIP_VISION_CONFIG, seed=5)
    write_tiny_clip_vision(folder / dino_name, config=TINY_DINOV2_CONFIG, seed=6)
    return TinyEncoders(clip_vision=clip_name, dinov2=dino_name, folder=folder)


@pytest.fixture
def comfy_server_factory(
    comfyui_path: Path, tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., ComfyServer]]:
    """Start extra servers (each with its own base dir, sharing the tiny models); all killed afterwards."""
    servers: list[ComfyServer] = []

    def start(**options) -> ComfyServer:
        options.setdefault("models_dir", tiny_models.diffusion_models_dir.parent)
        server = ComfyServer(comfyui_path, tmp_path_factory.mktemp("comfy_server"), **options)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.kill()


@pytest.fixture(scope="session")
def comfy_server(pytestconfig: pytest.Config, tiny_models: TinyModels) -> Iterator[ComfyServer]:
    """The session's server (launched during collection when a test asks for it), ready."""
    probe = _available_probe(pytestconfig)
    server = _session_server(pytestconfig, probe.comfyui_path, probe.base_dir)
    if server.models_dir != tiny_models.diffusion_models_dir.parent:
        pytest.fail(
            f"server models dir {server.models_dir} is not the host's {tiny_models.diffusion_models_dir.parent}"
        )
    if not server.running:
        server.start(wait=False)
    server.wait_until_ready()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def pack(pack_module) -> Pack:
    """The pack's modules as ComfyUI loaded them (a test module may define its own ``pack``)."""
    return Pack.of(pack_module)


@pytest.fixture(scope="session")
def vae(tiny_models):
    """The tiny TAEHV VAE, loaded with ComfyUI's own VAE class."""
    return load_vae(tiny_models.vae_dir, tiny_models.vae)
