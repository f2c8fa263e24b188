"""A stdlib stand-in for ComfyUI's HTTP + websocket API, for the batch client's unit tests (loopback only).

Written from the message formats of ComfyUI's ``server.py`` / ``execution.py`` / ``main.py``
(no code taken from there):

- ``POST /upload/image`` (multipart ``image``, ``type``, ``overwrite``) → ``{"name", "subfolder", "type"}``;
  without overwrite, a different file of the same name is stored as ``"stem (1).ext"``, the same
  content keeps its name;
- ``POST /prompt`` ``{"prompt", "client_id", "prompt_id"?}`` → ``{"prompt_id", "number", "node_errors"}``,
  or HTTP 400 ``{"error": {...}, "node_errors": {id: {"errors": [...], "dependent_outputs", "class_type"}}}``;
- ``GET /queue`` → ``{"queue_running": [[number, id, prompt, extra, outputs]], "queue_pending": [...]}``;
- ``GET /history/<id>`` → ``{}`` or ``{id: {"prompt", "outputs", "status": {"status_str", "completed",
  "messages"}, "meta"}}``;
- ``GET /view?filename=&subfolder=&type=`` → the file's bytes;
- ``GET /object_info/<class>`` → ``{class: {"input": {"required": {name: [type, {"min", "max"}]}}}}`` or ``{}``;
- ``POST /queue`` ``{"delete": [ids]}`` and ``POST /interrupt`` ``{"prompt_id"}`` (empty 200 answers); an
  interrupted prompt ends with ``execution_interrupted`` and an ``error`` history status;
- ``GET /ws?clientId=`` → ``{"type": "status", ...}`` first, then for a prompt queued with that client id:
  ``execution_start``, ``execution_cached``, ``executing``, ``progress``, a binary preview,
  ``executed``, then ``execution_success`` or ``execution_error``, and ``executing`` with ``node: null``
  after the history entry is written.

Every executed prompt is recorded in ``executions`` (server-side truth for "never run twice"); each
saved "video" file holds JSON describing what was run (prompt text, seed, uploaded image bytes'
digests) so tests can check results against the job rows independently of the client.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import email.parser
import email.policy
import hashlib
import json
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, urlsplit

from customvideox_core.batch import BatchConfig

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SAMPLERS = ("CustomVideoXSample", "KSampler")
SCORE_NODE = "CustomVideoXScore"


def _first_input(prompt: dict, classes: tuple[str, ...], name: str, default: float) -> float:
    for node in prompt.values():
        if node["class_type"] in classes and isinstance(node["inputs"].get(name), int | float):
            return float(node["inputs"][name])
    return default


def stub_scores(prompt: dict) -> dict:
    """Deterministic stand-in for CustomVideoXScore's summary, from the settings the prompt holds.

    CLIP-I rises with the TAB peak, DINO-I with the ERAE strength, T.Cons falls with cfg, and the seed
    nudges CLIP-I; CLIP-T is not measured (``None``), as without a text encoder.
    """
    seed = _first_input(prompt, SAMPLERS, "seed", 0.0)
    peak = _first_input(prompt, ("CustomVideoXTimeAwareBias",), "peak", 0.0)
    strength = _first_input(prompt, ("CustomVideoXERAEMask",), "strength", 0.0)
    cfg = _first_input(prompt, SAMPLERS, "cfg", 0.0)
    return {
        "clip_i": 0.5 + 0.1 * peak + 0.001 * (seed % 100),
        "dino_i": 0.4 + 0.05 * strength,
        "t_cons": 0.95 - 0.01 * cfg,
        "clip_t": None,
        "frames": [0, 1, 2],
        "region": "full",
        "references": 1,
    }


def _number(kind: str, default: float, low: float, high: float) -> list:
    return [kind, {"default": default, "min": low, "max": high}]


def stub_object_info() -> dict[str, dict]:
    """``/object_info`` of the nodes a job sets, as a server with the pack installed declares them
    (written out here, not read from the pack: the test's independent statement of the ranges)."""
    seed = _number("INT", 0, 0, 0xFFFFFFFFFFFFFFFF)
    return {
        "CustomVideoXTimeAwareBias": {
            "input": {
                "required": {
                    "shape": ["COMBO", {"options": ["parabolic", "constant", "linear", "custom"]}],
                    "peak": _number("FLOAT", 1.0, -20.0, 20.0),
                    "floor": _number("FLOAT", 0.0, -20.0, 20.0),
                    "start": _number("FLOAT", 0.0, 0.0, 1.0),
                    "end": _number("FLOAT", 1.0, 0.0, 1.0),
                    "custom_values": ["STRING", {"default": ""}],
                }
            }
        },
        "CustomVideoXERAEMask": {
            "input": {
                "required": {
                    "strength": _number("FLOAT", 1.0, 0.0, 10.0),
                    "threshold": _number("FLOAT", 0.0, 0.0, 1.0),
                }
            }
        },
        "CustomVideoXSample": {
            "input": {"required": {"seed": seed, "cfg": _number("FLOAT", 6.0, 0.0, 100.0)}}
        },
        "KSampler": {"input": {"required": {"seed": seed, "cfg": _number("FLOAT", 8.0, 0.0, 100.0)}}},
    }


@dataclass
class Execution:
    prompt_id: str
    prompt: dict
    outcome: str = "running"


@dataclass
class StubBehaviour:
    """What the stub does; tests change these between or during runs."""

    steps: int = 3
    step_delay: float = 0.005
    history_delay: float = 0.0
    fail_when: Callable[[dict], str | None] = lambda prompt: None
    reject_when: Callable[[dict], dict | None] = lambda prompt: None
    honour_prompt_id: bool = True
    on_execution_start: Callable[[str], None] = lambda prompt_id: None
    scores: Callable[[dict], dict] = stub_scores
    view_unavailable: Callable[[str], bool] = lambda filename: False
    """``GET /view`` of these files answers 503 (a server that lists a file but cannot serve it)."""
    object_info: dict[str, dict] = field(default_factory=stub_object_info)
    """What ``GET /object_info/<class>`` declares (a class not listed answers ``{}``, as ComfyUI does)."""
    """What a ``CustomVideoXScore`` node reports (UI key ``cvx_scores``, as the real node does)."""


@dataclass
class _State:
    uploads: dict[str, bytes] = field(default_factory=dict)
    outputs: dict[tuple[str, str], bytes] = field(default_factory=dict)
    queue: list[tuple[float, str, dict, dict, list]] = field(default_factory=list)
    running: tuple | None = None
    history: dict[str, dict] = field(default_factory=dict)
    number: int = 0
    counter: int = 0


class StubComfyServer:
    """``start()``, ``die(lose_state=...)``, ``revive()``, ``drop_websockets()``, ``stop()``."""

    def __init__(self, behaviour: StubBehaviour | None = None, port: int = 0) -> None:
        self.behaviour = behaviour or StubBehaviour()
        self.port = port
        self.state = _State()
        self.executions: list[Execution] = []
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.RLock()
        self._work = threading.Condition(self._lock)
        self._sockets: dict[str, tuple[socket.socket, threading.Lock]] = {}
        self._httpd: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._alive = False
        self._interrupt = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StubComfyServer:
        httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_for(self))
        httpd.daemon_threads = True
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._alive = True
        serve = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        execute = threading.Thread(target=self._executor, daemon=True)
        self._threads = [serve, execute]
        for thread in self._threads:
            thread.start()
        return self

    def die(self, lose_state: bool = True) -> None:
        """Stop listening and drop every connection. ``lose_state``: like a restarted ComfyUI, the
        queue, history and running prompt are gone (uploads and outputs on disk stay)."""
        with self._lock:
            self._alive = False
            self._work.notify_all()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        self.drop_websockets()
        for thread in self._threads:
            thread.join(timeout=5)
        with self._lock:
            if lose_state:
                self.state.queue.clear()
                self.state.history.clear()
                self.state.running = None
            elif self.state.running is not None:
                self.state.queue.insert(0, self.state.running)
                self.state.running = None

    def revive(self) -> None:
        """Listen again on the same port."""
        self.start()

    def stop(self) -> None:
        if self._alive:
            self.die()

    def drop_websockets(self) -> None:
        with self._lock:
            sockets = list(self._sockets.values())
            self._sockets.clear()
        for sock, _ in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def executed_prompts(self, outcome: str | None = None) -> list[dict]:
        with self._lock:
            return [run.prompt for run in self.executions if outcome is None or run.outcome == outcome]

    # -- websocket ---------------------------------------------------------------------------------

    def _register_socket(self, client_id: str, sock: socket.socket) -> threading.Lock:
        lock = threading.Lock()
        with self._lock:
            old = self._sockets.pop(client_id, None)
            self._sockets[client_id] = (sock, lock)
        if old is not None:
            with contextlib.suppress(OSError):
                old[0].shutdown(socket.SHUT_RDWR)
        return lock

    def _unregister_socket(self, client_id: str, sock: socket.socket) -> None:
        with self._lock:
            if self._sockets.get(client_id, (None,))[0] is sock:
                del self._sockets[client_id]

    def send(self, client_id: str | None, event: str, data: dict) -> None:
        self._send_frame(client_id, 0x1, json.dumps({"type": event, "data": data}).encode())

    def _send_frame(self, client_id: str | None, opcode: int, payload: bytes) -> None:
        with self._lock:
            target = self._sockets.get(client_id) if client_id else None
        if target is None:
            return
        sock, lock = target
        with lock, contextlib.suppress(OSError):
            sock.sendall(server_frame(opcode, payload))

    # -- execution ---------------------------------------------------------------------------------

    def queue_remaining(self) -> int:
        with self._lock:
            return len(self.state.queue) + (self.state.running is not None)

    def _executor(self) -> None:
        while True:
            with self._work:
                while self._alive and not self.state.queue:
                    self._work.wait(0.05)
                if not self._alive:
                    return
                self.state.queue.sort(key=lambda item: item[0])
                item = self.state.queue.pop(0)
                self.state.running = item
                execution = Execution(prompt_id=item[1], prompt=copy.deepcopy(item[2]))
                self.executions.append(execution)
            self._execute(item, execution)

    def _execute(self, item: tuple, execution: Execution) -> None:
        behaviour = self.behaviour
        _, prompt_id, prompt, extra, _ = item
        client_id = extra.get("client_id")
        messages: list[list] = []

        def message(event: str, data: dict) -> None:
            data = {**data, "timestamp": int(time.time() * 1000)}
            messages.append([event, data])
            self.send(client_id, event, data)

        self._interrupt.clear()
        behaviour.on_execution_start(prompt_id)
        message("execution_start", {"prompt_id": prompt_id})
        message("execution_cached", {"nodes": [], "prompt_id": prompt_id})
        failure = behaviour.fail_when(prompt)
        executed: list[str] = []
        outputs: dict[str, dict] = {}
        for node_id, node in prompt.items():
            if not self._alive:
                execution.outcome = "aborted"
                return
            self.send(
                client_id, "executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id}
            )
            if node["class_type"] in SAMPLERS:
                for step in range(1, behaviour.steps + 1):
                    time.sleep(behaviour.step_delay)
                    if not self._alive:
                        execution.outcome = "aborted"
                        return
                    if self._interrupt.is_set():
                        break
                    progress = {
                        "value": step,
                        "max": behaviour.steps,
                        "prompt_id": prompt_id,
                        "node": node_id,
                    }
                    self.send(client_id, "progress", progress)
                    self._send_frame(client_id, 0x2, struct.pack(">II", 1, 1) + b"\xff\xd8fake-jpeg")
                if self._interrupt.is_set():
                    self._interrupt.clear()
                    failure = "interrupted"
                    message(
                        "execution_interrupted",
                        {
                            "prompt_id": prompt_id,
                            "node_id": node_id,
                            "node_type": node["class_type"],
                            "executed": executed,
                        },
                    )
                    break
                if failure is not None:
                    message(
                        "execution_error",
                        {
                            "prompt_id": prompt_id,
                            "node_id": node_id,
                            "node_type": node["class_type"],
                            "executed": executed,
                            "exception_message": failure,
                            "exception_type": "RuntimeError",
                            "traceback": [
                                "Traceback (most recent call last):\n",
                                f"RuntimeError: {failure}\n",
                            ],
                            "current_inputs": {},
                            "current_outputs": [],
                        },
                    )
                    break
            if node["class_type"] == SCORE_NODE:
                preview = {"filename": f"scores_{node_id}.png", "subfolder": "", "type": "temp"}
                outputs[node_id] = {"images": [preview], "cvx_scores": [behaviour.scores(prompt)]}
            if "filename_prefix" in node.get("inputs", {}):
                outputs[node_id] = self._save(prompt, node["inputs"]["filename_prefix"])
                self.send(
                    client_id,
                    "executed",
                    {
                        "node": node_id,
                        "display_node": node_id,
                        "output": outputs[node_id],
                        "prompt_id": prompt_id,
                    },
                )
            executed.append(node_id)
        else:
            message("execution_success", {"prompt_id": prompt_id})
        time.sleep(behaviour.history_delay)
        with self._lock:
            if not self._alive:
                execution.outcome = "aborted"
                return
            success = failure is None
            execution.outcome = (
                "success" if success else "interrupted" if failure == "interrupted" else "error"
            )
            self.state.history[prompt_id] = {
                "prompt": [item[0], prompt_id, prompt, extra, item[4]],
                "outputs": outputs if success else {},
                "status": {
                    "status_str": "success" if success else "error",
                    "completed": success,
                    "messages": messages,
                },
                "meta": {},
            }
            self.state.running = None
        self.send(client_id, "executing", {"node": None, "prompt_id": prompt_id})

    def _save(self, prompt: dict, prefix: str) -> dict:
        """Fake SaveVideo: a JSON "video" describing what ran; ``ui`` record as PreviewVideo gives."""
        texts = sorted(n["inputs"]["text"] for n in prompt.values() if n["class_type"] == "CLIPTextEncode")
        seeds = sorted(
            n["inputs"].get("seed", n["inputs"].get("noise_seed"))
            for n in prompt.values()
            if n["class_type"] in (*SAMPLERS, "RandomNoise")
        )
        images = {
            n["class_type"] + ":" + node_id: hashlib.sha256(
                self.state.uploads[n["inputs"]["image"]]
            ).hexdigest()
            for node_id, n in prompt.items()
            if n["class_type"] in ("LoadImage", "LoadImageMask")
        }
        content = json.dumps({"texts": texts, "seeds": seeds, "images": images}, sort_keys=True).encode()
        path = PurePosixPath(prefix)
        subfolder = "" if str(path.parent) == "." else str(path.parent)
        with self._lock:
            self.state.counter += 1
            filename = f"{path.name}_{self.state.counter:05d}_.mp4"
            self.state.outputs[(subfolder, filename)] = content
        preview = {"filename": f"preview_{self.state.counter}.png", "subfolder": "", "type": "temp"}
        return {
            "images": [{"filename": filename, "subfolder": subfolder, "type": "output"}, preview],
            "animated": [True],
        }

    # -- HTTP endpoints ----------------------------------------------------------------------------

    def upload(self, fields: dict[str, tuple[str | None, bytes]]) -> tuple[int, dict]:
        filename, content = fields.get("image", (None, b""))
        if not filename:
            return 400, {}
        overwrite = fields.get("overwrite", (None, b""))[1].decode() in ("true", "1")
        stem, dot, suffix = filename.rpartition(".")
        name, counter = filename, 1
        with self._lock:
            while not overwrite and name in self.state.uploads and self.state.uploads[name] != content:
                name = f"{stem} ({counter}){dot}{suffix}"
                counter += 1
            self.state.uploads[name] = content
        return 200, {"name": name, "subfolder": "", "type": "input"}

    def queue_prompt(self, body: dict) -> tuple[int, dict]:
        prompt = body.get("prompt")
        if not isinstance(prompt, dict):
            error = {"type": "no_prompt", "message": "No prompt provided", "details": "", "extra_info": {}}
            return 400, {"error": error, "node_errors": {}}
        node_errors = self._validate(prompt)
        rejection = self.behaviour.reject_when(prompt)
        if rejection:
            node_errors.update(rejection)
        if node_errors:
            error = {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": "",
                "extra_info": {},
            }
            return 400, {"error": error, "node_errors": node_errors}
        requested = body.get("prompt_id")
        prompt_id = requested if (self.behaviour.honour_prompt_id and requested) else str(uuid.uuid4())
        extra = {"client_id": body["client_id"]} if "client_id" in body else {}
        with self._work:
            number = self.state.number
            self.state.number += 1
            outputs = [
                node_id for node_id, node in prompt.items() if "filename_prefix" in node.get("inputs", {})
            ]
            self.state.queue.append((number, prompt_id, prompt, extra, outputs))
            self._work.notify_all()
        return 200, {"prompt_id": prompt_id, "number": number, "node_errors": {}}

    def edit_queue(self, body: dict) -> tuple[int, bytes]:
        """``POST /queue`` ``{"delete": [ids]}`` / ``{"clear": true}``: empty 200 like ComfyUI."""
        with self._lock:
            if body.get("clear"):
                self.state.queue.clear()
            for prompt_id in body.get("delete", []):
                self.state.queue = [item for item in self.state.queue if item[1] != prompt_id]
        return 200, b""

    def interrupt(self, body: dict) -> tuple[int, bytes]:
        """``POST /interrupt`` ``{"prompt_id"}``: only interrupts if that prompt is the running one."""
        with self._lock:
            running = self.state.running
            if running is not None and body.get("prompt_id") in (None, running[1]):
                self._interrupt.set()
        return 200, b""

    def _validate(self, prompt: dict) -> dict:
        errors = {}
        with self._lock:
            known = sorted(self.state.uploads)
        for node_id, node in prompt.items():
            if (
                node.get("class_type") in ("LoadImage", "LoadImageMask")
                and node["inputs"].get("image") not in known
            ):
                errors[node_id] = {
                    "errors": [
                        {
                            "type": "value_not_in_list",
                            "message": "Value not in list",
                            "details": f"image: '{node['inputs'].get('image')}' not in {known}",
                            "extra_info": {},
                        }
                    ],
                    "dependent_outputs": [],
                    "class_type": node["class_type"],
                }
        return errors

    def queue_listing(self) -> dict:
        with self._lock:
            running = [list(self.state.running)] if self.state.running else []
            return {"queue_running": running, "queue_pending": [list(item) for item in self.state.queue]}

    def history_of(self, prompt_id: str) -> dict:
        with self._lock:
            entry = self.state.history.get(prompt_id)
            return {} if entry is None else {prompt_id: copy.deepcopy(entry)}

    def view(self, query: dict[str, list[str]]) -> bytes | None:
        if query.get("type", ["output"])[0] != "output":
            return None
        key = (query.get("subfolder", [""])[0], query.get("filename", [""])[0])
        with self._lock:
            return self.state.outputs.get(key)


