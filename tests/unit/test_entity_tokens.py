"""Entity words -> token positions on hand-written T5, CLIP and WordPiece piece lists."""

import pytest

from customvideox_core.entity_tokens import find_entity_positions, split_entity_words

# "A plush dog plays with a red ball. The dog's ball." as T5 SentencePiece pieces (index = position).
T5_PIECES = [
    "▁A",  # 0
    "▁plus",  # 1
    "h",  # 2
    "▁dog",  # 3
    "▁plays",  # 4
    "▁with",  # 5
    "▁a",  # 6
    "▁red",  # 7
    "▁ball",  # 8
    ".",  # 9
    "▁The",  # 10
    "▁dog",  # 11
    "'",  # 12
    "s",  # 13
    "▁ball",  # 14
    ".",  # 15
    "</s>",  # 16
    "<pad>",  # 17
    "<pad>",  # 18
]

# "a plush Dog, two dogs" as CLIP BPE pieces.
CLIP_PIECES = [
    "<|startoftext|>",  # 0
    "a</w>",  # 1
    "plu",  # 2
    "sh</w>",  # 3
    "dog</w>",  # 4
    ",</w>",  # 5
    "two</w>",  # 6
    "dogs</w>",  # 7
    "<|endoftext|>",  # 8
    "<|endoftext|>",  # 9
]

# "[CLS] a plush dog toy [SEP]" as WordPiece pieces.
WORDPIECE_PIECES = ["[CLS]", "a", "plu", "##sh", "dog", "toy", "[SEP]", "[PAD]"]


def test_split_entity_words() -> None:
    assert split_entity_words("dog, red ball") == ("dog", "red ball")
    assert split_entity_words("  dog ;  red   ball,\ncat,, ") == ("dog", "red ball", "cat")
    assert split_entity_words("Dog, dog, DOG") == ("Dog",)
    assert split_entity_words(" , ") == ()


def test_t5_single_and_multi_piece_words() -> None:
    assert find_entity_positions(T5_PIECES, ["dog"]) == (3, 11)  # every occurrence, incl. "dog's"
    assert find_entity_positions(T5_PIECES, "plush") == (1, 2)  # ▁plus + h
    with pytest.raises(ValueError, match="'plus' does not occur"):
        find_entity_positions(T5_PIECES, "plus")  # whole words only: "plus" is not "plush"


def test_t5_phrase_case_and_repeats() -> None:
    assert find_entity_positions(T5_PIECES, "Red Ball") == (7, 8)
    assert find_entity_positions(T5_PIECES, "ball") == (8, 14)
    assert find_entity_positions(T5_PIECES, "plush dog, red ball") == (1, 2, 3, 7, 8)
    assert find_entity_positions(T5_PIECES, ["DOG'S BALL"]) == (11, 12, 13, 14)


def test_clip_pieces() -> None:
    assert find_entity_positions(CLIP_PIECES, "plush") == (2, 3)
    assert find_entity_positions(CLIP_PIECES, "dog") == (4,)  # "dogs" is another word
    assert find_entity_positions(CLIP_PIECES, "dogs, plush dog") == (2, 3, 4, 7)
    assert find_entity_positions(CLIP_PIECES, "A") == (1,)


def test_wordpiece_pieces() -> None:
    assert find_entity_positions(WORDPIECE_PIECES, "plush") == (2, 3)
    assert find_entity_positions(WORDPIECE_PIECES, "plush dog toy") == (2, 3, 4, 5)


def test_special_tokens_never_match_and_split_phrases() -> None:
    for word in ("pad", "endoftext", "startoftext", "cls"):
        with pytest.raises(ValueError, match="does not occur"):
            find_entity_positions(T5_PIECES + CLIP_PIECES[:1] + ["[CLS]"], word)
    pieces = ["▁red", "</s>", "▁ball"]
    with pytest.raises(ValueError, match="'red ball' does not occur"):
        find_entity_positions(pieces, "red ball")


def test_absent_word_error_lists_prompt_words() -> None:
    with pytest.raises(ValueError) as error:
        find_entity_positions(T5_PIECES, "dog, cat")
    message = str(error.value)
    assert "'cat'" in message
    assert "a, plush, dog, plays, with, red, ball, the, dog's" in message
    assert "pad" not in message


def test_no_usable_entity_words() -> None:
    with pytest.raises(ValueError, match="No usable entity words"):
        find_entity_positions(T5_PIECES, " , ")
    with pytest.raises(ValueError, match="No usable entity words"):
        find_entity_positions(T5_PIECES, [])


def test_byte_level_bpe_pieces() -> None:
    pieces = ["<|begin_of_text|>", "ĠA", "Ġplush", "Ġdo", "g", "Ġtoy", "<|eot_id|>"]
    assert find_entity_positions(pieces, "dog") == (3, 4)
    assert find_entity_positions(pieces, "plush dog") == (2, 3, 4)
