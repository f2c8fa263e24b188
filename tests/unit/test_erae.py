"""ERAE: mask pooling and entity activation against naive float64 loops."""

import math

import pytest
import torch

from customvideox_core.erae import ERAEConfig, entity_activation, reference_token_weights


def naive_token_weights(mask: torch.Tensor, footprint: int) -> torch.Tensor:
    """Mean of ``mask [N, H, W]`` over each ``footprint``-square block (clipped at the edges), row-major."""
    count, height, width = mask.shape
    rows, columns = math.ceil(height / footprint), math.ceil(width / footprint)
    weights = torch.zeros(count, rows * columns, dtype=torch.float64)
    for image in range(count):
        for row in range(rows):
            for column in range(columns):
                total, pixels = 0.0, 0
                for y in range(row * footprint, min((row + 1) * footprint, height)):
                    for x in range(column * footprint, min((column + 1) * footprint, width)):
                        total += float(mask[image, y, x])
                        pixels += 1
                weights[image, row * columns + column] = total / pixels
    return weights


def test_token_weights_match_naive_block_average() -> None:
    generator = torch.Generator().manual_seed(0)
    mask = torch.rand(2, 8, 12, generator=generator, dtype=torch.float64)  # latent 4 x 6, compression 2
    weights = reference_token_weights(mask, latent_size=(4, 6), patch_size=2, spatial_compression=2)
    assert weights.shape == (2, 6)
    torch.testing.assert_close(weights, naive_token_weights(mask, 4))


def test_token_weights_are_row_major() -> None:
    mask = torch.zeros(1, 16, 24)
    mask[:, 0:8, 16:24] = 1.0  # top-right token of a 2 x 3 grid (footprint 8 = patch 1 x compression 8)
    weights = reference_token_weights(mask, latent_size=(2, 3), patch_size=1)
    assert weights.tolist() == [[0.0, 0.0, 1.0, 0.0, 0.0, 0.0]]


def test_token_weights_with_latent_not_a_multiple_of_patch() -> None:
    generator = torch.Generator().manual_seed(1)
    mask = torch.rand(1, 3, 5, generator=generator, dtype=torch.float64)
    weights = reference_token_weights(mask, latent_size=(3, 5), patch_size=2, spatial_compression=1)
    assert weights.shape == (1, 2 * 3)  # the hosts pad the latent up to whole patches
    torch.testing.assert_close(weights, naive_token_weights(mask, 2))


def test_token_weights_resize_mask_first() -> None:
    constant = torch.full((1, 37, 53), 0.3)
    weights = reference_token_weights(constant, latent_size=(4, 6), patch_size=2)
    torch.testing.assert_close(weights, torch.full((1, 6), 0.3))
    half = torch.zeros(1, 16, 24)
    half[:, :, :12] = 1.0  # left half; resized to 8 x 12, tokens of 4 x 4 pixels in a 2 x 3 grid
    weights = reference_token_weights(half, latent_size=(4, 6), patch_size=2, spatial_compression=2)
    grid = weights.reshape(2, 3)
    torch.testing.assert_close(grid[:, 0], torch.ones(2))
    torch.testing.assert_close(grid[:, 2], torch.zeros(2))
    torch.testing.assert_close(grid[:, 1], torch.full((2,), 0.5), atol=1e-6, rtol=0)


def test_token_weights_clamp_and_validate() -> None:
    mask = torch.full((1, 8, 8), 2.0)
    assert reference_token_weights(mask, latent_size=(1, 1), patch_size=1).item() == 1.0
    with pytest.raises(ValueError, match=r"expected \(N, H, W\)"):
        reference_token_weights(torch.ones(8, 8), latent_size=(1, 1), patch_size=1)
    with pytest.raises(ValueError, match="patch_size must be a positive integer"):
        reference_token_weights(torch.ones(1, 8, 8), latent_size=(1, 1), patch_size=0)


