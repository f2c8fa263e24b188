"""Token layout of one host attention sequence: where the CustomVideoX bias acts.

The sequence of one attention call is ``[text | video | reference]`` (or ``[reference | video]``, a
host's reference prefix such as VACE's). The bias added to its logits is
(docs/ARCHITECTURE.md, "The bias")::

    video query i, reference key j:        b(s) * sum_k (1 + gamma * a_i^k) * m_j^k
    everything else:                       0

with one term ``k`` per group of reference frames (one group, all frames, unless ERAE binds words to
single reference images; ``m_j^k = m_j`` on the frames of group k, else 0). It is a sum of K rank-one
terms, built once per model call as the key and query factors of a table of reference sources
(``reference_sources``); no ``L x L`` tensor is ever built. Keys that must not be seen are dropped from
the attention call, never blocked with a large logit.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenLayout:
    """Where tokens sit in one host attention sequence, in this order: ``[text | video | reference]``, or
    ``[reference | video]`` when ``reference_first``.

    - ``text``: text tokens inside this attention (CogVideoX joint attention: 226; Wan self-attention: 0).
    - ``video``: video tokens (latent frames x ``frame_tokens``).
    - ``reference``: reference tokens (reference frames x ``frame_tokens``).
    - ``frame_tokens``: tokens per latent frame (patch grid ``h x w``).
    - ``reference_first``: the reference frames stand in front of the video (VACE's reference prefix,
      which ``WanVaceToVideo`` puts there); only where no text is in the sequence.
    """

    text: int
    video: int
    reference: int
    frame_tokens: int
    reference_first: bool = False

    def __post_init__(self) -> None:
        for name in ("text", "video", "reference", "frame_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TokenLayout.{name} must be a non-negative integer, got {value!r}.")
        if self.frame_tokens == 0:
            raise ValueError("TokenLayout.frame_tokens must be positive (tokens per latent frame, h * w).")
        for name in ("video", "reference"):
            count = getattr(self, name)
            if count % self.frame_tokens:
                raise ValueError(
                    f"TokenLayout.{name}={count} is not a whole number of frames of "
                    f"frame_tokens={self.frame_tokens} tokens; expected a multiple of {self.frame_tokens}."
                )
        if self.reference_first and self.text:
            raise ValueError(
                f"TokenLayout with the reference first holds no text tokens (got text={self.text}): a "
                "reference prefix is a self-attention layout of hosts that read the text in cross-attention"
            )

    @property
    def total(self) -> int:
        """Sequence length ``L = text + video + reference``."""
        return self.text + self.video + self.reference

    @property
    def text_slice(self) -> slice:
        return slice(0, self.text)

    @property
    def video_slice(self) -> slice:
        start = self.text + (self.reference if self.reference_first else 0)
        return slice(start, start + self.video)

    @property
    def reference_slice(self) -> slice:
        if self.reference_first:
            return slice(0, self.reference)
        return slice(self.text + self.video, self.total)

    @property
    def context_slice(self) -> slice:
        """The unbiased keys ``[text | video]`` (one span: a reference prefix comes with no text)."""
        if self.reference_first:
            return self.video_slice
        return slice(0, self.text + self.video)

    @property
    def video_frames(self) -> int:
        return self.video // self.frame_tokens

    @property
    def reference_frames(self) -> int:
        return self.reference // self.frame_tokens

    @classmethod
    def cogvideox(cls, *, text: int, frames: int, reference_frames: int, frame_tokens: int) -> TokenLayout:
        """CogVideoX joint attention: ``[text | video frames | reference frames appended after the video]``."""
        return cls(
            text=text,
            video=frames * frame_tokens,
            reference=reference_frames * frame_tokens,
            frame_tokens=frame_tokens,
        )

    @classmethod
    def wan(cls, *, frames: int, reference_frames: int, frame_tokens: int) -> TokenLayout:
        """Wan self-attention: ``[video frames | reference frames]`` (text lives in cross-attention)."""
        return cls(
            text=0,
            video=frames * frame_tokens,
            reference=reference_frames * frame_tokens,
            frame_tokens=frame_tokens,
        )
