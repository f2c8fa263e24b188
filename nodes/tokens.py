"""Read the token pieces of a prompt through a ComfyUI CLIP's own tokenizer (no encoder weights needed)."""

from __future__ import annotations

PREFERRED_ENCODERS = ("t5xxl", "umt5xxl")


def _encoder_name(tokenized: dict) -> str:
    for name in PREFERRED_ENCODERS:
        if name in tokenized:
            return name
    return next(iter(tokenized))


def _piece_reader(clip, name: str):
    sd_tokenizer = getattr(clip.tokenizer, name, None) or getattr(clip.tokenizer, f"clip_{name}", None)
    inner = getattr(sd_tokenizer if sd_tokenizer is not None else clip.tokenizer, "tokenizer", None)
    if hasattr(inner, "convert_ids_to_tokens"):
        return inner.convert_ids_to_tokens
    processor = getattr(inner, "tokenizer", None)
    if hasattr(processor, "id_to_piece"):
        return lambda ids: [processor.id_to_piece(i) for i in ids]
    raise ValueError(
        f"cannot read token pieces from this CLIP's '{name}' tokenizer ({type(inner).__name__}); "
        "connect the text encoder of a CogVideoX (T5) or Wan (umT5) model"
    )


def prompt_pieces(clip, prompt: str) -> list[str]:
    """Token strings of ``prompt`` in the order the text encoder sees them (index = text position)."""
    if clip is None or getattr(clip, "tokenizer", None) is None:
        raise ValueError("ERAEMask needs a CLIP (text encoder or tokenizer) to find the entity words")
    tokenized = clip.tokenize(prompt)
    name = _encoder_name(tokenized)
    ids = [token[0] for batch in tokenized[name] for token in batch]
    read = _piece_reader(clip, name)
    int_ids = [int(i) if isinstance(i, int) else -1 for i in ids]
    pieces = read([i for i in int_ids if i >= 0])
    out, it = [], iter(pieces)
    for i in int_ids:
        out.append(next(it) if i >= 0 else "<embedding>")
    return out
