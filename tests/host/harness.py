"""Run the pack inside a real ComfyUI: in-process (``ComfyHost``) or as a server process (``ComfyServer``).

Nothing of ComfyUI is copied or faked: ``COMFYUI_PATH`` points at a ComfyUI checkout, this module puts
it at ``sys.path[0]`` (ComfyUI's top-level ``nodes.py`` must win over the pack's ``nodes/`` folder)
and drives ComfyUI's own modules the way ``main.py`` does. Every directory ComfyUI writes to (models,
input, output, temp, user, custom_nodes, database) lives in a temporary base directory, never in the
checkout or the repository.

This module never imports ComfyUI at import time, so it can be imported by an interpreter that has
no ComfyUI (the unit-tier venv); ``bootstrap_comfyui`` raises ``ComfyUnavailable`` there.
"""

from __future__ import annotations

import asyncio
import atexit
import copy
import importlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import types
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_PACK_DIR = Path(__file__).resolve().parent / "fixture_pack"
PACK_FOLDER_NAME = "ComfyUI-CustomVideoX"
"""Folder name the pack is installed under in a server's ``custom_nodes/`` (a symlink to the repo)."""
FIXTURE_PACK_FOLDER_NAME = "cvx_test_fixture_pack"
MIN_COMFYUI_VERSION = (0, 21, 0)
"""First ComfyUI release with native CogVideoX (``comfy/ldm/cogvideo``)."""

NO_COMFY_HINT = "set COMFYUI_PATH to a ComfyUI checkout and run pytest with the Python that runs it"
_REQUIRED_CHECKOUT_FILES = ("comfyui_version.py", "main.py", "nodes.py", "execution.py", "folder_paths.py")
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
# ``utils`` first, as main.py does: ComfyUI's nodes.py (<= 0.21) puts comfy/ first on sys.path, after
# which ``import utils`` would find comfy/utils.py instead of ComfyUI's utils package.
_COMFY_MODULES = (
    "utils.extra_config",
    "folder_paths",
    "execution",
    "server",
    "nodes",
    "comfy.sd",
    "comfy.model_management",
)


class ComfyUnavailable(Exception):
    """No usable ComfyUI in this interpreter; ``str(error)`` is a one-line reason for a skip."""


class GraphValidationError(RuntimeError):
    """ComfyUI refused the prompt before running it (HTTP 400 / ``validate_prompt`` failure)."""

    def __init__(self, error: Mapping[str, Any] | None, node_errors: Mapping[str, Any]):
        self.error = dict(error or {})
        self.node_errors = dict(node_errors)
        lines = [f"prompt invalid: {self.error.get('message', '')} {self.error.get('details', '')}".rstrip()]
        for node_id, node_error in self.node_errors.items():
            for item in node_error.get("errors", []):
                lines.append(
                    f"  node {node_id} ({node_error.get('class_type')}): {item.get('message')} — {item.get('details')}"
                )
        super().__init__("\n".join(lines))


class GraphExecutionError(RuntimeError):
    """A node raised while ComfyUI ran the prompt (the ``execution_error`` message)."""

    def __init__(self, details: Mapping[str, Any], context: str = ""):
        self.details = dict(details)
        self.node_id = str(self.details.get("node_id"))
        self.node_type = str(self.details.get("node_type"))
        self.exception_type = str(self.details.get("exception_type"))
        self.exception_message = str(self.details.get("exception_message"))
        trace = "".join(self.details.get("traceback") or [])
        message = f"node {self.node_id} ({self.node_type}) raised {self.exception_type}: {self.exception_message}\n{trace}"
        if context:
            message += f"\n{context}"
        super().__init__(message)


def _raise_if_failed(messages: Iterable[Any], context: str = "") -> None:
    """Raise ``GraphExecutionError`` for the first ``execution_error`` among status messages."""
    for event, data in messages:
        if event == "execution_error":
            raise GraphExecutionError(data, context)
        if event == "execution_interrupted":
            raise GraphExecutionError(
                {**data, "exception_type": "interrupted", "exception_message": "execution was interrupted"},
                context,
            )


@dataclass(frozen=True)
class ProgressEvent:
    """One ``comfy.utils.ProgressBar`` update seen by the host."""

    node_id: str | None
    value: int
    total: int


