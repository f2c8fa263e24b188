"""Entity region-aware enhancement (ERAE): where the reference bias is raised.

Two per-token weights feed the bias ``b(s) * (1 + gamma * a_i) * m_j``, one such term per subject
(:meth:`ERAEConfig.bias_terms`; the attention applies it in ``reference_attention``):

- ``m_j`` (:func:`reference_token_weights`): the reference image's subject mask pooled to its token grid.
- ``a_i`` (:func:`entity_activation`): how strongly video query ``i`` attends to the prompt's entity
  tokens, from the model's own attention (a cross-attention map, as in Prompt-to-Prompt), averaged over
  heads and min-max normalised per latent frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor


@dataclass(frozen=True)
class SubjectWords:
    """Entity words bound to one reference image: ERAE raises their video regions toward that image only.

    - ``reference_frame``: 0-based index of the reference image (reference frame) the words name.
    - ``entity_positions``: token positions of those words in the text sequence.
    """

    reference_frame: int
    entity_positions: tuple[int, ...]

    def __post_init__(self) -> None:
        frame = self.reference_frame
        if isinstance(frame, bool) or not isinstance(frame, int) or frame < 0:
            raise ValueError(f"SubjectWords.reference_frame must be a non-negative integer, got {frame!r}.")
        object.__setattr__(self, "entity_positions", _checked_positions(self.entity_positions))
        if not self.entity_positions:
            raise ValueError(
                f"SubjectWords for reference image {frame + 1} has no entity positions; give the token "
                "positions of the words that name that subject."
            )


@dataclass(frozen=True)
class ERAEConfig:
    """Settings of the entity region-aware enhancement.

    - ``entity_positions``: token positions of the entity words in the text sequence (the unbound group:
      it applies to every reference image that no ``subjects`` entry claims).
    - ``gamma``: ERAE strength; 0 turns ERAE off, negative weakens the reference on entity regions.
    - ``threshold``: 0 = soft activation; > 0 = binary region ``a_i = [a_i >= threshold]``.
    - ``block_outside_mask``: reference keys with weight 0 (outside the subject mask) are dropped for every
      query.
    - ``subjects``: entity words bound to single reference images (several subjects). The bias becomes
      ``b(s) · Σ_k (1 + γ a_i^k) m_j^k`` with ``m_j^k`` the mask weight of token j when it belongs to the
      reference frames of group k, else 0 (a rank-K bias, see :meth:`bias_terms`).
    """

    entity_positions: tuple[int, ...] = ()
    gamma: float = 1.0
    threshold: float = 0.0
    block_outside_mask: bool = False
    subjects: tuple[SubjectWords, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "entity_positions", _checked_positions(self.entity_positions))
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, (int, float)):
            raise TypeError(f"ERAE gamma must be a number, got {type(self.gamma).__name__}.")
        if not math.isfinite(self.gamma):
            raise ValueError(
                f"ERAE gamma (strength) must be finite, got {self.gamma!r}; use 0 to turn ERAE off."
            )
        object.__setattr__(self, "gamma", float(self.gamma))
        _check_threshold(self.threshold)
        object.__setattr__(self, "threshold", float(self.threshold))
        if not isinstance(self.block_outside_mask, bool):
            raise TypeError(f"ERAE block_outside_mask must be a bool, got {self.block_outside_mask!r}.")
        subjects = tuple(self.subjects)
        for subject in subjects:
            if not isinstance(subject, SubjectWords):
                raise TypeError(f"ERAE subjects must be SubjectWords, got {type(subject).__name__}.")
        frames = [subject.reference_frame for subject in subjects]
        repeated = sorted({frame + 1 for frame in frames if frames.count(frame) > 1})
        if repeated:
            raise ValueError(
                f"ERAE subjects bind reference image(s) {repeated} more than once; give each reference "
                "image one line of words."
            )
        object.__setattr__(self, "subjects", subjects)

    @property
    def enabled(self) -> bool:
        """True when ERAE changes anything: ``gamma != 0`` and at least one entity position."""
        return self.gamma != 0.0 and (len(self.entity_positions) > 0 or len(self.subjects) > 0)

    def check_text_length(self, text_length: int) -> None:
        """Raise when ERAE is on and an entity position lies past ``text_length`` conditioning tokens."""
        if self.enabled:
            check_positions_in_text(self.all_positions, text_length)

    @property
    def all_positions(self) -> tuple[int, ...]:
        """Every entity position of every group (for checks against the text length)."""
        positions = set(self.entity_positions)
        for subject in self.subjects:
            positions.update(subject.entity_positions)
        return tuple(sorted(positions))

    def bias_terms(self, reference_frames: int) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]:
        """The rank-one terms of the bias: ``(entity positions, reference frames)`` per term.

        One term per subject (its words, its frame), then one term for the frames no subject claims with
        the unbound ``entity_positions`` (which may be empty: those frames get the plain TAB bias). A
        config without subjects gives the single term ``(entity_positions, all frames)``: exactly the
        one-subject bias. Subjects naming a frame beyond ``reference_frames`` raise a ``ValueError``.
        """
        beyond = [s.reference_frame + 1 for s in self.subjects if s.reference_frame >= reference_frames]
        if beyond:
            raise ValueError(
                f"ERAE subject words are bound to reference image(s) {beyond} but the reference has only "
                f"{reference_frames} image(s); bind words to images 1..{reference_frames}."
            )
        terms = [(s.entity_positions, (s.reference_frame,)) for s in self.subjects]
        claimed = {s.reference_frame for s in self.subjects}
        rest = tuple(frame for frame in range(reference_frames) if frame not in claimed)
        if rest:
            terms.append((self.entity_positions, rest))
        return tuple(terms)


def parse_subject_words(text: str) -> tuple[tuple[int, str], ...]:
    """``"1: dog\n2: cat"`` or ``"1: dog; 2: cat"`` -> ``((0, "dog"), (1, "cat"))`` (0-based image, words).

    One item per line or per ``;``: the 1-based number of the reference image, a colon, the words of
    the prompt that name that image's subject (comma-separated). Blank items are skipped.
    """
    if not isinstance(text, str):
        raise TypeError(f"subject words must be a string like '1: dog; 2: cat', got {type(text).__name__}.")
    bindings: list[tuple[int, str]] = []
    for item in text.replace(";", "\n").splitlines():
        item = item.strip()
        if not item:
            continue
        number, colon, words = item.partition(":")
        number = number.strip()
        # ASCII digits only: str.isdigit() also accepts '²', which int() then refuses with a raw error.
        if not colon or not (number.isascii() and number.isdigit()) or int(number) < 1:
            raise ValueError(
                f"subject words item {item!r} must read 'N: words' with N the reference image number "
                "(1, 2, ...), e.g. '1: dog' or '1: dog; 2: cat'."
            )
        if not words.strip():
            raise ValueError(f"subject words item {item!r} names reference image {number} but no words.")
        image = int(number) - 1
        if any(image == bound for bound, _ in bindings):
            raise ValueError(
                f"subject words name reference image {image + 1} twice; give each image one line."
            )
        bindings.append((image, words.strip()))
    return tuple(bindings)


def _checked_positions(positions) -> tuple[int, ...]:
    positions = tuple(positions)
    for index, position in enumerate(positions):
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise ValueError(
                f"ERAE entity_positions[{index}] must be a non-negative integer token position, got {position!r}."
            )
    return positions


def _check_threshold(threshold: float) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"ERAE threshold must be a number, got {type(threshold).__name__}.")
    if not 0.0 <= threshold <= 1.0:  # also rejects NaN
        raise ValueError(
            f"ERAE threshold must lie in [0, 1] (0 = soft activation, > 0 = binary region), got {threshold!r}."
        )


def reference_token_weights(
    mask: Tensor, *, latent_size: tuple[int, int], patch_size: int, spatial_compression: int = 8
) -> Tensor:
    """Subject mask ``[N, H, W]`` in ``[0, 1]`` (pixel space, 1 = subject) -> token weights ``[N, h*w]``.

    ``(h, w) = latent_size / patch_size``, row-major like the host's patchify. Each token's weight is the
    mean of the mask over its pixel footprint (``patch_size * spatial_compression`` pixels square), after
    resizing the mask to ``latent_size * spatial_compression`` if it is not that size already (bilinear,
    antialiased). When the latent size is not a multiple of ``patch_size`` the hosts pad the latent up to
    one, so ``h = ceil(latent_h / patch_size)`` and an edge token averages the pixels it actually covers.
    Values are clamped to ``[0, 1]``; the result is float32 (float64 for a float64 mask).
    """
    if mask.ndim != 3:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected (N, H, W) (ComfyUI MASK layout).")
    if mask.shape[0] == 0 or mask.shape[1] == 0 or mask.shape[2] == 0:
        raise ValueError(f"mask has shape {tuple(mask.shape)}; expected a non-empty (N, H, W) mask.")
    latent_height, latent_width = latent_size
    for name, value in (
        ("latent height", latent_height),
        ("latent width", latent_width),
        ("patch_size", patch_size),
        ("spatial_compression", spatial_compression),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    work_dtype = torch.promote_types(mask.dtype, torch.float32)
    pixels = mask.to(work_dtype).clamp(0.0, 1.0)[:, None]
    target = (latent_height * spatial_compression, latent_width * spatial_compression)
    if tuple(pixels.shape[-2:]) != target:
        downscale = pixels.shape[-2] > target[0] or pixels.shape[-1] > target[1]
        pixels = F.interpolate(pixels, size=target, mode="bilinear", align_corners=False, antialias=downscale)
        pixels = pixels.clamp(0.0, 1.0)
    footprint = patch_size * spatial_compression
    pad_bottom = -target[0] % footprint
    pad_right = -target[1] % footprint
    if pad_bottom or pad_right:
        covered = F.pad(torch.ones_like(pixels), (0, pad_right, 0, pad_bottom))
        pixels = F.pad(pixels, (0, pad_right, 0, pad_bottom))
        token_sums = F.avg_pool2d(pixels, footprint)
        token_coverage = F.avg_pool2d(covered, footprint)
        tokens = token_sums / token_coverage
    else:
        tokens = F.avg_pool2d(pixels, footprint)
    return rearrange(tokens, "n 1 h w -> n (h w)")


def check_positions_in_text(positions: Sequence[int], text_length: int) -> None:
    """Raise ``ValueError`` when an entity position lies outside the ``text_length`` text tokens the
    model sees (the conditioning's tokens): the entity words would change nothing."""
    out_of_range = sorted({int(position) for position in positions if not 0 <= int(position) < text_length})
    if out_of_range:
        raise ValueError(
            f"ERAE entity positions {out_of_range} are out of range for {text_length} text tokens "
            f"(valid: 0 .. {text_length - 1}): the entity words lie past the end of the conditioning the "
            "model sees. Give ERAEMask the same prompt as the text encoder (the positions must come from the "
            "same tokenizer and prompt as the conditioning), or name the subject earlier in the prompt."
        )


def entity_activation(
    video_queries: Tensor,
    text_keys: Tensor,
    entity_positions: Sequence[int],
    *,
    frame_tokens: int,
    scale: float | None = None,
    threshold: float = 0.0,
    chunk_size: int = 4096,
) -> Tensor:
    """Entity activation ``a_i`` in ``[0, 1]`` for each video query.

    ``a_i`` is the attention probability mass on the entity tokens within the softmax over the *text*
    keys only (a cross-attention map, as in Prompt-to-Prompt), averaged over heads, then min-max
    normalised per latent frame (a frame = ``frame_tokens`` consecutive queries); a constant frame gives
    0; with ``threshold > 0`` the result is binary, ``a_i = [a_i >= threshold]``.

    Args:
        video_queries: ``[B, H, Lv, D]`` (RoPE already applied, as the attention sees them).
        text_keys: ``[B, H, Lt, D]`` (or ``[1, H, Lt, D]``, broadcast over the batch).
        entity_positions: positions of the entity tokens in ``0 .. Lt - 1``.
        frame_tokens: tokens per latent frame; ``Lv`` must be a multiple of it.
        scale: softmax scale, default ``1 / sqrt(D)``.
        threshold: 0 = soft; in ``(0, 1]`` = binary.
        chunk_size: video queries processed at once; memory is ``B * H * chunk_size * Lt`` floats, cost
            is linear in ``Lv``.

    Returns:
        ``[B, Lv]``, float32 (float64 for float64 inputs).
    """
    positions = [int(position) for position in entity_positions]
    if not positions:
        raise ValueError("entity_positions is empty; give the text positions of the entity words.")
    return entity_activations(
        video_queries,
        text_keys,
        [positions],
        frame_tokens=frame_tokens,
        scale=scale,
        threshold=threshold,
        chunk_size=chunk_size,
    )[..., 0]


def entity_activations(
    video_queries: Tensor,
    text_keys: Tensor,
    groups: Sequence[Sequence[int]],
    *,
    frame_tokens: int,
    scale: float | None = None,
    threshold: float = 0.0,
    chunk_size: int = 4096,
) -> Tensor:
    """:func:`entity_activation` of several word groups at once, sharing the text logits.

    ``groups``: one sequence of entity positions per group; an empty group gives a column of zeros.
    Returns ``[B, Lv, G]`` (G = ``len(groups)``), float32 (float64 for float64 inputs). Cost is linear
    in ``Lv`` and ``Lt``.
    """
    if video_queries.ndim != 4 or text_keys.ndim != 4:
        raise ValueError(
            f"video_queries and text_keys must be (B, H, L, D); got {tuple(video_queries.shape)} and "
            f"{tuple(text_keys.shape)}."
        )
    batch, heads, video_length, head_dim = video_queries.shape
    key_batch, key_heads, text_length, key_dim = text_keys.shape
    if key_batch not in (1, batch) or key_heads != heads or key_dim != head_dim:
        raise ValueError(
            f"text_keys has shape {tuple(text_keys.shape)}, expected ({batch}, {heads}, Lt, {head_dim}) "
            f"to match video_queries {tuple(video_queries.shape)}."
        )
    if text_length == 0:
        raise ValueError("text_keys has no tokens (Lt = 0); entity activation needs the text keys.")
    group_positions = [sorted({int(position) for position in group}) for group in groups]
    if not group_positions:
        raise ValueError("groups is empty; give at least one group of entity positions.")
    check_positions_in_text([position for group in group_positions for position in group], text_length)
    if isinstance(frame_tokens, bool) or not isinstance(frame_tokens, int) or frame_tokens < 1:
        raise ValueError(f"frame_tokens must be a positive integer, got {frame_tokens!r}.")
    if video_length == 0 or video_length % frame_tokens:
        raise ValueError(
            f"{video_length} video queries are not a whole number of frames of {frame_tokens} tokens; "
            f"expected Lv to be a positive multiple of frame_tokens."
        )
    _check_threshold(threshold)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}.")
    if scale is None:
        scale = 1.0 / math.sqrt(head_dim)

    work_dtype = torch.promote_types(video_queries.dtype, torch.float32)
    keys = text_keys.to(work_dtype)
    indices = [torch.tensor(group, device=text_keys.device) for group in group_positions if group]
    columns = []
    for chunk_start in range(0, video_length, chunk_size):
        queries = video_queries[:, :, chunk_start : chunk_start + chunk_size].to(work_dtype)
        probabilities = torch.softmax((queries @ keys.transpose(-1, -2)) * scale, dim=-1)  # "b h q Lt"
        columns.append(
            [
                reduce(probabilities.index_select(-1, index).sum(dim=-1), "b h q -> b q", "mean")
                for index in indices
            ]
        )
    activations = iter(
        _normalise_per_frame(torch.cat([chunk[g] for chunk in columns], dim=1), frame_tokens, threshold)
        for g in range(len(indices))
    )
    zeros = video_queries.new_zeros(batch, video_length, dtype=work_dtype)
    return torch.stack([next(activations) if group else zeros for group in group_positions], dim=-1)


def _normalise_per_frame(mass: Tensor, frame_tokens: int, threshold: float) -> Tensor:
    """Min-max normalise ``[B, Lv]`` within each frame; a (numerically) constant frame becomes 0."""
    frames = rearrange(mass, "b (f t) -> b f t", t=frame_tokens)
    low = frames.amin(dim=-1, keepdim=True)
    spread = frames.amax(dim=-1, keepdim=True) - low
    flat = spread <= 8 * torch.finfo(frames.dtype).eps
    normalised = torch.where(flat, torch.zeros_like(frames), (frames - low) / torch.where(flat, 1.0, spread))
    if threshold > 0.0:
        normalised = (normalised >= threshold).to(frames.dtype)
    return rearrange(normalised.clamp(0.0, 1.0), "b f t -> b (f t)")
