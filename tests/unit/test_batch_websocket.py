"""The stdlib websocket client against RFC 6455's own examples and a raw socket peer."""

from __future__ import annotations

import json
import socket
import struct

import pytest
from batch_stub_server import StubComfyServer, server_frame
from hypothesis import given, settings
from hypothesis import strategies as st

from customvideox_core.batch.websocket import (
    OPCODE_PING,
    OPCODE_PONG,
    OPCODE_TEXT,
    WebSocketClosed,
    WebSocketConnection,
    accept_key,
    apply_mask,
    decode_frame,
    encode_frame,
)


@pytest.fixture
def pair():
    client_side, server_side = socket.socketpair()
    connection = WebSocketConnection(client_side)
    yield connection, server_side
    connection.close()
    server_side.close()


def test_accept_key_matches_rfc_6455_example() -> None:
    # RFC 6455 section 1.3.
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_frames_match_rfc_6455_section_5_7_examples() -> None:
    assert encode_frame(OPCODE_TEXT, b"Hello", None) == bytes.fromhex("810548656c6c6f")
    masked = bytes.fromhex("818537fa213d7f9f4d5158")
    assert encode_frame(OPCODE_TEXT, b"Hello", bytes.fromhex("37fa213d")) == masked
    frame, consumed = decode_frame(masked)
    assert (frame.opcode, frame.payload, frame.fin, consumed) == (OPCODE_TEXT, b"Hello", True, len(masked))
    assert encode_frame(0x2, bytes(256), None)[:4] == bytes.fromhex("827e0100")
    assert encode_frame(0x2, bytes(65536), None)[:10] == bytes.fromhex("827f0000000000010000")


@settings(max_examples=50, deadline=None)
@given(payload=st.binary(max_size=300), mask=st.binary(min_size=4, max_size=4))
def test_mask_is_a_bytewise_xor(payload: bytes, mask: bytes) -> None:
    assert apply_mask(payload, mask) == bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))


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
    server.settimeout(1.0)
    raw = server.recv(100)
    assert raw[0] == 0x80 | OPCODE_PONG and raw[1] & 0x80, "client frames must be masked"
    length = raw[1] & 0x7F
    assert apply_mask(raw[6 : 6 + length], raw[2:6]) == b"are you there"


def test_close_frame_and_eof_raise_closed(pair) -> None:
    connection, server = pair
    server.sendall(server_frame(0x8, struct.pack("!H", 1000)))
    with pytest.raises(WebSocketClosed):
        connection.receive(timeout=1.0)
    other_client, other_server = socket.socketpair()
    other = WebSocketConnection(other_client)
    other_server.close()
    with pytest.raises(WebSocketClosed):
        other.receive(timeout=1.0)
    other.close()


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
