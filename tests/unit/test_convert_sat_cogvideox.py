"""SAT CogVideoX → ComfyUI conversion, judged against diffusers' own conversion script (transcribed in
``cogvideox_diffusers_oracle``), and the checkpoint reader's refusal of anything but plain tensors."""

from __future__ import annotations

import argparse
import errno
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from cogvideox_diffusers_oracle import (
    SAT_PREFIX_KEY,
    comfy_to_sat,
    diffusers_to_comfy,
    sat_to_diffusers,
)
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from customvideox_core.convert.checkpoint_io import (
    CheckpointError,
    load_tensor_checkpoint,
    resolve_checkpoint_file,
)
from customvideox_core.convert.cli import convert_file, main
from customvideox_core.convert.sat_cogvideox import ConversionError, convert_sat_cogvideox

HIDDEN, HEAD_DIM, TIME_EMBED, TEXT, CHANNELS, PATCH, LAYERS = 128, 64, 96, 32, 16, 2, 2


def tiny_sat_state(seed: int = 0, layers: int = LAYERS) -> dict[str, torch.Tensor]:
    """A CogVideoX-5B-shaped SAT DiT (2 layers, 2 heads of 64), engine-prefixed, distinct random values."""
    d, e = HIDDEN, TIME_EMBED
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(layers):
        block = f"transformer.layers.{i}"
        for name, shape in {
            "input_layernorm": (d,),
            "attention.query_key_value": (3 * d, d),
            "attention.dense": (d, d),
            "post_attention_layernorm": (d,),
            "mlp.dense_h_to_4h": (4 * d, d),
            "mlp.dense_4h_to_h": (d, 4 * d),
        }.items():
            shapes[f"{block}.{name}.weight"] = shape
            shapes[f"{block}.{name}.bias"] = (shape[0],)
        shapes[f"mixins.adaln_layer.adaLN_modulations.{i}.1.weight"] = (12 * d, e)
        shapes[f"mixins.adaln_layer.adaLN_modulations.{i}.1.bias"] = (12 * d,)
        for which in ("query", "key"):
            for param in ("weight", "bias"):
                shapes[f"mixins.adaln_layer.{which}_layernorm_list.{i}.{param}"] = (HEAD_DIM,)
    shapes |= {
        "transformer.final_layernorm.weight": (d,),
        "transformer.final_layernorm.bias": (d,),
        "mixins.patch_embed.proj.weight": (d, CHANNELS, PATCH, PATCH),
        "mixins.patch_embed.proj.bias": (d,),
        "mixins.patch_embed.text_proj.weight": (d, TEXT),
        "mixins.patch_embed.text_proj.bias": (d,),
        "time_embed.0.weight": (e, d),
        "time_embed.0.bias": (e,),
        "time_embed.2.weight": (e, e),
        "time_embed.2.bias": (e,),
        "mixins.final_layer.norm_final.weight": (d,),
        "mixins.final_layer.norm_final.bias": (d,),
        "mixins.final_layer.linear.weight": (PATCH * PATCH * CHANNELS, d),
        "mixins.final_layer.linear.bias": (PATCH * PATCH * CHANNELS,),
        "mixins.final_layer.adaLN_modulation.1.weight": (2 * d, e),
        "mixins.final_layer.adaLN_modulation.1.bias": (2 * d,),
    }
    generator = torch.Generator().manual_seed(seed)
    return {
        SAT_PREFIX_KEY + k: torch.randn(shape, generator=generator) for k, shape in sorted(shapes.items())
    }