@dataclass(frozen=True)
class GraphResult:
    """What one in-process run of an API-format prompt produced.

    ``ui_outputs``: the history ``outputs`` (UI dicts of output nodes, as ``/history`` shows them).
    ``node_outputs``: for each node id asked for in ``capture``, its output values, one entry per
    output socket (``node_outputs["3"][0]`` is a KSampler's LATENT dict).
    ``events``: the websocket messages the server would have sent, as ``(event, data)``.
    ``progress``: every ProgressBar update, in order.
    """

    prompt_id: str
    ui_outputs: dict[str, Any]
    node_outputs: dict[str, tuple[Any, ...]]
    events: list[tuple[str, Any]] = field(default_factory=list)
    progress: list[ProgressEvent] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Locating and importing ComfyUI
# ----------------------------------------------------------------------------------------------


def comfyui_path_from_env(environ: Mapping[str, str] = os.environ) -> Path:
    """The ComfyUI checkout named by ``COMFYUI_PATH``; raises ``ComfyUnavailable`` with the reason."""
    raw = environ.get("COMFYUI_PATH", "").strip()
    if not raw:
        raise ComfyUnavailable(f"no ComfyUI: COMFYUI_PATH is not set; {NO_COMFY_HINT}")
    path = Path(raw).expanduser().resolve()
    missing = [name for name in _REQUIRED_CHECKOUT_FILES if not (path / name).is_file()]
    if missing or not (path / "comfy").is_dir():
        raise ComfyUnavailable(
            f"no ComfyUI: COMFYUI_PATH={raw} is not a ComfyUI checkout (missing {', '.join(missing) or 'comfy/'}); "
            f"{NO_COMFY_HINT}"
        )
    return path


def read_comfyui_version(comfyui_path: Path) -> tuple[int, int, int]:
    """``comfyui_version.__version__`` of a checkout, read from the file (no import)."""
    text = (Path(comfyui_path) / "comfyui_version.py").read_text(encoding="utf-8")
    match = re.search(r"""__version__\s*=\s*["'](\d+)\.(\d+)\.(\d+)""", text)
    if match is None:
        raise ValueError(f"{comfyui_path}/comfyui_version.py has no __version__ = 'X.Y.Z' line.")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def _is_under(module: types.ModuleType, root: Path) -> bool:
    location = getattr(module, "__file__", None)
    return bool(location) and Path(location).resolve().is_relative_to(root)


def bootstrap_comfyui(comfyui_path: Path, base_dir: Path) -> None:
    """Import ComfyUI in this interpreter, configured for CPU with all its directories under ``base_dir``.

    Sets ``comfy.cli_args.args`` (``cpu``, ``base_directory``, offline/quiet flags) *before*
    ``folder_paths`` and ``comfy.model_management`` read them, as ``main.py`` does after parsing
    ``--cpu --base-directory``. Idempotent for the same checkout. Raises ``ComfyUnavailable`` (and
    undoes its ``sys.path`` / ``sys.modules`` changes) when the imports fail here.
    """
    comfyui_path = Path(comfyui_path).resolve()
    loaded_folder_paths = sys.modules.get("folder_paths")
    if loaded_folder_paths is not None:
        if not _is_under(loaded_folder_paths, comfyui_path):
            raise ComfyUnavailable(
                f"no ComfyUI: a different ComfyUI is already imported ({loaded_folder_paths.__file__}); "
                f"{NO_COMFY_HINT}"
            )
        return
    if str(comfyui_path) in sys.path:
        sys.path.remove(str(comfyui_path))
    sys.path.insert(0, str(comfyui_path))
    modules_before = set(sys.modules)
    try:
        importlib.import_module("comfy.options")  # arg parsing stays disabled: pytest owns sys.argv
        cli_args = importlib.import_module("comfy.cli_args")
        args = cli_args.args
        args.cpu = True
        args.base_directory = str(base_dir)
        args.disable_auto_launch = True
        args.auto_launch = False
        args.disable_api_nodes = True
        args.database_url = "sqlite:///:memory:"
        for name in _COMFY_MODULES:
            importlib.import_module(name)
    except Exception as error:  # any import-time failure means "no usable ComfyUI here"
        sys.path.remove(str(comfyui_path))
        for name in set(sys.modules) - modules_before:
            module = sys.modules.get(name)
            if module is not None and _is_under(module, comfyui_path):
                del sys.modules[name]
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise ComfyUnavailable(
            f"no ComfyUI: importing {comfyui_path} failed in {sys.executable} "
            f"({type(error).__name__}: {first_line}); {NO_COMFY_HINT}"
        ) from error


