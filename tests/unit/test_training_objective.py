"""Denoising objectives against float64 formulas written out independently."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from customvideox_core.training import DenoisingObjective, denoising_loss


def diffusers_style_alphas_cumprod(steps=1000, beta_start=0.00085, beta_end=0.012):
    """Oracle: scaled-linear betas, then diffusers' rescale_zero_terminal_snr on the betas, in plain
    Python floats, and ᾱ recomputed as the running product of (1 − β)."""
    betas = [
        (math.sqrt(beta_start) + (math.sqrt(beta_end) - math.sqrt(beta_start)) * i / (steps - 1)) ** 2
        for i in range(steps)
    ]
    product, alphas_bar_sqrt = 1.0, []
    for beta in betas:
        product *= 1.0 - beta
        alphas_bar_sqrt.append(math.sqrt(product))
    first, last = alphas_bar_sqrt[0], alphas_bar_sqrt[-1]
    rescaled = [(value - last) * first / (first - last) for value in alphas_bar_sqrt]
    alphas_bar = [value * value for value in rescaled]
    alphas = [alphas_bar[0]] + [alphas_bar[i] / alphas_bar[i - 1] for i in range(1, steps)]
    product, result = 1.0, []
    for alpha in alphas:  # betas = 1 − alphas; ᾱ = Π (1 − β)
        product *= alpha
        result.append(product)
    return torch.tensor(result, dtype=torch.float64), betas


def test_alphas_cumprod_matches_diffusers_zero_terminal_snr():
    expected, betas = diffusers_style_alphas_cumprod()
    actual = DenoisingObjective("v_prediction").alphas_cumprod()
    assert actual.dtype == torch.float64 and actual.shape == (1000,)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)
    assert actual[-1].item() == 0.0
    assert actual[0].item() == pytest.approx(1.0 - betas[0], rel=1e-12)
    assert betas[0] == pytest.approx(0.00085) and betas[-1] == pytest.approx(0.012)


def test_alphas_cumprod_without_rescale_is_the_plain_product():
    _, betas = diffusers_style_alphas_cumprod()
    expected = torch.tensor(
        [math.prod(1.0 - b for b in betas[: i + 1]) for i in (0, 499, 999)], dtype=torch.float64
    )
    actual = DenoisingObjective("v_prediction", zero_terminal_snr=False).alphas_cumprod()[[0, 499, 999]]
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=0)


def clean_and_noise(seed: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 ``[batch, 3, 2, 2, 2]`` latents and noise, in that draw order."""
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, 3, 2, 2, 2, generator=generator, dtype=torch.float64) for _ in range(2))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 999), st.integers(0, 2**16))
def test_v_prediction_noising_and_target(timestep, seed):
    clean, noise = clean_and_noise(seed, batch=2)
    alpha_bar = diffusers_style_alphas_cumprod()[0][timestep].item()
    noisy, target = DenoisingObjective("v_prediction").noisy_and_target(
        clean, noise, torch.tensor([timestep] * 2)
    )
    torch.testing.assert_close(noisy, math.sqrt(alpha_bar) * clean + math.sqrt(1 - alpha_bar) * noise)
    torch.testing.assert_close(target, math.sqrt(alpha_bar) * noise - math.sqrt(1 - alpha_bar) * clean)
    # Known identity of v-prediction: x0 = sqrt(ᾱ) x_t − sqrt(1 − ᾱ) v.
    torch.testing.assert_close(math.sqrt(alpha_bar) * noisy - math.sqrt(1 - alpha_bar) * target, clean)


@settings(max_examples=25, deadline=None)
@given(st.floats(0.0, 1.0), st.integers(0, 2**16))
def test_flow_matching_noising_and_target(sigma, seed):
    clean, noise = clean_and_noise(seed, batch=1)
    noisy, target = DenoisingObjective("flow_matching").noisy_and_target(
        clean, noise, torch.tensor([sigma], dtype=torch.float64)
    )
    torch.testing.assert_close(noisy, (1 - sigma) * clean + sigma * noise)
    torch.testing.assert_close(target, noise - clean)
    torch.testing.assert_close(noisy - sigma * target, clean)  # x0 = x_σ − σ (ε − x0)


def test_timestep_sampling_ranges_and_shift():
    draws = DenoisingObjective("v_prediction").sample_timesteps(4000, torch.Generator().manual_seed(0), "cpu")
    assert draws.dtype == torch.int64 and draws.min() >= 0 and draws.max() <= 999
    assert draws.unique().numel() > 900
    plain = DenoisingObjective("flow_matching").sample_timesteps(64, torch.Generator().manual_seed(3), "cpu")
    shifted = DenoisingObjective("flow_matching", flow_shift=5.0).sample_timesteps(
        64, torch.Generator().manual_seed(3), "cpu"
    )
    assert plain.min() >= 0 and plain.max() < 1
    torch.testing.assert_close(shifted, 5.0 * plain / (1 + 4.0 * plain))