def oracle_comfy(sat_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return diffusers_to_comfy(sat_to_diffusers(sat_state))


def assert_same_state(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(actual) == sorted(expected)
    for key, tensor in expected.items():
        assert actual[key].shape == tensor.shape, key
        assert torch.equal(actual[key], tensor), key


def test_conversion_equals_the_diffusers_mapping():
    sat = tiny_sat_state()
    result = convert_sat_cogvideox(sat)
    expected = oracle_comfy(sat)
    assert_same_state(result.tensors, expected)
    assert result.num_layers == LAYERS
    assert len(expected) == 24 * LAYERS + 16  # per layer 12 modules × (weight, bias); 8 global modules
    assert "blocks.1.q.weight" in expected and "blocks.0.norm2.linear.bias" in expected


def test_qkv_and_adaln_really_move_rows():
    """Guards the oracle itself: the split pieces are the rows the SAT layout puts there."""
    sat = tiny_sat_state()
    out = convert_sat_cogvideox(sat).tensors
    fused = sat[SAT_PREFIX_KEY + "transformer.layers.1.attention.query_key_value.weight"]
    assert torch.equal(out["blocks.1.k.weight"], fused[HIDDEN : 2 * HIDDEN])
    adaln = sat[SAT_PREFIX_KEY + "mixins.adaln_layer.adaLN_modulations.0.1.bias"]
    # ComfyUI's norm2 emits (shift, scale, gate, enc_shift, enc_scale, enc_gate) for the feed-forward:
    # SAT's chunks 3-5 (video mlp) and 9-11 (text mlp).
    assert torch.equal(out["blocks.0.norm2.linear.bias"][: 3 * HIDDEN], adaln[3 * HIDDEN : 6 * HIDDEN])
    assert torch.equal(out["blocks.0.norm2.linear.bias"][3 * HIDDEN :], adaln[9 * HIDDEN :])


def test_inverse_oracle_round_trips_through_the_transcribed_forward_mapping():
    comfy = oracle_comfy(tiny_sat_state(seed=5))
    sat = comfy_to_sat(comfy)
    assert_same_state(oracle_comfy(sat), comfy)
    assert_same_state(convert_sat_cogvideox(sat).tensors, comfy)


def test_bare_network_keys_and_non_dit_parts():
    sat = tiny_sat_state()
    bare = {key[len(SAT_PREFIX_KEY) :]: tensor for key, tensor in sat.items()}
    assert_same_state(convert_sat_cogvideox(bare).tensors, oracle_comfy(sat))
    extra = dict(sat)
    extra["first_stage_model.encoder.conv_in.weight"] = torch.zeros(1)
    extra["conditioner.embedders.0.transformer.shared.weight"] = torch.zeros(1)
    extra[SAT_PREFIX_KEY + "mixins.pos_embed.freqs_sin"] = torch.zeros(4, 64)
    extra[SAT_PREFIX_KEY + "mixins.pos_embed.freqs_cos"] = torch.zeros(4, 64)
    result = convert_sat_cogvideox(extra)
    assert_same_state(result.tensors, oracle_comfy(sat))
    assert len(result.skipped) == 2
    assert result.dropped == ("mixins.pos_embed.freqs_cos", "mixins.pos_embed.freqs_sin")


def test_unknown_keys_are_listed_with_a_hint():
    sat = tiny_sat_state()
    sat[SAT_PREFIX_KEY + "mixins.pos_embed.pos_embedding"] = torch.zeros(1, 10, HIDDEN)
    sat[SAT_PREFIX_KEY + "mixins.extra_adapter.weight"] = torch.zeros(1)
    with pytest.raises(ConversionError) as error:
        convert_sat_cogvideox(sat)
    message = str(error.value)
    assert "2 key(s)" in message
    assert "mixins.pos_embed.pos_embedding" in message and "mixins.extra_adapter.weight" in message
    assert "CogVideoX-2B-style" in message


def test_foreign_top_level_keys_are_refused():
    sat = tiny_sat_state()
    sat["optimizer_state.step"] = torch.zeros(1)
    with pytest.raises(ConversionError, match="optimizer_state.step"):
        convert_sat_cogvideox(sat)


def test_comfy_layout_input_is_recognised():
    comfy = oracle_comfy(tiny_sat_state())
    with pytest.raises(ConversionError, match="already ComfyUI's CogVideoX layout"):
        convert_sat_cogvideox(comfy)


def test_missing_weights_are_listed_by_comfy_name():
    sat = tiny_sat_state()
    del sat[SAT_PREFIX_KEY + "mixins.adaln_layer.key_layernorm_list.1.bias"]
    del sat[SAT_PREFIX_KEY + "time_embed.2.weight"]
    with pytest.raises(ConversionError) as error:
        convert_sat_cogvideox(sat)
    assert "blocks.1.norm_k.bias" in str(error.value)
    assert "time_embedding_linear_2.weight" in str(error.value)


def test_gap_in_layer_numbers_is_refused():
    sat = tiny_sat_state(layers=3)
    sat = {key: value for key, value in sat.items() if not re.search(r"(layers|modulations|_list)\.1\.", key)}
    with pytest.raises(ConversionError, match=r"layers \[1\] are absent"):
        convert_sat_cogvideox(sat)


def test_fused_tensor_that_does_not_split_is_refused():
    sat = tiny_sat_state()
    sat[SAT_PREFIX_KEY + "transformer.layers.0.attention.query_key_value.bias"] = torch.zeros(3 * HIDDEN + 1)
    with pytest.raises(ConversionError, match="multiple of 3"):
        convert_sat_cogvideox(sat)


# ---- reading checkpoints ---------------------------------------------------------------------------


def write_sat_folder(root: Path, state: dict, *, iteration: str = "1000", extra: dict | None = None) -> Path:
    """SAT's layout: ``latest`` naming the iteration, ``<iteration>/mp_rank_00_model_states.pt``."""
    (root / iteration).mkdir(parents=True)
    (root / "latest").write_text(iteration + "\n")
    torch.save(
        {"module": state, "iteration": int(iteration), **(extra or {})},
        root / iteration / "mp_rank_00_model_states.pt",
    )
    return root


def test_sat_folder_is_resolved_and_unwrapped(tmp_path):
    sat = tiny_sat_state()
    folder = write_sat_folder(tmp_path / "single-identity", sat)
    expected_file = folder / "1000" / "mp_rank_00_model_states.pt"
    assert resolve_checkpoint_file(folder) == expected_file
    assert resolve_checkpoint_file(folder / "1000") == expected_file
    loaded = load_tensor_checkpoint(folder)
    assert loaded.file == expected_file
    assert_same_state(loaded.tensors, sat)


def test_incomplete_or_sharded_sat_folders_are_refused(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "latest").write_text("7")
    with pytest.raises(CheckpointError, match="names iteration '7'"):
        resolve_checkpoint_file(folder)
    sharded = write_sat_folder(tmp_path / "sharded", {"a": torch.zeros(1)})
    torch.save({}, sharded / "1000" / "mp_rank_01_model_states.pt")
    with pytest.raises(CheckpointError, match="model-parallel"):
        resolve_checkpoint_file(sharded)
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint_file(tmp_path / "nowhere")


class _Canary:
    """Unpickling this would create ``path`` — proof that a pickle's code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.makedirs, (self.path,))


def test_pickled_objects_are_refused_and_never_executed(tmp_path):
    canary_dir = tmp_path / "canary_ran"
    evil = tmp_path / "evil.pt"
    torch.save({"module": {"a": torch.zeros(1)}, "hook": _Canary(str(canary_dir))}, evil)
    with pytest.raises(CheckpointError, match="not a plain-tensor checkpoint") as error:
        load_tensor_checkpoint(evil)
    assert "makedirs" in str(error.value)
    assert not canary_dir.exists()
    namespace = tmp_path / "with_args.pt"
    torch.save({"module": tiny_sat_state(), "args": argparse.Namespace(lr=1.0)}, namespace)
    with pytest.raises(CheckpointError, match="argparse.Namespace"):
        load_tensor_checkpoint(namespace)
    raw_pickle = tmp_path / "raw.pt"
    raw_pickle.write_bytes(pickle.dumps(_Canary(str(canary_dir)), protocol=2))
    with pytest.raises(CheckpointError):
        load_tensor_checkpoint(raw_pickle)
    assert not canary_dir.exists()


def test_other_suffixes_and_non_state_dicts_are_refused(tmp_path):
    other = tmp_path / "model.bin"
    other.write_bytes(b"\x80\x04")
    with pytest.raises(CheckpointError, match="accepted checkpoint files"):
        load_tensor_checkpoint(other)
    listing = tmp_path / "list.pt"
    torch.save({"module": {"step": 3, "name": "x"}}, listing)
    with pytest.raises(CheckpointError, match="no state dict of tensors"):
        load_tensor_checkpoint(listing)


def test_unreadable_checkpoints_say_why(tmp_path):
    """Another format (whatever torch's unpickler raised) and a truncated legacy save: one message each."""
    not_torch = "could not be read as a PyTorch checkpoint: it is neither a zip archive nor a pickle"
    for name, data in [("text.pt", b"plain text"), ("pickle.pt", pickle.dumps({"a": 1}, protocol=2)[2:])]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=not_torch):
            load_tensor_checkpoint(tmp_path / name)
    truncated = tmp_path / "truncated.pt"
    torch.save({"a": torch.zeros(3)}, truncated, _use_new_zipfile_serialization=False)
    truncated.write_bytes(truncated.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=r"the file ends before the checkpoint does \(40 bytes\)"):
        load_tensor_checkpoint(truncated)


def test_safetensors_input(tmp_path):
    sat = tiny_sat_state()
    path = tmp_path / "sat.safetensors"
    save_file(sat, str(path))
    assert_same_state(load_tensor_checkpoint(path).tensors, sat)


# ---- command line ----------------------------------------------------------------------------------


def test_convert_file_writes_safetensors_with_metadata(tmp_path):
    sat = tiny_sat_state()
    folder = write_sat_folder(tmp_path / "single-identity", sat)
    output = tmp_path / "out" / "concat_id.safetensors"
    assert main(["--input", str(folder), "--output", str(output)]) == 0
    assert_same_state(load_file(str(output)), oracle_comfy(sat))
    with safe_open(str(output), framework="pt") as reader:
        metadata = reader.metadata()
    assert metadata["cvx_converted_from"] == "sat-cogvideox"
    assert metadata["cvx_source"] == "single-identity/1000/mp_rank_00_model_states.pt"
    assert metadata["cvx_num_layers"] == str(LAYERS)
    assert [p.name for p in output.parent.iterdir()] == ["concat_id.safetensors"]


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    sat = tiny_sat_state()
    source = tmp_path / "sat.pt"
    torch.save(sat, source)
    output = tmp_path / "out.safetensors"
    output.write_bytes(b"keep me")
    assert main(["--input", str(source), "--output", str(output)]) == 2
    assert output.read_bytes() == b"keep me"
    with pytest.raises(FileExistsError):
        convert_file(source, output)
    convert_file(source, output, overwrite=True, dtype="bf16")
    converted = load_file(str(output))
    assert all(tensor.dtype == torch.bfloat16 for tensor in converted.values())
    expected = oracle_comfy(sat)
    assert torch.equal(converted["blocks.0.v.weight"], expected["blocks.0.v.weight"].to(torch.bfloat16))


def test_failed_conversion_writes_nothing(tmp_path):
    sat = tiny_sat_state()
    del sat[SAT_PREFIX_KEY + "transformer.layers.0.mlp.dense_4h_to_h.weight"]
    source = tmp_path / "broken.pt"
    torch.save(sat, source)
    output = tmp_path / "out" / "broken.safetensors"
    assert main(["--input", str(source), "--output", str(output)]) == 2
    assert not output.parent.exists() or not any(output.parent.iterdir())
    assert main(["--input", str(source), "--output", str(tmp_path / "x.ckpt")]) == 2


def test_legacy_torch_save_format_is_read_without_mmap(tmp_path):
    sat = tiny_sat_state()
    legacy = tmp_path / "legacy.pt"
    torch.save({"module": sat}, legacy, _use_new_zipfile_serialization=False)
    assert_same_state(load_tensor_checkpoint(legacy).tensors, sat)


def test_empty_truncated_and_foreign_files_say_what_is_wrong(tmp_path, caplog):
    """An empty .pt/.ckpt (or .safetensors) says it is empty, a cut-off legacy file that it ends early,
    a file that is no torch.save output at all says so: never a message ending in a bare colon."""
    legacy = tmp_path / "legacy.pt"
    torch.save({"module": tiny_sat_state()}, legacy, _use_new_zipfile_serialization=False)
    cases = {
        "empty.pt": (b"", r"empty \(0 bytes\)"),
        "empty.ckpt": (b"", r"empty \(0 bytes\)"),
        "empty.safetensors": (b"", r"empty \(0 bytes\)"),
        "cut.pt": (
            legacy.read_bytes()[:10],
            r"ends before the checkpoint does \(10 bytes\): it is truncated",
        ),
        "text.pt": (b"this is a text file, not a checkpoint", r"neither a zip archive nor a pickle"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match=message) as raised:
            load_tensor_checkpoint(path)
        assert not str(raised.value).rstrip().endswith(":"), str(raised.value)
        caplog.clear()
        output = tmp_path / "out.safetensors"
        assert main(["--input", str(path), "--output", str(output)]) == 2
        assert re.search(message, caplog.text) and not output.exists()


def test_a_damaged_sat_latest_file_is_refused(tmp_path):
    folder = tmp_path / "sat"
    (folder / "1000").mkdir(parents=True)
    torch.save({"module": tiny_sat_state()}, folder / "1000" / "mp_rank_00_model_states.pt")
    for content, message in [
        (b"", "should hold the name"),
        (b"../1000", "should hold the name"),
        (b"\xff\xfe", "as text"),
    ]:
        (folder / "latest").write_bytes(content)
        with pytest.raises(CheckpointError, match=message):
            load_tensor_checkpoint(folder)


def test_output_that_is_a_folder_is_refused_and_left_untouched_even_with_overwrite(tmp_path, caplog):
    source = tmp_path / "sat.pt"
    torch.save(tiny_sat_state(), source)
    folder = tmp_path / "concat_id.safetensors"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    assert main(["--input", str(source), "--output", str(folder), "--overwrite"]) == 2
    assert "is an existing folder, not a file" in caplog.text and "Traceback" not in caplog.text
    assert [p.name for p in folder.iterdir()] == ["precious.txt"]
    assert (folder / "precious.txt").read_text() == "keep me"
    blocker = tmp_path / "file"
    blocker.write_text("a file")
    caplog.clear()
    assert main(["--input", str(source), "--output", str(blocker / "x.safetensors"), "--overwrite"]) == 2
    assert f"{blocker} is a file, not a folder" in caplog.text and blocker.read_text() == "a file"


def test_an_output_that_cannot_be_written_is_a_clear_error(tmp_path, caplog, monkeypatch):
    """A disk that fills up while the output is written: exit 1, one line saying so, no file left."""
    source = tmp_path / "sat.pt"
    torch.save(tiny_sat_state(), source)
    output = tmp_path / "out" / "concat_id.safetensors"

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("customvideox_core.adapter_file.save_file", full_disk)
    assert main(["--input", str(source), "--output", str(output)]) == 1
    assert "No space left on device" in caplog.text and "nothing was written" in caplog.text
    assert not any(output.parent.iterdir())
