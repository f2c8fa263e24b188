"""Command line: convert Concat-ID's checkpoints to safetensors files ComfyUI loads.

    python scripts/convert_concat_id.py --input models/single-identity \\
        --output ComfyUI/models/diffusion_models/concat_id_cogvideox5b_single_bf16.safetensors

``--input`` is a SAT checkpoint folder (``latest`` + ``<iteration>/mp_rank_00_model_states.pt``), the
``.pt`` file itself, or a ``.safetensors`` file. ``.pt`` files are read with
``torch.load(weights_only=True)`` only. ``--variant wan`` re-saves a Concat-ID-Wan ``.pt``
(``first_stage.pt``, ``second_stage_adaln.pt``) as safetensors with its own names, after checking it.
The output is never overwritten unless ``--overwrite`` is given (and a folder never is, even then),
and is written atomically (a temporary file in the same folder, then renamed). Exit status 0 on
success, 2 on a refused input or output, 1 when the output cannot be written (disk full, no
permission); the message says why, and nothing is written.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..adapter_file import write_safetensors_atomic
from ..constants import ADAPTER_SUFFIX
from ..safe_paths import file_in_the_way
from .checkpoint_io import CheckpointError, load_tensor_checkpoint
from .concat_id_wan import WAN_CONVERTER_ID, split_concat_id_wan
from .sat_cogvideox import ConversionError, conversion_metadata, convert_sat_cogvideox

logger = logging.getLogger(__name__)

DTYPES = {"keep": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
"""``--dtype`` choices: keep the checkpoint's own dtype, or cast floating-point weights."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convert_concat_id",
        description=(
            "Convert Concat-ID's SAT CogVideoX-5B checkpoint (a folder with 'latest', an "
            "mp_rank_00_model_states.pt file, or a .safetensors file) to ComfyUI's CogVideoX layout."
        ),
    )
    parser.add_argument("--input", required=True, type=Path, help="SAT checkpoint folder or file")
    parser.add_argument(
        "--output",
        required=True,
        type=Path,
        help="output .safetensors, e.g. ComfyUI/models/diffusion_models/concat_id_cogvideox5b.safetensors",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    parser.add_argument(
        "--dtype", choices=sorted(DTYPES), default="keep", help="cast floating-point weights (default: keep)"
    )
    parser.add_argument(
        "--variant",
        choices=sorted(VARIANTS),
        default="cogvideox",
        help="cogvideox: Concat-ID's SAT CogVideoX-5B (default); wan: Concat-ID-Wan's first_stage.pt or "
        "second_stage_adaln.pt, re-saved as safetensors with its names (load it with Load Concat-ID-Wan)",
    )
    return parser


@dataclass(frozen=True, eq=False)
class Converted:
    """What one variant makes of a checkpoint: output tensors, safetensors header, a log line."""

    tensors: dict[str, Tensor]
    metadata: dict[str, str]
    summary: str


def _convert_cogvideox(tensors: dict[str, Tensor], source: str) -> Converted:
    result = convert_sat_cogvideox(tensors)
    summary = (
        f"{result.num_layers} layers; {len(result.skipped)} non-DiT keys left out, "
        f"{len(result.dropped)} computed tables dropped"
    )
    return Converted(result.tensors, conversion_metadata(result, source=source), summary)


def _convert_wan(tensors: dict[str, Tensor], source: str) -> Converted:
    """Concat-ID-Wan keeps its names (Wan 2.1's plus the reference AdaLN): validated, re-saved as is."""
    weights = split_concat_id_wan(tensors)
    adaln = weights.reference_adaln is not None
    metadata = {
        "format": "pt",
        "cvx_converted_from": "concat-id-wan",
        "cvx_source": source,
        "cvx_converter": WAN_CONVERTER_ID,
        "cvx_reference_adaln": "yes" if adaln else "no",
    }
    return Converted(dict(tensors), metadata, f"Wan 2.1 {'with' if adaln else 'without'} reference AdaLN")


VARIANTS = {"cogvideox": _convert_cogvideox, "wan": _convert_wan}
"""``--variant``: Concat-ID's SAT CogVideoX-5B release, or its Wan 2.1 1.3B release."""


def convert_file(
    input_path: Path,
    output_path: Path,
    *,
    overwrite: bool = False,
    dtype: str = "keep",
    variant: str = "cogvideox",
) -> Path:
    """Convert ``input_path`` to ``output_path``; returns the written path.

    Raises ``FileExistsError`` (output exists, no ``overwrite``), :class:`CheckpointError` (unreadable or
    refused input), :class:`ConversionError` (not the checkpoint ``variant`` names), ``ValueError`` (bad
    output name or option). The output is checked before the (large) input is read.
    """
    _check_output(output_path, overwrite)
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r} is not one of {sorted(DTYPES)}")
    if variant not in VARIANTS:
        raise ValueError(f"--variant {variant!r} is not one of {sorted(VARIANTS)}")
    loaded = load_tensor_checkpoint(input_path)
    source = _source_name(input_path, loaded.file)
    converted = VARIANTS[variant](loaded.tensors, source)
    target_dtype = DTYPES[dtype]
    tensors = converted.tensors
    if target_dtype is not None:
        tensors = {
            key: tensor.to(target_dtype) if tensor.is_floating_point() else tensor
            for key, tensor in tensors.items()
        }
    written = write_safetensors_atomic(output_path, tensors, converted.metadata, overwrite=overwrite)
    logger.info("wrote %s: %d tensors, %s (from %s)", written, len(tensors), converted.summary, source)
    return written


def _check_output(output_path: Path, overwrite: bool) -> None:
    """Refuse an output the converter must not write over: a folder (even with ``overwrite``), a path
    under a file, an existing file without ``overwrite``, another suffix than ``.safetensors``."""
    if output_path.suffix.lower() != ADAPTER_SUFFIX:
        raise ValueError(f"--output {output_path} must end in {ADAPTER_SUFFIX}")
    if output_path.is_dir():
        raise ValueError(
            f"--output {output_path} is an existing folder, not a file; --overwrite replaces files only, so "
            f"nothing was changed. Give a file name inside it, e.g. {output_path / ('converted' + ADAPTER_SUFFIX)}"
        )
    blocking = file_in_the_way(output_path)
    if blocking is not None:
        raise ValueError(f"--output {output_path} cannot be created: {blocking} is a file, not a folder")
    if output_path.exists() and not overwrite:
        raise FileExistsError(f"{output_path} already exists; choose another name or pass --overwrite")


def _source_name(input_path: Path, file: Path) -> str:
    if file == input_path:
        return file.name
    try:
        return f"{input_path.name}/{file.relative_to(input_path).as_posix()}"
    except ValueError:
        return file.name


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        convert_file(
            args.input, args.output, overwrite=args.overwrite, dtype=args.dtype, variant=args.variant
        )
    except (CheckpointError, ConversionError, FileExistsError, ValueError) as error:
        logger.error("convert_concat_id: %s", error)
        return 2
    except OSError as error:  # writing the output failed (disk full, no permission): nothing was replaced
        logger.error("convert_concat_id: cannot write %s (%s); nothing was written", args.output, error)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
