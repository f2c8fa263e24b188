"""ComfyUI's HTTP API over ``urllib``: upload, queue, queue/history look-ups, download.

Uploads are encoded by ``urllib3``'s ``encode_multipart_formdata`` (a maintained encoder, already in every
ComfyUI environment); the websocket is ``websocket-client`` (:mod:`.websocket`).

Errors are split by what the caller should do about them:

- :class:`ServerUnavailable` — the server could not be reached or dropped the connection (refused,
  reset, timed out, 502/503/504): retry later, maybe elsewhere;
- :class:`PromptRejected` — ``POST /prompt`` answered 400 (invalid inputs, ``node_errors``): the job fails;
- :class:`ComfyRequestError` — any other unexpected answer: the job fails with that text.
- :class:`DownloadFailed` — a finished prompt's file did not come through ``/view``: retried, then the job
  fails (a ``ServerUnavailable``, but counted per job, since ``/history`` still answers);
- :class:`LocalWriteError` — a downloaded file cannot be written on this machine: the job fails at once
  (it is no server outage).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import mimetypes
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode, urlsplit
from urllib.request import Request, urlopen

from urllib3 import encode_multipart_formdata

from .websocket import WebSocketConnection

_TRANSIENT_STATUS = (502, 503, 504)
_Result = TypeVar("_Result")


class ComfyRequestError(RuntimeError):
    """The server answered, but not with what the API promises."""


class ServerUnavailable(ConnectionError):
    """The server could not be reached, or the connection dropped mid-request."""


class DownloadFailed(ServerUnavailable):
    """A finished prompt's file could not be fetched from ``/view`` (the server answered ``/history``)."""


class LocalWriteError(RuntimeError):
    """A downloaded file could not be written on this machine (disk full, no permission, a file where a
    folder should be): the job fails; the server is fine and keeps the file in its output folder."""


class PromptRejected(ComfyRequestError):
    """``POST /prompt`` refused the workflow (HTTP 400); ``node_errors`` maps node ids to their errors."""

    def __init__(self, error: object, node_errors: dict[str, Any]) -> None:
        self.error = error
        self.node_errors = node_errors
        super().__init__(describe_prompt_error(error, node_errors))


@dataclass(frozen=True)
class OutputFile:
    """A file a node saved, as listed in ``/history`` outputs."""

    filename: str
    subfolder: str
    type: str


@dataclass(frozen=True)
class QueueState:
    """Prompt ids in ``/queue``."""

    running: tuple[str, ...]
    pending: tuple[str, ...]

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self.running or prompt_id in self.pending