def server_frame(opcode: int, payload: bytes) -> bytes:
    """Unmasked frame, as a server sends."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, length)
    return header + payload


def _handler_for(stub: StubComfyServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _reply(self, status: int, payload: dict | bytes) -> None:
            body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            content_type = "application/octet-stream" if isinstance(payload, bytes) else "application/json"
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            stub.requests.append(("GET", parts.path))
            query = parse_qs(parts.query, keep_blank_values=True)
            if parts.path == "/ws":
                self._websocket(query.get("clientId", [""])[0] or uuid.uuid4().hex)
            elif parts.path == "/queue":
                self._reply(200, stub.queue_listing())
            elif parts.path.startswith("/history/"):
                self._reply(200, stub.history_of(parts.path.removeprefix("/history/")))
            elif parts.path.startswith("/object_info/"):
                node_class = parts.path.removeprefix("/object_info/")
                info = stub.behaviour.object_info.get(node_class)
                self._reply(200, {} if info is None else {node_class: info})
            elif parts.path == "/view" and stub.behaviour.view_unavailable(query.get("filename", [""])[0]):
                self._reply(503, b"")
            elif parts.path == "/view":
                content = stub.view(query)
                self._reply(404, b"") if content is None else self._reply(200, content)
            else:
                self._reply(404, {})

        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            stub.requests.append(("POST", parts.path))
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if parts.path == "/prompt":
                self._reply(*stub.queue_prompt(json.loads(body)))
            elif parts.path == "/queue":
                self._reply(*stub.edit_queue(json.loads(body)))
            elif parts.path == "/interrupt":
                self._reply(*stub.interrupt(json.loads(body or b"{}")))
            elif parts.path == "/upload/image":
                self._reply(*stub.upload(_multipart_fields(self.headers["Content-Type"], body)))
            else:
                self._reply(404, {})

        def _websocket(self, client_id: str) -> None:
            key = self.headers.get("Sec-WebSocket-Key", "")
            accept = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
            self.wfile.write(
                (
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
                ).encode()
            )
            self.wfile.flush()
            sock = self.connection
            stub._register_socket(client_id, sock)
            status = {"status": {"exec_info": {"queue_remaining": stub.queue_remaining()}}, "sid": client_id}
            stub.send(client_id, "status", status)
            try:
                while True:  # read (and drop) client frames until the client or the stub closes
                    header = self.rfile.read(2)
                    if len(header) < 2 or header[0] & 0x0F == 0x8:
                        return
                    length = header[1] & 0x7F
                    if length == 126:
                        length = struct.unpack("!H", self.rfile.read(2))[0]
                    elif length == 127:
                        length = struct.unpack("!Q", self.rfile.read(8))[0]
                    self.rfile.read(4 + length)
            except OSError:
                return
            finally:
                stub._unregister_socket(client_id, sock)
                self.close_connection = True

    return Handler


def _multipart_fields(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """``{field name: (filename or None, bytes)}`` of a multipart/form-data body."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


