"""Unit-tier fixtures shared by the batch tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from batch_stub_server import StubComfyServer


@pytest.fixture
def stub() -> Iterator[StubComfyServer]:
    """A started stub ComfyUI server (``batch_stub_server``), stopped after the test."""
    server = StubComfyServer().start()
    yield server
    server.stop()