class ComfyClient:
    """HTTP calls to one ComfyUI server, e.g. ``ComfyClient("http://127.0.0.1:8188")``."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"server URL must look like http://127.0.0.1:8188, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def websocket_url(self, client_id: str) -> str:
        """``ws(s)://host:port/ws?clientId=...`` for this server."""
        scheme = "wss" if self.base_url.startswith("https") else "ws"
        return f"{scheme}{self.base_url[self.base_url.index(':') :]}/ws?{urlencode({'clientId': client_id})}"

    def open_websocket(self, client_id: str) -> WebSocketConnection:
        """Connect ``/ws``; messages for prompts queued with this ``client_id`` come to it."""
        try:
            return WebSocketConnection.connect(self.websocket_url(client_id), timeout=self.timeout)
        except (OSError, ConnectionError) as error:
            raise ServerUnavailable(f"{self.base_url}: websocket connection failed: {error}") from error

    def upload_image(self, path: Path) -> str:
        """``POST /upload/image`` (``type=input``, ``overwrite=false``) → the name to put in ``LoadImage``.

        The server may rename the file to avoid overwriting another one; the returned name (with its
        subfolder, if any) is the one to use.
        """
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        body, multipart_type = encode_multipart_formdata(
            {"type": "input", "overwrite": "false", "image": (path.name, path.read_bytes(), content_type)}
        )
        answer = self._json("POST", "/upload/image", body, {"Content-Type": multipart_type})
        name = answer.get("name") if isinstance(answer, dict) else None
        if not isinstance(name, str) or not name:
            raise ComfyRequestError(f"{self.base_url}/upload/image answered without a file name: {answer!r}")
        subfolder = answer.get("subfolder") or ""
        return f"{subfolder}/{name}" if subfolder else name

    def queue_prompt(self, workflow: dict, client_id: str, prompt_id: str) -> str:
        """``POST /prompt`` → the prompt id the server uses (ours when it honours client ids)."""
        body = json.dumps({"prompt": workflow, "client_id": client_id, "prompt_id": prompt_id}).encode()
        try:
            answer = self._json("POST", "/prompt", body, {"Content-Type": "application/json"})
        except _HttpStatus as status:
            if status.code == 400:
                payload = _try_json(status.body)
                if isinstance(payload, dict):
                    raise PromptRejected(payload.get("error"), payload.get("node_errors") or {}) from None
            raise ComfyRequestError(
                f"{self.base_url}/prompt answered HTTP {status.code}: {status.text}"
            ) from None
        returned = answer.get("prompt_id") if isinstance(answer, dict) else None
        if not isinstance(returned, str):
            raise ComfyRequestError(f"{self.base_url}/prompt answered without a prompt_id: {answer!r}")
        return returned

    def history(self, prompt_id: str) -> dict | None:
        """``GET /history/<prompt_id>`` → that prompt's entry, or ``None`` if the server has none."""
        answer = self._json("GET", f"/history/{quote(prompt_id, safe='')}")
        if not isinstance(answer, dict):
            raise ComfyRequestError(f"{self.base_url}/history answered {answer!r}")
        entry = answer.get(prompt_id)
        return entry if isinstance(entry, dict) else None

    def object_info(self, node_class: str) -> dict | None:
        """``GET /object_info/<node_class>`` → that node's info (its inputs' ranges), ``None`` if the
        server has no such node."""
        answer = self._json("GET", f"/object_info/{quote(node_class, safe='')}")
        if not isinstance(answer, dict):
            raise ComfyRequestError(f"{self.base_url}/object_info answered {answer!r}")
        info = answer.get(node_class)
        return info if isinstance(info, dict) else None

    def queue(self) -> QueueState:
        """``GET /queue`` → ids of running and pending prompts."""
        answer = self._json("GET", "/queue")
        if not isinstance(answer, dict):
            raise ComfyRequestError(f"{self.base_url}/queue answered {answer!r}")
        return QueueState(
            running=_queue_ids(answer.get("queue_running")), pending=_queue_ids(answer.get("queue_pending"))
        )

    def cancel(self, prompt_id: str) -> None:
        """Take a prompt off the server: delete it from the queue if pending, interrupt it if running.

        The interrupt is only sent while the prompt is running, because servers that predate targeted
        interrupts ignore ``prompt_id`` and would stop whatever runs.
        """
        queue = self.queue()
        if prompt_id in queue.pending:
            self._post_json("/queue", {"delete": [prompt_id]})
        elif prompt_id in queue.running:
            self._post_json("/interrupt", {"prompt_id": prompt_id})

    def download(self, output: OutputFile, destination: Path) -> None:
        """``GET /view`` → ``destination``, written to a temporary file first and then renamed.

        Raises :class:`DownloadFailed` when the server does not deliver the file, :class:`LocalWriteError`
        when it cannot be written here.
        """
        query = urlencode({"filename": output.filename, "subfolder": output.subfolder, "type": output.type})
        partial = destination.with_name(f".{destination.name}.part-{uuid.uuid4().hex[:8]}")
        try:
            with self._open("GET", f"/view?{query}") as response:
                handle = _local_write(output, destination, lambda: _open_partial(partial))
                with handle:
                    while chunk := _read_chunk(response, output):
                        _local_write(output, destination, lambda: handle.write(chunk))
                    _local_write(output, destination, lambda: _flush(handle))
            _local_write(output, destination, lambda: os.replace(partial, destination))
        except ServerUnavailable as error:
            raise DownloadFailed(f"{self.base_url}: download of {output.filename} failed: {error}") from error
        finally:
            with contextlib.suppress(OSError):  # no partial file where its folder could not be made
                partial.unlink(missing_ok=True)

    def _post_json(self, path: str, payload: object) -> None:
        """POST a JSON body to an endpoint that answers with an empty 200."""
        body = json.dumps(payload).encode()
        try:
            with self._open("POST", path, body, {"Content-Type": "application/json"}) as response:
                response.read()
        except (OSError, http.client.HTTPException) as error:
            if isinstance(error, ServerUnavailable):
                raise
            raise ServerUnavailable(f"{self.base_url}{path}: connection dropped: {error}") from error

    def _json(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> Any:
        try:
            with self._open(method, path, body, headers) as response:
                data = response.read()
        except (OSError, http.client.HTTPException) as error:
            if isinstance(error, ServerUnavailable | ComfyRequestError):
                raise
            raise ServerUnavailable(f"{self.base_url}{path}: connection dropped: {error}") from error
        payload = _try_json(data)
        if payload is None and data.strip() != b"null":
            raise ComfyRequestError(f"{self.base_url}{path} did not answer JSON: {data[:200]!r}")
        return payload

    def _open(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        request = Request(self.base_url + path, data=body, method=method, headers=headers or {})
        try:
            return urlopen(request, timeout=self.timeout)
        except HTTPError as error:
            body_bytes = error.read()
            error.close()
            if error.code in _TRANSIENT_STATUS:
                raise ServerUnavailable(f"{self.base_url}{path}: HTTP {error.code}") from error
            status = _HttpStatus(error.code, body_bytes)
            if path.startswith("/prompt"):
                raise status from None
            raise ComfyRequestError(
                f"{self.base_url}{path} answered HTTP {error.code}: {status.text}"
            ) from None
        except URLError as error:
            raise ServerUnavailable(f"{self.base_url}{path}: {error.reason}") from error
        except (OSError, http.client.HTTPException) as error:
            raise ServerUnavailable(f"{self.base_url}{path}: {error}") from error


class _HttpStatus(Exception):
    def __init__(self, code: int, body: bytes) -> None:
        super().__init__(code)
        self.code = code
        self.body = body
        self.text = body[:500].decode("utf-8", "replace")


def _read_chunk(response: Any, output: OutputFile) -> bytes:
    """The next MiB of a ``/view`` answer; a dropped connection is :class:`ServerUnavailable`."""
    try:
        return response.read(1 << 20)
    except (OSError, http.client.HTTPException) as error:
        raise ServerUnavailable(f"connection dropped while reading {output.filename}: {error}") from error


def _open_partial(partial: Path) -> Any:
    partial.parent.mkdir(parents=True, exist_ok=True)
    return partial.open("wb")


def _flush(handle: Any) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _local_write(output: OutputFile, destination: Path, action: Callable[[], _Result]) -> _Result:
    """Run a file-system ``action`` of a download; an ``OSError`` becomes :class:`LocalWriteError`."""
    try:
        return action()
    except OSError as error:
        where = f"{output.subfolder}/{output.filename}" if output.subfolder else output.filename
        raise LocalWriteError(
            f"cannot write {destination} on this machine ({error.strerror or error}); the server keeps the "
            f"file as {where} in its {output.type or 'output'} folder. Free some space or fix the output "
            "folder, then run the same command again"
        ) from error


def output_files(history_entry: dict, folder_type: str = "output") -> list[OutputFile]:
    """Files listed in a ``/history`` entry's outputs, of ``folder_type`` (previews are ``temp``).

    ``outputs`` is ``{node_id: {"images": [{"filename", "subfolder", "type"}], "gifs": [...], ...}}``;
    every list of such records counts, whatever its key (images, gifs, videos, audio, ...).
    """
    files: list[OutputFile] = []
    outputs = history_entry.get("outputs") or {}
    for node_output in outputs.values():
        if not isinstance(node_output, dict):
            continue
        for records in node_output.values():
            if not isinstance(records, list):
                continue
            for record in records:
                if isinstance(record, dict) and isinstance(record.get("filename"), str):
                    output = OutputFile(
                        record["filename"], record.get("subfolder") or "", record.get("type") or ""
                    )
                    if output.type == folder_type and output not in files:
                        files.append(output)
    return files


def history_error(history_entry: dict) -> str | None:
    """Error text if a ``/history`` entry records a failed run, else ``None``."""
    status = history_entry.get("status") or {}
    if status.get("status_str") != "error" and status.get("completed", True):
        return None
    for event, data in status.get("messages") or []:
        if event == "execution_error" and isinstance(data, dict):
            return describe_execution_error(data)
        if event == "execution_interrupted":
            return "execution was interrupted on the server"
    return "the server recorded the prompt as failed without an error message"


def describe_execution_error(data: dict) -> str:
    """One line from an ``execution_error`` message: which node failed, and why."""
    return (
        f"{data.get('node_type', '?')} (node {data.get('node_id', '?')}) raised "
        f"{data.get('exception_type', 'an exception')}: {data.get('exception_message', '').strip()}"
    )


def describe_prompt_error(error: object, node_errors: dict[str, Any]) -> str:
    """One line from a ``POST /prompt`` 400 answer: the error and every node error."""
    if isinstance(error, dict):
        text = error.get("message") or error.get("type") or "invalid prompt"
        details = error.get("details")
        if details:
            text = f"{text}: {details}"
    else:
        text = str(error or "invalid prompt")
    parts = [f"prompt rejected: {text}"]
    for node_id, node_error in (node_errors or {}).items():
        if not isinstance(node_error, dict):
            continue
        reasons = "; ".join(
            f"{item.get('message', '')}: {item.get('details', '')}".strip(": ")
            for item in node_error.get("errors") or []
            if isinstance(item, dict)
        )
        parts.append(f"{node_error.get('class_type', '?')} (node {node_id}): {reasons}")
    return " | ".join(parts)


def _queue_ids(items: object) -> tuple[str, ...]:
    """Queue items are ``[number, prompt_id, prompt, extra_data, outputs_to_execute]``."""
    if not isinstance(items, list):
        return ()
    return tuple(str(item[1]) for item in items if isinstance(item, list | tuple) and len(item) > 1)


def _try_json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