# ----------------------------------------------------------------------------------------------
# In-process host
# ----------------------------------------------------------------------------------------------


class _CapturedLogs(logging.Handler):
    """Collects log records (ComfyUI reports pack import failures only as warnings)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@dataclass(frozen=True)
class PackLoad:
    """Outcome of ``nodes.load_custom_node`` for one pack."""

    path: Path
    module_name: str
    loaded: bool
    log: str

    @property
    def module(self) -> types.ModuleType | None:
        return sys.modules.get(self.module_name) if self.loaded else None


class ComfyHost:
    """ComfyUI inside this process: core nodes, our pack and the fixture pack loaded, a CPU executor.

    Build once per session (``bootstrap_comfyui`` must have run). ``run_graph`` validates an
    API-format prompt with ``execution.validate_prompt`` and runs it with ``execution.PromptExecutor``
    — the path ``POST /prompt`` takes, without HTTP.
    """

    def __init__(self, comfyui_path: Path, base_dir: Path, *, client_id: str = "cvx-host-tests"):
        import comfy.utils
        import execution
        import folder_paths
        import server

        import nodes  # ComfyUI's nodes.py (ruff files it as first-party because of the pack's nodes/)

        self.comfyui_path = Path(comfyui_path).resolve()
        self.base_dir = Path(base_dir)
        self.client_id = client_id
        expected_base = self.base_dir.resolve()
        if Path(folder_paths.base_path).resolve() != expected_base:
            raise RuntimeError(
                f"folder_paths points at {folder_paths.base_path}, expected {expected_base}: "
                "call bootstrap_comfyui(comfyui_path, base_dir) before anything imports ComfyUI."
            )
        for folder in (
            self.models_dir / "diffusion_models",
            self.models_dir / "vae",
            self.input_dir,
            self.output_dir,
        ):
            folder.mkdir(parents=True, exist_ok=True)

        self._loop = asyncio.new_event_loop()
        self.prompt_server = server.PromptServer(self._loop)  # core V3 nodes expect PromptServer.instance
        self._progress: list[ProgressEvent] = []
        comfy.utils.set_progress_bar_global_hook(self._record_progress)

        import_failed = self._loop.run_until_complete(
            nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False)
        )
        if import_failed:
            logger.warning("ComfyUI core extras that failed to import here: %s", import_failed)
        self.core_import_failures: tuple[str, ...] = tuple(import_failed or ())
        self.fixture_pack = self._load_pack(FIXTURE_PACK_DIR)
        self.pack = self._load_pack(REPO_ROOT)
        self._executor = execution.PromptExecutor(
            self.prompt_server,
            cache_type=execution.CacheType.CLASSIC,
            cache_args={"lru": 0, "ram": 0, "ram_inactive": 0},
        )

    # -- directories -------------------------------------------------------------------------
    @property
    def models_dir(self) -> Path:
        import folder_paths

        return Path(folder_paths.models_dir)

    @property
    def input_dir(self) -> Path:
        import folder_paths

        return Path(folder_paths.get_input_directory())

    @property
    def output_dir(self) -> Path:
        import folder_paths

        return Path(folder_paths.get_output_directory())

    # -- packs and nodes ---------------------------------------------------------------------
    def _load_pack(self, path: Path) -> PackLoad:
        import nodes

        capture = _CapturedLogs()
        root_logger = logging.getLogger()
        root_logger.addHandler(capture)
        try:
            loaded = self._loop.run_until_complete(nodes.load_custom_node(str(path)))
        finally:
            root_logger.removeHandler(capture)
        module_name = str(path).replace(".", "_x_")  # how load_custom_node names a folder module
        log = "\n".join(capture.lines)
        if not loaded:
            logger.warning("custom node pack %s did not load:\n%s", path, log)
        return PackLoad(path=path, module_name=module_name, loaded=bool(loaded), log=log)

    @property
    def pack_module(self) -> types.ModuleType | None:
        """Our pack's module as ComfyUI loaded it, or ``None`` if it failed (see ``pack.log``)."""
        return self.pack.module

    def node_class(self, node_id: str) -> type:
        """The registered class of ``node_id``; ``KeyError`` naming near matches if absent."""
        import nodes

        try:
            return nodes.NODE_CLASS_MAPPINGS[node_id]
        except KeyError:
            prefix = node_id[:3].lower()
            near = sorted(name for name in nodes.NODE_CLASS_MAPPINGS if name.lower().startswith(prefix))[:20]
            raise KeyError(
                f"node {node_id!r} is not registered in ComfyUI; registered with that prefix: {near}"
            ) from None

    def node_ids(self) -> set[str]:
        import nodes

        return set(nodes.NODE_CLASS_MAPPINGS)

    # -- running graphs ----------------------------------------------------------------------
    def _record_progress(self, value, total, preview_image, prompt_id=None, node_id=None) -> None:
        from comfy_execution.utils import get_executing_context

        context = get_executing_context()
        if node_id is None and context is not None:
            node_id = context.node_id
        self._progress.append(ProgressEvent(node_id=node_id, value=int(value), total=int(total)))

    def _drain_events(self) -> list[tuple[str, Any]]:
        self._loop.run_until_complete(asyncio.sleep(0))  # deliver send_sync callbacks into the queue
        events = []
        while not self.prompt_server.messages.empty():
            event, data, _sid = self.prompt_server.messages.get_nowait()
            events.append((event, data))
        return events

    def run_graph(
        self, api_prompt: Mapping[str, Any], *, capture: Iterable[str] = (), keep_cache: bool = False
    ) -> GraphResult:
        """Validate and run an API-format prompt ``{node_id: {"class_type", "inputs"}}``.

        Returns a ``GraphResult``; raises ``GraphValidationError`` (with ``node_errors``) when ComfyUI
        refuses the prompt and ``GraphExecutionError`` (with the node's exception) when a node raises.
        Each run starts from an empty output cache unless ``keep_cache`` (to test ComfyUI's caching).
        """
        import execution

        prompt = copy.deepcopy(dict(api_prompt))
        prompt = self.prompt_server.trigger_on_prompt({"prompt": prompt})["prompt"]
        self.prompt_server.node_replace_manager.apply_replacements(prompt)
        prompt_id = str(uuid.uuid4())
        valid, error, outputs_to_execute, node_errors = asyncio.run(
            execution.validate_prompt(prompt_id, prompt, None)
        )
        if not valid:
            raise GraphValidationError(error, node_errors)
        if not keep_cache:
            self._executor.reset()
        self._drain_events()
        self._progress.clear()
        self._executor.execute(prompt, prompt_id, {"client_id": self.client_id}, outputs_to_execute)
        events = self._drain_events()
        _raise_if_failed(self._executor.status_messages)
        node_outputs = {node_id: self._cached_outputs(node_id) for node_id in capture}
        history = getattr(self._executor, "history_result", {}) or {}
        return GraphResult(
            prompt_id=prompt_id,
            ui_outputs=dict(history.get("outputs", {})),
            node_outputs=node_outputs,
            events=events,
            progress=list(self._progress),
        )

    def _cached_outputs(self, node_id: str) -> tuple[Any, ...]:
        entry = asyncio.run(self._executor.caches.outputs.get(str(node_id)))
        if entry is None:
            raise KeyError(
                f"node {node_id!r} has no cached outputs: is it in the prompt and upstream of an output node?"
            )
        outputs = entry.outputs
        return tuple(
            values[0] if isinstance(values, list) and len(values) == 1 else values for values in outputs
        )

    def close(self) -> None:
        import comfy.utils

        comfy.utils.set_progress_bar_global_hook(None)
        self._drain_events()
        self._loop.close()


