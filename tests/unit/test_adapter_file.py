"""Adapter files: safetensors only, metadata round trip, no silent overwrite, host checks."""

import logging
import pickle
import struct

import pytest
import torch
from host_signatures import COGVIDEOX_2B, COGVIDEOX_5B, COGVIDEOX_15
from safetensors.torch import save_file

from customvideox_core import LAYOUT_VERSION
from customvideox_core.adapter_file import (
    ADAPTER_FORMAT,
    AdapterMetadata,
    AdapterMismatchError,
    check_adapter_host,
    load_adapter,
    save_adapter,
)
from customvideox_core.host_signature import HostSignature


def metadata(host=COGVIDEOX_5B, **kwargs):
    values = {
        "host": host,
        "rank": 4,
        "alpha": 4.0,
        "targets": ("q", "k", "v", "attn_out"),
        "layout_version": LAYOUT_VERSION,
        "steps": 120,
        "data_summary": "3 videos, 3 subjects",
        "extra": {"prompt_template": "a photo of {}"},
    }
    values.update(kwargs)
    return AdapterMetadata(**values)


def adapter_tensors():
    generator = torch.Generator().manual_seed(0)
    return {
        "diffusion_model.blocks.0.q.lora_A.weight": torch.randn(4, 8, generator=generator),
        "diffusion_model.blocks.0.q.lora_B.weight": torch.randn(8, 4, generator=generator),
        "diffusion_model.blocks.0.q.alpha": torch.tensor(4.0),
    }


def test_save_load_round_trip_keeps_tensors_and_metadata(tmp_path):
    tensors = adapter_tensors()
    written = save_adapter(tmp_path / "subject.safetensors", tensors, metadata())
    assert written == tmp_path / "subject.safetensors"
    loaded, loaded_metadata = load_adapter(written)
    assert set(loaded) == set(tensors)
    for key, tensor in tensors.items():
        assert torch.equal(loaded[key], tensor)
    assert loaded_metadata == metadata()
    assert loaded_metadata.extra["prompt_template"] == "a photo of {}"
    assert list(tmp_path.iterdir()) == [written]  # no temporary file left behind


def test_header_is_flat_strings_and_names_the_format():
    header = metadata().to_header()
    assert header["format"] == ADAPTER_FORMAT
    assert header["host.hidden_size"] == "3072"
    assert header["targets"] == "q,k,v,attn_out"
    assert all(isinstance(value, str) for value in header.values())


def test_metadata_extra_is_a_frozen_copy():
    source = {"key": "value"}
    made = metadata(extra=source)
    source["key"] = "changed"
    assert made.extra["key"] == "value"
    with pytest.raises(TypeError):
        made.extra["key"] = "x"


@pytest.mark.parametrize(
    "kwargs",
    [{"rank": 0}, {"alpha": -1.0}, {"targets": ()}, {"targets": ("q,k",)}, {"layout_version": -1}],
)
def test_invalid_metadata_is_refused(kwargs):
    with pytest.raises(ValueError, match="AdapterMetadata"):
        metadata(**kwargs)


def test_refuses_to_overwrite_and_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "subject.safetensors"
    save_adapter(path, adapter_tensors(), metadata(steps=1))
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_adapter(path, adapter_tensors(), metadata(steps=2))
    assert path.read_bytes() == before
    save_adapter(path, adapter_tensors(), metadata(steps=2), overwrite=True)
    assert load_adapter(path)[1].steps == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["subject.safetensors"]


def test_save_refuses_other_suffixes_and_empty_adapters(tmp_path):
    with pytest.raises(ValueError, match=r"\.safetensors"):
        save_adapter(tmp_path / "subject.pt", adapter_tensors(), metadata())
    with pytest.raises(ValueError, match="empty"):
        save_adapter(tmp_path / "subject.safetensors", {}, metadata())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin", ".pkl"])
def test_load_refuses_pickle_suffixes_without_reading_them(tmp_path, suffix):
    path = tmp_path / f"adapter{suffix}"

    class Exploding:
        def __reduce__(self):
            return (pytest.fail, ("the pickle was executed",))

    path.write_bytes(pickle.dumps(Exploding()))
    with pytest.raises(ValueError, match="safetensors") as caught:
        load_adapter(path)
    assert str(path) in str(caught.value)


def test_pickle_renamed_to_safetensors_is_reported_not_executed(tmp_path):
    path = tmp_path / "adapter.safetensors"
    torch.save({"blocks.0.q.lora_A.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError, match="not a valid safetensors") as caught:
        load_adapter(path)
    assert "pickle" in str(caught.value) and str(path) in str(caught.value)


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, not a tensor file", struct.pack("<Q", 10**9) + b"{}", struct.pack("<Q", 2) + b"[]"],
)
def test_garbage_files_are_reported_by_name(tmp_path, content):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="broken.safetensors"):
        load_adapter(path)


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        load_adapter(tmp_path / "nothing_here.safetensors")


def test_third_party_lora_has_no_metadata(tmp_path):
    path = tmp_path / "third_party.safetensors"
    save_file({"blocks.0.q.lora_down.weight": torch.ones(2, 4)}, str(path), metadata={"ss_network_dim": "2"})
    tensors, found = load_adapter(path)
    assert found is None
    assert torch.equal(tensors["blocks.0.q.lora_down.weight"], torch.ones(2, 4))


def test_broken_customvideox_metadata_is_an_error(tmp_path):
    path = tmp_path / "half.safetensors"
    header = metadata().to_header()
    del header["rank"]
    save_file(adapter_tensors(), str(path), metadata=header)
    with pytest.raises(ValueError, match="rank"):
        load_adapter(path)


def test_check_adapter_host_names_both_models():
    with pytest.raises(AdapterMismatchError) as caught:
        check_adapter_host(metadata(host=COGVIDEOX_2B), COGVIDEOX_5B)
    message = str(caught.value)
    assert "adapter was trained for CogVideoX-2B (1920 wide, 30 layers)" in message
    assert "this model is CogVideoX-5B (3072 wide, 42 layers)" in message


def test_check_adapter_host_family_and_depth():
    wan = HostSignature("wan", 3072, 30, 24, 128, 2)
    with pytest.raises(AdapterMismatchError, match="Wan 2.2 5B"):
        check_adapter_host(metadata(host=COGVIDEOX_5B), wan)
    shallow = HostSignature("cogvideox", 3072, 30, 48, 64, 2)
    with pytest.raises(AdapterMismatchError, match="30 layers"):
        check_adapter_host(metadata(host=COGVIDEOX_5B), shallow)


def test_check_adapter_host_accepts_matching_and_missing_metadata(caplog):
    check_adapter_host(metadata(host=COGVIDEOX_5B), COGVIDEOX_5B)
    check_adapter_host(None, COGVIDEOX_5B)
    with caplog.at_level(logging.WARNING):
        check_adapter_host(metadata(host=COGVIDEOX_5B), COGVIDEOX_15)
    assert "patch_size_t" in caplog.text


def test_check_adapter_host_refuses_other_layout_versions():
    with pytest.raises(AdapterMismatchError, match="layout version"):
        check_adapter_host(metadata(layout_version=LAYOUT_VERSION + 1), COGVIDEOX_5B)
