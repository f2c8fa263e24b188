"""The websocket client (``websocket-client`` under the batch client's adapter) against RFC 6455's own
examples and a raw socket peer that speaks the server side by hand."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading

import pytest
import websocket
from batch_stub_server import StubComfyServer, server_frame
from hypothesis import given, settings
from hypothesis import strategies as st

from customvideox_core.batch.websocket import WebSocketClosed, WebSocketConnection, WebSocketError

OPCODE_TEXT, OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG = 0x1, 0x8, 0x9, 0xA
RFC_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_key(client_key: str) -> str:
    """RFC 6455 section 1.3, written out independently of any library."""
    return base64.b64encode(hashlib.sha1((client_key + RFC_GUID).encode()).digest()).decode()


def unmask(payload: bytes, mask: bytes) -> bytes:
    return bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))


def read_client_frame(server: socket.socket, opcode: int) -> bytes:
    """The payload of the next (short) frame the client sent; asserts its opcode and that it is masked."""
    server.settimeout(1.0)
    raw = server.recv(100)
    assert raw[0] == 0x80 | opcode and raw[1] & 0x80, "client frames must be masked"
    length = raw[1] & 0x7F
    return unmask(raw[6 : 6 + length], raw[2:6])


def _accept_one(listener: socket.socket, status: str, answer: list) -> None:
    peer, _ = listener.accept()
    request = b""
    while b"\r\n\r\n" not in request:
        request += peer.recv(4096)
    headers = dict(
        line.split(": ", 1) for line in request.decode("latin-1").split("\r\n")[1:] if ": " in line
    )
    key = headers.get("Sec-WebSocket-Key", "")
    peer.sendall(
        (
            f"HTTP/1.1 {status}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
        ).encode()
    )
    answer.append(peer)


def raw_peer(status: str = "101 Switching Protocols") -> tuple[WebSocketConnection, socket.socket]:
    """Connect the client to a one-shot loopback server; return the client and the server's socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    answer: list[socket.socket] = []
    thread = threading.Thread(target=_accept_one, args=(listener, status, answer), daemon=True)
    thread.start()
    try:
        connection = WebSocketConnection.connect(
            f"ws://127.0.0.1:{listener.getsockname()[1]}/ws?clientId=abc", timeout=2.0
        )
    finally:
        thread.join(timeout=5)
        listener.close()
    return connection, answer[0]


@pytest.fixture
def pair():
    connection, server_side = raw_peer()
    yield connection, server_side
    connection.close()
    server_side.close()


def test_accept_key_matches_rfc_6455_example() -> None:
    # RFC 6455 section 1.3: the client's handshake is checked against this value.
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_frames_match_rfc_6455_section_5_7_examples() -> None:
    unmasked = websocket.ABNF(1, 0, 0, 0, OPCODE_TEXT, 0, b"Hello")
    assert unmasked.format() == bytes.fromhex("810548656c6c6f")
    masked = websocket.ABNF(1, 0, 0, 0, OPCODE_TEXT, 1, b"Hello")
    masked.get_mask_key = lambda length: bytes.fromhex("37fa213d")
    assert masked.format() == bytes.fromhex("818537fa213d7f9f4d5158")
    assert server_frame(0x2, bytes(256))[:4] == bytes.fromhex("827e0100")
    assert server_frame(0x2, bytes(65536))[:10] == bytes.fromhex("827f0000000000010000")


@settings(max_examples=50, deadline=None)
@given(payload=st.binary(max_size=300), mask=st.binary(min_size=4, max_size=4))
def test_mask_is_a_bytewise_xor(payload: bytes, mask: bytes) -> None:
    assert websocket.ABNF.mask(mask, payload) == unmask(payload, mask)


def test_client_frames_are_masked(pair) -> None:
    connection, server = pair
    connection.send_text("hi there")
    assert read_client_frame(server, OPCODE_TEXT) == b"hi there"


def test_fragmented_text_message_is_reassembled(pair) -> None:
    connection, server = pair
    server.sendall(bytes.fromhex("010348656c") + bytes.fromhex("80026c6f"))  # RFC 6455 section 5.7
    assert connection.receive(timeout=1.0) == "Hello"


def test_large_binary_message_with_64_bit_length(pair) -> None:
    connection, server = pair
    payload = bytes(range(256)) * 300
    frame = server_frame(0x2, payload)
    assert frame[1] == 127
    server.sendall(frame)
    assert connection.receive(timeout=2.0) == payload


def test_timeout_mid_frame_loses_nothing(pair) -> None:
    connection, server = pair
    frame = server_frame(OPCODE_TEXT, json.dumps({"type": "progress", "data": {"value": 3}}).encode())
    server.sendall(frame[:5])
    assert connection.receive(timeout=0.05) is None
    server.sendall(frame[5:])
    assert json.loads(connection.receive(timeout=1.0)) == {"type": "progress", "data": {"value": 3}}


def test_ping_is_answered_with_a_masked_pong(pair) -> None:
    connection, server = pair
    server.sendall(server_frame(OPCODE_PING, b"are you there") + server_frame(OPCODE_TEXT, b"after"))
    assert connection.receive(timeout=1.0) == "after"
    assert read_client_frame(server, OPCODE_PONG) == b"are you there"


def test_close_frame_and_eof_raise_closed(pair) -> None:
    connection, server = pair
    server.sendall(server_frame(OPCODE_CLOSE, struct.pack("!H", 1000)))
    with pytest.raises(WebSocketClosed):
        connection.receive(timeout=1.0)
    assert connection.closed
    other, other_server = raw_peer()
    other_server.close()
    with pytest.raises(WebSocketClosed):
        other.receive(timeout=1.0)
    other.close()


def test_refused_handshake_is_a_websocket_error() -> None:
    with pytest.raises(WebSocketError, match="refused"):
        raw_peer(status="403 Forbidden")


def test_handshake_and_first_status_message_from_the_stub() -> None:
    stub = StubComfyServer().start()
    try:
        connection = WebSocketConnection.connect(f"ws://127.0.0.1:{stub.port}/ws?clientId=abc", timeout=2.0)
        message = json.loads(connection.receive(timeout=2.0))
        assert message == {
            "type": "status",
            "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "abc"},
        }
        connection.close()
    finally:
        stub.stop()


def test_connect_rejects_non_websocket_urls() -> None:
    with pytest.raises(ValueError, match="ws://"):
        WebSocketConnection.connect("http://127.0.0.1:1/ws")