def api_workflow(
    with_mask: bool = True, with_erae: bool = True, with_tab: bool = True, with_score: bool = False
) -> dict:
    """A hand-written API-format CustomVideoX graph with deliberately odd node ids (``with_score``: the
    decoded video is also scored by ``CustomVideoXScore`` against the reference)."""
    workflow: dict[str, dict] = {
        "m1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "cogvideox5b.safetensors"}},
        "cvx": {
            "class_type": "LoadCustomVideoX",
            "inputs": {"model": ["m1", 0], "adapter": "none", "strength": 1.0},
        },
        "clip": {
            "class_type": "CLIPLoader",
            "inputs": {"clip_name": "t5xxl.safetensors", "type": "cogvideox"},
        },
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": "PLACEHOLDER"}},
        "neg": {
            "class_type": "CLIPTextEncode",
            "inputs": {"clip": ["clip", 0], "text": "blurry, low quality"},
        },
        "img": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "scale": {"class_type": "ImageScale", "inputs": {"image": ["img", 0], "width": 720, "height": 480}},
        "ref": {
            "class_type": "CustomVideoXReferenceEncode",
            "inputs": {"vae": ["m1", 2], "image": ["scale", 0], "width": 720, "height": 480, "fit": "pad"},
        },
        "sample": {
            "class_type": "CustomVideoXSample",
            "inputs": {
                "model": ["cvx", 0],
                "positive": ["pos", 0],
                "negative": ["neg", 0],
                "reference": ["ref", 0],
                "seed": 0,
                "steps": 50,
                "cfg": 6.0,
            },
        },
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["m1", 2]}},
        "save": {
            "class_type": "SaveVideo",
            "inputs": {"video": ["decode", 0], "filename_prefix": "CustomVideoX"},
        },
    }
    if with_mask:
        workflow["maskload"] = {
            "class_type": "LoadImageMask",
            "inputs": {"image": "mask.png", "channel": "alpha"},
        }
        workflow["ref"]["inputs"]["mask"] = ["maskload", 0]
    if with_tab:
        workflow["tab"] = {
            "class_type": "CustomVideoXTimeAwareBias",
            "inputs": {
                "shape": "parabolic",
                "peak": 1.0,
                "floor": 0.0,
                "start": 0.0,
                "end": 1.0,
                "custom_values": "",
            },
        }
        workflow["sample"]["inputs"]["tab"] = ["tab", 0]
    if with_erae:
        workflow["erae"] = {
            "class_type": "CustomVideoXERAEMask",
            "inputs": {
                "clip": ["clip", 0],
                "prompt": "",
                "entity_words": "",
                "strength": 1.0,
                "threshold": 0.0,
            },
        }
        if with_mask:
            workflow["erae"]["inputs"]["reference_mask"] = ["maskload", 0]
        workflow["sample"]["inputs"]["erae"] = ["erae", 0]
    if with_score:
        workflow["clipvision"] = {
            "class_type": "CLIPVisionLoader",
            "inputs": {"clip_name": "clip_vision_l.safetensors"},
        }
        workflow["score"] = {
            "class_type": SCORE_NODE,
            "inputs": {
                "frames": ["decode", 0],
                "reference": ["img", 0],
                "clip_vision": ["clipvision", 0],
                "region": "full",
                "frame_stride": 1,
                "center_crop": True,
            },
        }
    return workflow


def stub_config(folder: Path, jobs: Path, workflow: Path, stub: StubComfyServer) -> BatchConfig:
    """A quiet batch of ``jobs`` with ``workflow`` on ``stub``, results in ``folder/out``, polled fast."""
    return BatchConfig(
        jobs_file=jobs,
        output_dir=folder / "out",
        servers=(stub.url,),
        workflow=workflow,
        quiet=True,
        poll_interval=0.05,
        history_poll=0.2,
        backoff=0.05,
    )
