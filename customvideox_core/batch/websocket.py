"""A minimal RFC 6455 websocket client on the standard library (enough for ComfyUI's ``/ws``).

Supports text and binary messages (fragmented or not), ping → pong, close, 7/16/64-bit payload
lengths, client-side masking, ``ws://`` and ``wss://``. Receiving takes a timeout and never loses a
partly received frame: bytes are buffered until a whole frame is there.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
"""Fixed by RFC 6455 section 1.3 for the Sec-WebSocket-Accept handshake."""

OPCODE_CONTINUATION = 0x0
OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9
OPCODE_PONG = 0xA
_MAX_HANDSHAKE_BYTES = 65536


class WebSocketError(ConnectionError):
    """The websocket failed (handshake refused, protocol error, or connection closed)."""


class WebSocketClosed(WebSocketError):
    """The peer closed the websocket or the connection dropped."""


@dataclass(frozen=True)
class Frame:
    """One decoded frame."""

    fin: bool
    opcode: int
    payload: bytes


def accept_key(client_key: str) -> str:
    """``Sec-WebSocket-Accept`` value a server must answer for ``client_key``."""
    digest = hashlib.sha1((client_key + WEBSOCKET_GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def encode_frame(opcode: int, payload: bytes, mask_key: bytes | None, fin: bool = True) -> bytes:
    """Encode one frame; clients must pass a 4-byte ``mask_key``, servers ``None``."""
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if mask_key is not None else 0
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, mask_bit | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if mask_key is None:
        return header + payload
    if len(mask_key) != 4:
        raise ValueError(f"a websocket mask key has 4 bytes, got {len(mask_key)}")
    return header + mask_key + apply_mask(payload, mask_key)


def apply_mask(payload: bytes, mask_key: bytes) -> bytes:
    """XOR ``payload`` with the repeating 4-byte ``mask_key`` (masking and unmasking are the same)."""
    if not payload:
        return b""
    repeated = (mask_key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(payload), "big")


def decode_frame(buffer: bytes | bytearray) -> tuple[Frame, int] | None:
    """Decode the first frame of ``buffer`` → ``(frame, bytes consumed)``, or ``None`` if incomplete."""
    if len(buffer) < 2:
        return None
    first, second = buffer[0], buffer[1]
    if first & 0x70:
        raise WebSocketError("websocket frame uses reserved bits (no extension was negotiated)")
    length = second & 0x7F
    offset = 2
    if length == 126:
        if len(buffer) < 4:
            return None
        (length,) = struct.unpack_from("!H", buffer, 2)
        offset = 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        (length,) = struct.unpack_from("!Q", buffer, 2)
        offset = 10
    mask_key = None
    if second & 0x80:
        if len(buffer) < offset + 4:
            return None
        mask_key = bytes(buffer[offset : offset + 4])
        offset += 4
    if len(buffer) < offset + length:
        return None
    payload = bytes(buffer[offset : offset + length])
    if mask_key is not None:
        payload = apply_mask(payload, mask_key)
    return Frame(fin=bool(first & 0x80), opcode=first & 0x0F, payload=payload), offset + length


class WebSocketConnection:
    """A client websocket. Use :meth:`connect`; then :meth:`receive` messages and :meth:`close`."""

    def __init__(self, sock: socket.socket, buffered: bytes = b"") -> None:
        self._socket = sock
        self._buffer = bytearray(buffered)
        self._fragments: list[bytes] = []
        self._fragment_opcode: int | None = None
        self.closed = False

    @classmethod
    def connect(cls, url: str, timeout: float = 10.0) -> WebSocketConnection:
        """Open ``ws://host:port/path?query`` (or ``wss://``) and complete the opening handshake."""
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"expected a ws:// or wss:// URL, got {url!r}")
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        sock = socket.create_connection((parts.hostname, port), timeout=timeout)
        try:
            if parts.scheme == "wss":
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
            key = base64.b64encode(os.urandom(16)).decode("ascii")
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            host = parts.netloc.rsplit("@", 1)[-1]
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            sock.sendall(request.encode("ascii"))
            head, rest = _read_handshake(sock)
            _check_handshake(head, key, url)
        except BaseException:
            sock.close()
            raise
        return cls(sock, rest)

    def receive(self, timeout: float | None) -> str | bytes | None:
        """Next whole message (``str`` for text, ``bytes`` for binary), or ``None`` after ``timeout`` s.

        Answers pings on the way. Raises :class:`WebSocketClosed` when the peer closes or the
        connection drops.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            decoded = decode_frame(self._buffer)
            if decoded is None:
                if not self._fill(deadline):
                    return None
                continue
            frame, consumed = decoded
            del self._buffer[:consumed]
            message = self._handle(frame)
            if message is not None:
                return message

    def send_text(self, text: str) -> None:
        """Send one text message (masked, as a client must)."""
        self._send(OPCODE_TEXT, text.encode("utf-8"))

    def close(self) -> None:
        """Send a close frame (best effort) and close the socket."""
        if self.closed:
            return
        self.closed = True
        try:
            self._socket.sendall(encode_frame(OPCODE_CLOSE, struct.pack("!H", 1000), os.urandom(4)))
        except OSError:
            pass  # The peer is already gone; closing our end is all that is left to do.
        finally:
            self._socket.close()

    def _send(self, opcode: int, payload: bytes) -> None:
        try:
            self._socket.sendall(encode_frame(opcode, payload, os.urandom(4)))
        except OSError as error:
            self._socket.close()
            self.closed = True
            raise WebSocketClosed(f"websocket send failed: {error}") from error

    def _fill(self, deadline: float | None) -> bool:
        """Read more bytes into the buffer; ``False`` when the deadline passed first."""
        if self.closed:
            raise WebSocketClosed("websocket is closed")
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return False
        self._socket.settimeout(remaining)
        try:
            chunk = self._socket.recv(65536)
        except TimeoutError:
            return False
        except OSError as error:
            self._socket.close()
            self.closed = True
            raise WebSocketClosed(f"websocket connection dropped: {error}") from error
        if not chunk:
            self._socket.close()
            self.closed = True
            raise WebSocketClosed("websocket connection closed by the server")
        self._buffer.extend(chunk)
        return True

    def _handle(self, frame: Frame) -> str | bytes | None:
        if frame.opcode == OPCODE_PING:
            self._send(OPCODE_PONG, frame.payload)
            return None
        if frame.opcode == OPCODE_PONG:
            return None
        if frame.opcode == OPCODE_CLOSE:
            self.close()
            raise WebSocketClosed("the server closed the websocket")
        if frame.opcode in (OPCODE_TEXT, OPCODE_BINARY):
            if self._fragment_opcode is not None:
                raise WebSocketError("websocket protocol error: new message before the last one ended")
            if frame.fin:
                return _message(frame.opcode, frame.payload)
            self._fragment_opcode, self._fragments = frame.opcode, [frame.payload]
            return None
        if frame.opcode == OPCODE_CONTINUATION:
            if self._fragment_opcode is None:
                raise WebSocketError("websocket protocol error: continuation frame without a message")
            self._fragments.append(frame.payload)
            if not frame.fin:
                return None
            opcode, payload = self._fragment_opcode, b"".join(self._fragments)
            self._fragment_opcode, self._fragments = None, []
            return _message(opcode, payload)
        raise WebSocketError(f"websocket protocol error: unknown opcode {frame.opcode:#x}")


def _message(opcode: int, payload: bytes) -> str | bytes:
    return payload.decode("utf-8") if opcode == OPCODE_TEXT else payload


def _read_handshake(sock: socket.socket) -> tuple[bytes, bytes]:
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(4096)
        if not chunk:
            raise WebSocketClosed("connection closed during the websocket handshake")
        received += chunk
        if len(received) > _MAX_HANDSHAKE_BYTES:
            raise WebSocketError("websocket handshake response is too large")
    head, _, rest = received.partition(b"\r\n\r\n")
    return head, rest


def _check_handshake(head: bytes, key: str, url: str) -> None:
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[1] != "101":
        raise WebSocketError(f"websocket handshake to {url} refused: {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("sec-websocket-accept") != accept_key(key):
        raise WebSocketError(f"websocket handshake to {url}: the server's Sec-WebSocket-Accept is wrong")
