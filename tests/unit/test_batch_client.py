"""The HTTP client against the stub server: uploads, queueing, errors, history parsing."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import pytest
from batch_stub_server import StubBehaviour, StubComfyServer, api_workflow

from customvideox_core.batch.comfy_client import (
    ComfyClient,
    ComfyRequestError,
    OutputFile,
    PromptRejected,
    QueueState,
    ServerUnavailable,
    describe_prompt_error,
    history_error,
    output_files,
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_upload_uses_the_name_the_server_returns(stub: StubComfyServer, tmp_path: Path) -> None:
    client = ComfyClient(stub.url, timeout=5)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = tmp_path / "a" / "ref.png"
    second = tmp_path / "b" / "ref.png"
    first.write_bytes(b"first image")
    second.write_bytes(b"second image")
    assert client.upload_image(first) == "ref.png"
    assert client.upload_image(second) == "ref (1).png", "a different file of the same name is renamed"
    assert client.upload_image(first) == "ref.png", "the same content keeps its name"
    assert stub.state.uploads == {"ref.png": b"first image", "ref (1).png": b"second image"}


def test_rejected_prompt_carries_the_node_errors(stub: StubComfyServer) -> None:
    client = ComfyClient(stub.url, timeout=5)
    with pytest.raises(PromptRejected) as raised:
        client.queue_prompt(api_workflow(), "client", "5f0b2a4e-8f43-4a53-9c1b-0d6d2f0b7d11")
    assert set(raised.value.node_errors) == {"img", "maskload"}
    text = str(raised.value)
    assert "Prompt outputs failed validation" in text
    assert "LoadImage (node img): Value not in list: image: 'example.png'" in text
    assert stub.queue_listing() == {"queue_running": [], "queue_pending": []}


def test_queue_history_and_download_round_trip(stub: StubComfyServer, tmp_path: Path) -> None:
    client = ComfyClient(stub.url, timeout=5)
    reference = tmp_path / "r.png"
    reference.write_bytes(b"r")
    workflow = api_workflow(with_mask=False)
    workflow["img"]["inputs"]["image"] = client.upload_image(reference)
    prompt_id = "0e4b8f43-4a53-4c1b-9d6d-2f0b7d115f0b"
    assert client.queue_prompt(workflow, "client", prompt_id) == prompt_id
    for _ in range(200):
        entry = client.history(prompt_id)
        if entry is not None:
            break
        # Not in the history yet: then queued or running (unless it finished just now).
        assert prompt_id in client.queue() or client.history(prompt_id) is not None
        time.sleep(0.01)
    assert entry is not None and history_error(entry) is None
    (saved,) = output_files(entry)
    assert saved == OutputFile("CustomVideoX_00001_.mp4", "", "output")
    client.download(saved, tmp_path / "out" / saved.filename)
    assert (tmp_path / "out" / saved.filename).read_bytes() == stub.state.outputs[("", saved.filename)]
    with pytest.raises(ComfyRequestError, match="HTTP 404"):
        client.download(OutputFile("absent.mp4", "", "output"), tmp_path / "absent.mp4")
    assert not (tmp_path / "absent.mp4").exists()
    assert client.history("unknown") is None


def test_unreachable_server_is_unavailable_not_a_job_error() -> None:
    client = ComfyClient(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(ServerUnavailable):
        client.queue()
    with pytest.raises(ServerUnavailable):
        client.open_websocket("abc")


def test_history_parsing_follows_comfyui_entries() -> None:
    entry = {
        "outputs": {
            "9": {
                "images": [
                    {"filename": "a_00001_.mp4", "subfolder": "vid", "type": "output"},
                    {"filename": "preview.png", "subfolder": "", "type": "temp"},
                ],
                "animated": [True],
            },
            "10": {"gifs": [{"filename": "a_00001_.webp", "subfolder": "", "type": "output"}]},
            "11": {"text": ["not a file"]},
        },
        "status": {"status_str": "success", "completed": True, "messages": []},
    }
    assert output_files(entry) == [
        OutputFile("a_00001_.mp4", "vid", "output"),
        OutputFile("a_00001_.webp", "", "output"),
    ]
    assert history_error(entry) is None
    failed = {
        "outputs": {},
        "status": {
            "status_str": "error",
            "completed": False,
            "messages": [
                ["execution_start", {"prompt_id": "p"}],
                [
                    "execution_error",
                    {
                        "node_id": "7",
                        "node_type": "CustomVideoXSample",
                        "exception_type": "torch.OutOfMemoryError",
                        "exception_message": "CUDA out of memory\n",
                    },
                ],
            ],
        },
    }
    assert (
        history_error(failed)
        == "CustomVideoXSample (node 7) raised torch.OutOfMemoryError: CUDA out of memory"
    )


def test_prompt_error_text_lists_every_node() -> None:
    text = describe_prompt_error(
        {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": "",
        },
        {
            "3": {
                "errors": [{"message": "Value bigger than max", "details": "peak: 100.0 > 10.0"}],
                "class_type": "CustomVideoXTimeAwareBias",
            },
        },
    )
    assert text == (
        "prompt rejected: Prompt outputs failed validation | "
        "CustomVideoXTimeAwareBias (node 3): Value bigger than max: peak: 100.0 > 10.0"
    )


def test_client_refuses_malformed_server_urls() -> None:
    with pytest.raises(ValueError, match="http://127.0.0.1:8188"):
        ComfyClient("127.0.0.1:8188")
    assert ComfyClient("https://h:1/").websocket_url("c d") == "wss://h:1/ws?clientId=c+d"


def test_cancel_deletes_pending_and_interrupts_running_prompts(tmp_path: Path) -> None:
    stub = StubComfyServer(StubBehaviour(steps=200, step_delay=0.01)).start()
    try:
        client = ComfyClient(stub.url, timeout=5)
        reference = tmp_path / "r.png"
        reference.write_bytes(b"r")
        workflow = api_workflow(with_mask=False)
        workflow["img"]["inputs"]["image"] = client.upload_image(reference)
        running, pending = (str(uuid.UUID(int=number, version=4)) for number in (1, 2))
        client.queue_prompt(workflow, "client", running)
        client.queue_prompt(workflow, "client", pending)
        for _ in range(200):
            if running in client.queue().running:
                break
            time.sleep(0.01)
        client.cancel(pending)
        assert client.queue() == QueueState(running=(running,), pending=())
        client.cancel(running)
        for _ in range(300):
            entry = client.history(running)
            if entry is not None:
                break
            time.sleep(0.01)
        assert entry is not None
        assert history_error(entry) == "execution was interrupted on the server"
        assert [execution.outcome for execution in stub.executions] == ["interrupted"]
    finally:
        stub.stop()
