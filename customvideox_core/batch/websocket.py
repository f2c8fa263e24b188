"""ComfyUI's ``/ws`` through ``websocket-client`` (the library ComfyUI's own API examples use).

A thin adapter that gives the batch worker what it needs and nothing more: connect with a timeout,
receive one whole message with a timeout (``None`` when none came), close. The library does the
protocol: the opening handshake, masking, fragmented messages, ping → pong, ``ws://`` and ``wss://``.
Its frame buffer keeps a partly received frame across a receive timeout, so no message is lost.

Errors keep the batch client's own two classes, so the worker does not depend on the library's:
:class:`WebSocketError` (handshake refused, protocol error) and :class:`WebSocketClosed` (the server
closed the websocket or the connection dropped).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import websocket


class WebSocketError(ConnectionError):
    """The websocket failed (handshake refused, protocol error, or connection closed)."""


class WebSocketClosed(WebSocketError):
    """The peer closed the websocket or the connection dropped."""


class WebSocketConnection:
    """A client websocket. Use :meth:`connect`; then :meth:`receive` messages and :meth:`close`."""

    def __init__(self, connection: websocket.WebSocket) -> None:
        self._connection = connection
        self.closed = False

    @classmethod
    def connect(cls, url: str, timeout: float = 10.0) -> WebSocketConnection:
        """Open ``ws://host:port/path?query`` (or ``wss://``) and complete the opening handshake.

        Raises ``ValueError`` for other URLs, ``OSError`` when the server cannot be reached and
        :class:`WebSocketError` when it refuses the handshake.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"expected a ws:// or wss:// URL, got {url!r}")
        try:
            connection = websocket.create_connection(url, timeout=timeout, enable_multithread=True)
        except websocket.WebSocketBadStatusException as error:
            raise WebSocketError(f"websocket handshake to {url} refused: HTTP {error.status_code}") from error
        except websocket.WebSocketException as error:
            raise WebSocketError(f"websocket handshake to {url} failed: {error}") from error
        return cls(connection)

    def receive(self, timeout: float | None) -> str | bytes | None:
        """Next whole message (``str`` for text, ``bytes`` for binary), or ``None`` after ``timeout`` s.

        Answers pings on the way. Raises :class:`WebSocketClosed` when the peer closes or the
        connection drops.
        """
        if self.closed:
            raise WebSocketClosed("websocket is closed")
        self._connection.settimeout(timeout)
        try:
            opcode, payload = self._connection.recv_data()
        except websocket.WebSocketTimeoutException:
            return None
        except (websocket.WebSocketConnectionClosedException, OSError) as error:
            self._drop()
            raise WebSocketClosed(
                f"websocket connection dropped: {error or 'closed by the server'}"
            ) from error
        except websocket.WebSocketException as error:
            self._drop()
            raise WebSocketError(f"websocket protocol error: {error}") from error
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            self._drop()
            raise WebSocketClosed("the server closed the websocket")
        return payload.decode("utf-8") if opcode == websocket.ABNF.OPCODE_TEXT else payload

    def send_text(self, text: str) -> None:
        """Send one text message (masked, as a client must)."""
        try:
            self._connection.send(text)
        except (websocket.WebSocketException, OSError) as error:
            self._drop()
            raise WebSocketClosed(f"websocket send failed: {error}") from error

    def close(self) -> None:
        """Send a close frame (best effort) and close the socket."""
        if self.closed:
            return
        self.closed = True
        self._connection.close(timeout=0)  # sends the close frame, does not wait for the answer

    def _drop(self) -> None:
        self.closed = True
        self._connection.shutdown()