def naive_activation(
    queries: torch.Tensor,
    keys: torch.Tensor,
    positions: list[int],
    frame_tokens: int,
    scale: float,
    threshold: float = 0.0,
) -> torch.Tensor:
    """Full softmax over the text keys per head, entity mass, head mean, per-frame min-max; float64 loops."""
    batch, heads, video_length, head_dim = queries.shape
    text_length = keys.shape[2]
    queries, keys = queries.double().tolist(), keys.double().tolist()
    result = torch.zeros(batch, video_length, dtype=torch.float64)
    for b in range(batch):
        key_row = keys[min(b, len(keys) - 1)]
        for i in range(video_length):
            head_total = 0.0
            for h in range(heads):
                logits = [
                    sum(queries[b][h][i][d] * key_row[h][k][d] for d in range(head_dim)) * scale
                    for k in range(text_length)
                ]
                largest = max(logits)
                exps = [math.exp(logit - largest) for logit in logits]
                head_total += sum(exps[k] for k in set(positions)) / sum(exps)
            result[b, i] = head_total / heads
        for start in range(0, video_length, frame_tokens):
            frame = result[b, start : start + frame_tokens]
            low, high = float(frame.min()), float(frame.max())
            if high - low <= 1e-12:
                result[b, start : start + frame_tokens] = 0.0
            else:
                result[b, start : start + frame_tokens] = (frame - low) / (high - low)
    if threshold > 0:
        result = (result >= threshold).double()
    return result


def random_inputs(seed: int, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    queries = torch.randn(2, 3, 12, 4, generator=generator, dtype=torch.float64) * 2
    keys = torch.randn(2, 3, 5, 4, generator=generator, dtype=torch.float64) * 2
    return queries.to(dtype), keys.to(dtype)


@pytest.mark.parametrize("chunk_size", [1, 5, 12, 4096])
def test_activation_matches_naive_for_any_chunking(chunk_size: int) -> None:
    queries, keys = random_inputs(0)
    activation = entity_activation(queries, keys, [1, 3], frame_tokens=4, chunk_size=chunk_size)
    assert activation.shape == (2, 12) and activation.dtype == torch.float64
    torch.testing.assert_close(
        activation, naive_activation(queries, keys, [1, 3], 4, 0.5), rtol=0, atol=1e-12
    )


def test_activation_float32_inputs_and_custom_scale() -> None:
    queries, keys = random_inputs(1, torch.float32)
    activation = entity_activation(queries, keys, (0,), frame_tokens=3, scale=0.3)
    assert activation.dtype == torch.float32
    expected = naive_activation(queries, keys, [0], 3, 0.3)
    torch.testing.assert_close(activation.double(), expected, rtol=0, atol=1e-4)
    for start in range(0, 12, 3):  # each frame spans [0, 1] after min-max
        frame = activation[:, start : start + 3]
        assert torch.all(frame.amin(dim=1) == 0.0) and torch.all(frame.amax(dim=1) == 1.0)


def test_activation_threshold_gives_binary_region() -> None:
    queries, keys = random_inputs(2)
    activation = entity_activation(queries, keys, [2], frame_tokens=4, threshold=0.5)
    torch.testing.assert_close(activation, naive_activation(queries, keys, [2], 4, 0.5, threshold=0.5))
    assert set(activation.unique().tolist()) <= {0.0, 1.0}


def test_constant_frame_is_zero() -> None:
    queries, keys = random_inputs(3)
    queries[:, :, 4:8] = queries[:, :, 4:5]  # frame 1: four identical queries
    activation = entity_activation(queries, keys, [1], frame_tokens=4)
    assert torch.all(activation[:, 4:8] == 0.0)
    assert torch.all(activation[:, 0:4].amax(dim=1) == 1.0)
    assert torch.all(entity_activation(torch.zeros(1, 3, 8, 4), keys[:1], [1], frame_tokens=4) == 0.0)


def test_text_keys_broadcast_and_duplicate_positions() -> None:
    queries, keys = random_inputs(4)
    shared_keys = keys[:1]
    activation = entity_activation(queries, shared_keys, [4, 0, 4], frame_tokens=6)
    torch.testing.assert_close(activation, naive_activation(queries, shared_keys, [0, 4], 6, 0.5))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"entity_positions": [1, 5]}, r"entity positions \[5\] are out of range for 5 text tokens"),
        ({"entity_positions": [-1]}, "out of range"),
        ({"entity_positions": []}, "entity_positions is empty"),
        ({"frame_tokens": 5}, "12 video queries are not a whole number of frames of 5"),
        ({"threshold": 1.5}, r"threshold must lie in \[0, 1\]"),
        ({"threshold": math.nan}, r"threshold must lie in \[0, 1\]"),
        ({"chunk_size": 0}, "chunk_size must be a positive"),
        (
            {"text_keys": torch.zeros(2, 2, 5, 4)},
            r"text_keys has shape \(2, 2, 5, 4\), expected \(2, 3, Lt, 4\)",
        ),
    ],
)
def test_activation_validation(kwargs: dict, message: str) -> None:
    queries, keys = random_inputs(5)
    arguments = {"video_queries": queries, "text_keys": keys, "entity_positions": [1], "frame_tokens": 4}
    arguments |= kwargs
    with pytest.raises(ValueError, match=message):
        entity_activation(**arguments)