class RecordingModel:
    """model_fn that returns a fixed function of the video it got and records what it saw."""

    def __init__(self, output_fn=lambda x: 0.5 * x):
        self.output_fn = output_fn
        self.seen = []

    def __call__(self, video, reference, timestep):
        self.seen.append((video.clone(), reference.clone(), timestep.clone()))
        return self.output_fn(video)


def latents(seed=0, frames=3, references=2):
    generator = torch.Generator().manual_seed(seed)
    video = torch.randn(2, 4, frames, 3, 3, generator=generator)
    reference = torch.randn(2, 4, references, 3, 3, generator=generator)
    return video, reference


@pytest.mark.parametrize("kind", ["v_prediction", "flow_matching"])
def test_loss_matches_a_hand_computed_float64_oracle(kind):
    video, reference = latents()
    noise = torch.randn(video.shape, generator=torch.Generator().manual_seed(9))
    if kind == "v_prediction":
        timesteps = torch.tensor([17, 640])
        alpha_bar = diffusers_style_alphas_cumprod()[0][timesteps].reshape(-1, 1, 1, 1, 1)
        noisy = alpha_bar.sqrt() * video.double() + (1 - alpha_bar).sqrt() * noise.double()
        target = alpha_bar.sqrt() * noise.double() - (1 - alpha_bar).sqrt() * video.double()
        expected_timestep = timesteps.double()
    else:
        timesteps = torch.tensor([0.25, 0.9])
        sigma = timesteps.double().reshape(-1, 1, 1, 1, 1)
        noisy = (1 - sigma) * video.double() + sigma * noise.double()
        target = noise.double() - video.double()
        expected_timestep = 1000 * timesteps.double()
    expected = ((0.5 * noisy - target) ** 2).mean()

    model = RecordingModel()
    loss = denoising_loss(
        model, video, reference, objective=kind, generator=torch.Generator(), noise=noise, timesteps=timesteps
    )
    assert loss.dtype == torch.float32 and loss.shape == ()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    seen_video, seen_reference, seen_timestep = model.seen[0]
    assert seen_video.shape == (2, 4, 3, 3, 3)
    torch.testing.assert_close(seen_video.double(), noisy, rtol=1e-6, atol=1e-6)
    assert torch.equal(seen_reference, reference)  # handed over beside the video, clean
    torch.testing.assert_close(seen_timestep.double(), expected_timestep)


@pytest.mark.parametrize("kind", ["v_prediction", "flow_matching"])
def test_reference_frames_never_reach_the_loss(kind):
    """The model returns the video's prediction only; one that returns reference frames too is refused,
    and the reference's content changes nothing for a model that ignores it."""
    video, reference = latents(seed=1)

    def with_reference_frames(x):
        return torch.cat([0.5 * x, torch.full_like(reference, 1e6)], dim=2)

    with pytest.raises(ValueError, match="video frames only"):
        denoising_loss(
            RecordingModel(with_reference_frames),
            video,
            reference,
            objective=kind,
            generator=torch.Generator().manual_seed(4),
        )
    losses = [
        denoising_loss(
            RecordingModel(), video, other, objective=kind, generator=torch.Generator().manual_seed(4)
        )
        for other in (reference, torch.full_like(reference, 1e6))
    ]
    assert losses[0].item() == losses[1].item()
    assert losses[0].item() < 1e3


def test_video_frame_predictions_do_change_the_loss():
    video, reference = latents(seed=2)

    def off_on_first_frame(x):
        output = 0.5 * x
        output[:, :, 0] += 1.0
        return output

    losses = [
        denoising_loss(
            RecordingModel(fn),
            video,
            reference,
            objective="flow_matching",
            generator=torch.Generator().manual_seed(4),
        )
        for fn in (lambda x: 0.5 * x, off_on_first_frame)
    ]
    assert losses[0].item() != losses[1].item()


def test_no_reference_frames_is_plain_denoising():
    video, reference = latents(references=0)
    model = RecordingModel()
    denoising_loss(
        model, video, reference, objective="flow_matching", generator=torch.Generator().manual_seed(0)
    )
    assert model.seen[0][0].shape == video.shape
    assert model.seen[0][1].shape[2] == 0


def test_shape_errors_say_what_was_expected():
    video, reference = latents()
    with pytest.raises(ValueError, match="video's batch, channels and size"):
        denoising_loss(
            RecordingModel(),
            video,
            reference[:, :, :, :2],
            objective="flow_matching",
            generator=torch.Generator(),
        )
    with pytest.raises(ValueError, match=r"\[B, C, T, H, W\]"):
        denoising_loss(
            RecordingModel(), video[0], reference, objective="flow_matching", generator=torch.Generator()
        )
    with pytest.raises(ValueError, match="model_fn returned shape"):
        denoising_loss(
            RecordingModel(lambda x: x[:, :, :2]),
            video,
            reference,
            objective="flow_matching",
            generator=torch.Generator(),
        )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "epsilon"},
        {"kind": "flow_matching", "flow_shift": 0.0},
        {"kind": "v_prediction", "beta_end": 0.0001},
    ],
)
def test_invalid_objectives_are_refused(kwargs):
    with pytest.raises(ValueError):
        DenoisingObjective(**kwargs)
