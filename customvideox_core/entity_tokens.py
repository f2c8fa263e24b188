"""Entity words -> token positions in the host's text sequence.

The pieces are the token strings a tokenizer produced for the prompt, in sequence order (index =
position in the text sequence the text encoder sees). Three word-boundary conventions are understood:

- SentencePiece (T5, umT5): ``▁`` starts a word (``▁plus``, ``h`` = "plush"); byte-level BPE's ``Ġ``
  is treated the same way;
- CLIP BPE: ``</w>`` ends a word (``plu``, ``sh</w>`` = "plush");
- WordPiece: ``##`` continues a word (``plu``, ``##sh`` = "plush"); pieces without markers are words.

Matching is by whole words, case-insensitive; an entity may be a phrase of several words; punctuation a
tokenizer split off (``dog``, ``'s``) may or may not be separated in the entity (``dog's``). Special and
padding tokens (``</s>``, ``<pad>``, ``<|endoftext|>``, ``[CLS]``, ...) never match and separate words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_SENTENCEPIECE_MARKERS = ("\u2581", "\u0120")  # "▁" (SentencePiece), "Ġ" (byte-level BPE)
_CLIP_END_OF_WORD = "</w>"
_WORDPIECE_CONTINUATION = "##"
_SPECIAL_TOKEN = re.compile(r"^(<\|[^<>\s]*\|>|<[^<>\s]+>|\[[A-Za-z_]+\])$")
_WORD_SEPARATOR = " "
_SPECIAL_SEPARATOR = "\x00"  # stands for a special token: never part of a match
_ENTITY_SEPARATORS = re.compile(r"[,;\n]")
_EDGE_PUNCTUATION = re.compile(r"^[\W_]+|[\W_]+$")


def split_entity_words(text: str) -> tuple[str, ...]:
    """Split a comma- (or semicolon-, newline-) separated list: ``"dog, red ball"`` -> ``("dog", "red ball")``.

    Whitespace inside an entry is collapsed, empty entries are dropped, and repeats (ignoring case) are
    kept once, in first-seen order.
    """
    if not isinstance(text, str):
        raise TypeError(f"Entity words must be a string like 'dog, red ball', got {type(text).__name__}.")
    words: list[str] = []
    seen: set[str] = set()
    for entry in _ENTITY_SEPARATORS.split(text):
        word = " ".join(entry.split())
        if word and word.lower() not in seen:
            seen.add(word.lower())
            words.append(word)
    return tuple(words)


@dataclass(frozen=True)
class _PromptText:
    """The prompt rebuilt from its pieces: lower-case text with a space at each word boundary."""

    text: str
    piece_of_char: tuple[int, ...]  # piece index of each character of ``text``; -1 for separators

    def words(self) -> list[str]:
        """The prompt's words in order, each once, without surrounding punctuation."""
        unique: list[str] = []
        for chunk in self.text.replace(_SPECIAL_SEPARATOR, _WORD_SEPARATOR).split():
            word = _EDGE_PUNCTUATION.sub("", chunk)
            if word and word not in unique:
                unique.append(word)
        return unique


def _is_special(piece: str) -> bool:
    return bool(_SPECIAL_TOKEN.match(piece))


def _rebuild_prompt(pieces: Sequence[str]) -> _PromptText:
    ordinary = [piece for piece in pieces if not _is_special(piece)]
    sentencepiece = any(marker in piece for piece in ordinary for marker in _SENTENCEPIECE_MARKERS)
    clip = not sentencepiece and any(piece.endswith(_CLIP_END_OF_WORD) for piece in ordinary)
    characters: list[str] = []
    owners: list[int] = []

    def separate(separator: str) -> None:
        characters.append(separator)
        owners.append(-1)

    for index, piece in enumerate(pieces):
        if not isinstance(piece, str):
            raise TypeError(f"Token piece {index} must be a string, got {type(piece).__name__} ({piece!r}).")
        if _is_special(piece):
            separate(_SPECIAL_SEPARATOR)
            continue
        surface = piece
        ends_word = False
        if sentencepiece:
            for marker in _SENTENCEPIECE_MARKERS:
                surface = surface.replace(marker, _WORD_SEPARATOR)
        elif clip:
            ends_word = surface.endswith(_CLIP_END_OF_WORD)
            surface = surface.removesuffix(_CLIP_END_OF_WORD)
        elif surface.startswith(_WORDPIECE_CONTINUATION) and len(surface) > len(_WORDPIECE_CONTINUATION):
            surface = surface[len(_WORDPIECE_CONTINUATION) :]
        else:
            separate(_WORD_SEPARATOR)
        for character in surface.lower():
            if character.isspace():
                separate(_WORD_SEPARATOR)
            else:
                characters.append(character)
                owners.append(index)
        if ends_word:
            separate(_WORD_SEPARATOR)
    return _PromptText(text="".join(characters), piece_of_char=tuple(owners))


def _entity_pattern(entity: str) -> re.Pattern[str]:
    """Whole-word pattern for ``entity`` over a rebuilt prompt.

    Spaces in the entity need one or more word boundaries; a boundary may also sit next to punctuation
    (tokenizers split ``dog's`` into ``dog`` + ``'s``); the match may not start or end inside a word.
    """
    parts: list[str] = []
    previous = ""
    for character in entity:
        if character == " ":
            parts.append(" +")
        else:
            if previous and previous != " " and not (previous.isalnum() and character.isalnum()):
                parts.append(" *")
            parts.append(re.escape(character))
        previous = character
    return re.compile(r"(?<![^\W_])" + "".join(parts) + r"(?![^\W_])")


def find_entity_positions(pieces: Sequence[str], entity_words: Sequence[str] | str) -> tuple[int, ...]:
    """Positions (sorted, unique) of every piece that belongs to an occurrence of an entity word.

    ``pieces`` are the tokenizer's piece strings for the prompt in sequence order (index = position in the
    text sequence); ``entity_words`` a list of words/phrases or one comma-separated string. Every
    occurrence counts. Raises ``ValueError`` naming the missing word and listing the prompt's words when an
    entity does not occur.
    """
    if isinstance(entity_words, str):
        entities = split_entity_words(entity_words)
    else:
        entities = tuple(" ".join(str(word).split()) for word in entity_words)
    if not entities or any(not entity for entity in entities):
        raise ValueError(
            f"No usable entity words in {entity_words!r}; give the words naming the subject, e.g. 'dog'."
        )
    prompt = _rebuild_prompt(pieces)
    positions: set[int] = set()
    for entity in entities:
        matches = list(_entity_pattern(entity.lower()).finditer(prompt.text))
        if not matches:
            raise ValueError(
                f"Entity word {entity!r} does not occur in the prompt (matched as a whole word, ignoring "
                f"case). The prompt's words are: {', '.join(prompt.words()) or '(none)'}. Use one of them."
            )
        for match in matches:
            positions.update(
                owner for owner in prompt.piece_of_char[match.start() : match.end()] if owner >= 0
            )
    return tuple(sorted(positions))