# ----------------------------------------------------------------------------------------------
# Server process
# ----------------------------------------------------------------------------------------------


def stop_process_group(process: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM a child's process group (it was started with ``start_new_session``), SIGKILL after ``timeout``."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)
    except ProcessLookupError:
        pass


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _default_custom_nodes() -> dict[str, Path]:
    return {PACK_FOLDER_NAME: REPO_ROOT, FIXTURE_PACK_FOLDER_NAME: FIXTURE_PACK_DIR}


class ComfyServer:
    """``python main.py --cpu`` on a free loopback port, with its own base directory; a context manager.

    ``custom_nodes`` maps folder names to directories; each becomes a symlink in the server's
    ``custom_nodes/`` (default: the repo as ``ComfyUI-CustomVideoX`` and the fixture pack).
    ``models_dir`` (optional) is added through an ``--extra-model-paths-config`` YAML (which every
    ComfyUI release understands; ``--models-directory`` only exists in newer ones). Server stdout/stderr go to
    ``log_path``; failure messages carry its tail. The process is killed on ``__exit__``,
    ``kill()`` and at interpreter exit.
    """

    def __init__(
        self,
        comfyui_path: Path,
        base_dir: Path,
        *,
        models_dir: Path | None = None,
        custom_nodes: Mapping[str, Path] | None = None,
        port: int | None = None,
        python: str = sys.executable,
        startup_timeout: float = 180.0,
        extra_args: Iterable[str] = (),
    ):
        self.comfyui_path = Path(comfyui_path).resolve()
        self.base_dir = Path(base_dir)
        self.models_dir = Path(models_dir) if models_dir is not None else None
        self.custom_nodes = dict(_default_custom_nodes() if custom_nodes is None else custom_nodes)
        self.port = port if port is not None else free_loopback_port()
        self.python = python
        self.startup_timeout = startup_timeout
        self.extra_args = tuple(extra_args)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.base_dir / "server-0.log"
        self._starts = 0
        self._ready = False
        self._launched_at = 0.0
        self._process: subprocess.Popen | None = None
        self._log_file = None
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({})
        )  # loopback: never via a proxy

    # -- lifecycle ---------------------------------------------------------------------------
    def _prepare_dirs(self) -> None:
        custom_nodes_dir = self.base_dir / "custom_nodes"
        for folder in (
            custom_nodes_dir,
            self.base_dir / "user",
            self.base_dir / "input",
            self.base_dir / "output",
        ):
            folder.mkdir(parents=True, exist_ok=True)
        for name, target in self.custom_nodes.items():
            link = custom_nodes_dir / name
            if not link.is_symlink():
                link.symlink_to(Path(target).resolve(), target_is_directory=True)

    _MODEL_FOLDERS = (
        "diffusion_models",
        "vae",
        "loras",
        "customvideox",
        "text_encoders",
        "checkpoints",
        "clip_vision",
    )

    def _write_model_paths(self) -> Path:
        """An extra-model-paths YAML that adds ``models_dir``'s folders to the server's own."""
        assert self.models_dir is not None
        lines = ["cvx_tests:", f"  base_path: {json.dumps(str(self.models_dir))}"]
        lines += [f"  {folder}: {folder}" for folder in self._MODEL_FOLDERS]
        path = self.base_dir / "extra_model_paths.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def command(self) -> list[str]:
        command = [
            self.python,
            str(self.comfyui_path / "main.py"),
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--base-directory",
            str(self.base_dir),
            "--database-url",
            "sqlite:///:memory:",
            "--disable-auto-launch",
            "--disable-api-nodes",
            "--log-stdout",
        ]
        if self.models_dir is not None:
            command += ["--extra-model-paths-config", str(self._write_model_paths())]
        return command + list(self.extra_args)

    def start(self, *, wait: bool = True) -> ComfyServer:
        """Launch the server; unless ``wait=False``, wait (bounded) until ``/object_info`` answers.

        ``wait=False`` lets callers overlap the ~20 s startup with other work; call
        ``wait_until_ready()`` before using it.
        """
        if self.running:
            raise RuntimeError(f"ComfyUI server on {self.url} is already running; kill() it first.")
        self._prepare_dirs()
        self.log_path = self.base_dir / f"server-{self._starts}.log"
        self._starts += 1
        self._ready = False
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in kill()
        environment = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1"}
        self._process = subprocess.Popen(
            self.command(),
            cwd=str(self.comfyui_path),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
            start_new_session=True,
        )
        self._launched_at = time.monotonic()
        atexit.register(self.kill)
        return self.wait_until_ready() if wait else self

    def wait_until_ready(self) -> ComfyServer:
        """Block until ``/object_info`` answers, at most ``startup_timeout`` s after launch."""
        if self._ready:
            return self
        if self._process is None:
            raise RuntimeError(f"ComfyUI server on {self.url} is not running; call start() first.")
        deadline = self._launched_at + self.startup_timeout
        while True:
            if self._process.poll() is not None:
                returncode = self._process.returncode
                tail = self.log_tail()
                self.kill()
                raise RuntimeError(f"ComfyUI server exited during startup (code {returncode}).\n{tail}")
            try:
                self.object_info()
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                if time.monotonic() > deadline:
                    tail = self.log_tail()
                    self.kill()
                    raise TimeoutError(
                        f"ComfyUI server on {self.url} did not answer /object_info within "
                        f"{self.startup_timeout:.0f} s.\n{tail}"
                    ) from None
                time.sleep(0.5)
            else:
                self._ready = True
                return self

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def kill(self) -> None:
        """Stop the server (SIGTERM to its process group, SIGKILL after 10 s). Safe to call twice."""
        process, self._process = self._process, None
        self._ready = False
        atexit.unregister(self.kill)
        stop_process_group(process)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def restart(self) -> ComfyServer:
        """Kill and start again on the same port, base directory and packs (queue and history are lost)."""
        self.kill()
        return self.start()

    def __enter__(self) -> ComfyServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.kill()

    # -- logs --------------------------------------------------------------------------------
    def log_text(self) -> str:
        """The whole log of the current (or last) run."""
        if self._log_file is not None:
            self._log_file.flush()
        if not self.log_path.exists():
            return ""
        return _ANSI_ESCAPE.sub("", self.log_path.read_text(encoding="utf-8", errors="replace"))

    def log_tail(self, lines: int = 60) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)

    def import_failures(self) -> list[str]:
        """Log lines reporting a custom node pack that failed to import."""
        return [line for line in self.log_text().splitlines() if "IMPORT FAILED" in line]

    # -- HTTP --------------------------------------------------------------------------------
    def _request(self, method: str, path: str, payload: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with self._opener.open(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            body = error.read()
            try:
                return error.code, json.loads(body or b"null")
            except json.JSONDecodeError:
                return error.code, body.decode("utf-8", errors="replace")

    def get_json(self, path: str, timeout: float = 30.0) -> Any:
        status, body = self._request("GET", path, timeout=timeout)
        if status != 200:
            raise RuntimeError(f"GET {path} answered HTTP {status}: {body}\n{self.log_tail()}")
        return body

    def object_info(self) -> dict[str, Any]:
        return self.get_json("/object_info", timeout=60.0)

    def queue(self, api_prompt: Mapping[str, Any], *, client_id: str | None = None) -> str:
        """``POST /prompt``; returns the prompt id or raises ``GraphValidationError`` on HTTP 400."""
        payload: dict[str, Any] = {"prompt": dict(api_prompt)}
        if client_id is not None:
            payload["client_id"] = client_id
        status, body = self._request("POST", "/prompt", payload)
        if status == 400 and isinstance(body, dict):
            raise GraphValidationError(body.get("error"), body.get("node_errors", {}))
        if status != 200:
            raise RuntimeError(f"POST /prompt answered HTTP {status}: {body}\n{self.log_tail()}")
        return str(body["prompt_id"])

    def wait(self, prompt_id: str, timeout: float = 120.0, poll_interval: float = 0.25) -> dict[str, Any]:
        """Poll ``/history/<id>`` until the prompt finished; return its history entry.

        Raises ``GraphExecutionError`` if it failed and ``TimeoutError`` (with the log tail) if it
        did not finish in ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            history = self.get_json(f"/history/{prompt_id}")
            entry = history.get(prompt_id) if isinstance(history, dict) else None
            if entry is not None and entry.get("status", {}).get("completed") is not None:
                status = entry["status"]
                if status.get("status_str") != "success":
                    _raise_if_failed(status.get("messages", []), self.log_tail())
                    raise RuntimeError(f"prompt {prompt_id} ended with status {status}.\n{self.log_tail()}")
                return entry
            if not self.running:
                raise RuntimeError(
                    f"ComfyUI server died while running prompt {prompt_id}.\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"prompt {prompt_id} did not finish within {timeout:.0f} s.\n{self.log_tail()}"
                )
            time.sleep(poll_interval)

    def run_graph(self, api_prompt: Mapping[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        """``queue`` then ``wait``: the history entry of a successful run."""
        return self.wait(self.queue(api_prompt), timeout=timeout)