def test_config_defaults_and_enabled() -> None:
    assert not ERAEConfig().enabled  # no entity positions
    assert ERAEConfig(entity_positions=(3, 4)).enabled
    assert not ERAEConfig(entity_positions=(3,), gamma=0.0).enabled
    weakening = ERAEConfig(entity_positions=[2], gamma=-0.5)  # type: ignore[arg-type]
    assert weakening.enabled and weakening.entity_positions == (2,)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gamma": math.nan}, "gamma .* must be finite"),
        ({"gamma": math.inf}, "gamma .* must be finite"),
        ({"threshold": -0.1}, r"threshold must lie in \[0, 1\]"),
        ({"entity_positions": (1, -2)}, r"entity_positions\[1\] must be a non-negative integer"),
    ],
)
def test_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ERAEConfig(**kwargs)


def test_parse_subject_words_lines_and_semicolons() -> None:
    from customvideox_core.erae import parse_subject_words

    assert parse_subject_words("1: dog\n2: red ball, cat") == ((0, "dog"), (1, "red ball, cat"))
    assert parse_subject_words(" 2: cat ;1:dog; ") == ((1, "cat"), (0, "dog"))
    assert parse_subject_words("") == ()
    for bad, message in [
        ("dog", "must read 'N: words'"),
        ("x: dog", "must read 'N: words'"),
        ("0: dog", "must read 'N: words'"),
        ("\u00b2: dog", "must read 'N: words'"),  # '²'.isdigit() is True, int('²') raises
        ("\u0663: dog", "must read 'N: words'"),  # Arabic-Indic 3: ASCII digits only
        ("3:  ", "names reference image 3 but no words"),
        ("1: a\n1: b", "reference image 1 twice"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_subject_words(bad)


def test_subjects_validation_and_enabled() -> None:
    from customvideox_core.erae import SubjectWords

    assert ERAEConfig(subjects=(SubjectWords(0, (3,)),)).enabled
    assert not ERAEConfig(gamma=0.0, subjects=(SubjectWords(0, (3,)),)).enabled
    with pytest.raises(ValueError, match="more than once"):
        ERAEConfig(subjects=(SubjectWords(0, (3,)), SubjectWords(0, (4,))))
    with pytest.raises(ValueError, match="no entity positions"):
        SubjectWords(1, ())
    with pytest.raises(ValueError, match="non-negative integer"):
        SubjectWords(-1, (2,))
    with pytest.raises(TypeError, match="must be SubjectWords"):
        ERAEConfig(subjects=((0, (3,)),))


def test_activations_of_several_groups_match_the_single_group_ones() -> None:
    from customvideox_core.erae import entity_activations

    generator = torch.Generator().manual_seed(11)
    queries = torch.randn(2, 3, 8, 4, generator=generator)
    keys = torch.randn(2, 3, 5, 4, generator=generator)
    several = entity_activations(queries, keys, [[1], [], [0, 3]], frame_tokens=4)
    assert several.shape == (2, 8, 3)
    torch.testing.assert_close(several[..., 0], entity_activation(queries, keys, [1], frame_tokens=4))
    assert torch.count_nonzero(several[..., 1]) == 0
    torch.testing.assert_close(several[..., 2], entity_activation(queries, keys, [0, 3], frame_tokens=4))
