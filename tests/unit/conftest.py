"""Unit-tier fixtures shared by the batch tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from batch_stub_server import StubBehaviour, StubComfyServer


@pytest.fixture
def stub() -> Iterator[StubComfyServer]:
    """A started stub ComfyUI server (``batch_stub_server``), stopped after the test."""
    server = StubComfyServer().start()
    yield server
    server.stop()


@pytest.fixture
def stubs() -> Iterator[Callable[[StubBehaviour | None], StubComfyServer]]:
    """Starts stub servers on demand (``stubs(behaviour)``); every one is stopped after the test."""
    started: list[StubComfyServer] = []

    def start(behaviour: StubBehaviour | None = None) -> StubComfyServer:
        server = StubComfyServer(behaviour).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
