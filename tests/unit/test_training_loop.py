"""The training loop on a tiny ComfyUI-shaped model: the loss falls, only the LoRA moves, state is restored."""

import pytest
import torch
from tiny_host import TinyVideoDiT

from customvideox_core.training import (
    LatentCacheEntry,
    LoraTrainConfig,
    TrainConfig,
    checkpoint_modules,
    denoising_loss,
    inject_lora,
    lora_parameters,
    train,
    warmup_factor,
)


def entries(count=2, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [
        LatentCacheEntry(
            torch.randn(1, 4, 3, 2, 2, generator=generator), torch.randn(1, 4, 1, 2, 2, generator=generator)
        )
        for _ in range(count)
    ]


def lora_model(family="cogvideox"):
    model = TinyVideoDiT(family, channels=4, hidden_size=16, num_heads=2, num_layers=2, seed=0)
    return inject_lora(model, LoraTrainConfig.for_family(family, rank=4, alpha=4.0))


def evaluation_loss(model, samples, kind):
    """Mean loss over fixed noise draws (same draws before and after training)."""
    generator = torch.Generator().manual_seed(123)
    with torch.no_grad():
        losses = [
            denoising_loss(
                model.predict_video, s.video_latents, s.reference_latents, objective=kind, generator=generator
            )
            for s in samples
            for _ in range(16)
        ]
    return torch.stack(losses).mean().item()


@pytest.mark.parametrize(("kind", "family"), [("v_prediction", "cogvideox"), ("flow_matching", "wan")])
def test_a_few_dozen_steps_make_the_loss_fall(kind, family):
    model = lora_model(family)
    samples = entries()
    before = evaluation_loss(model, samples, kind)
    config = TrainConfig(steps=40, objective=kind, learning_rate=1e-2, warmup_steps=5, seed=0)
    history = train(model, samples, config, model_fn=model.predict_video)
    after = evaluation_loss(model, samples, kind)
    assert len(history) == 40 and all(torch.isfinite(torch.tensor(history)))
    print(f"{kind}: evaluation loss {before:.3f} -> {after:.3f}")
    assert after < 0.7 * before, (before, after)


def test_only_lora_weights_change_and_host_state_is_restored():
    model = lora_model()
    model.eval()
    frozen = {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" not in name}
    lora_before = [p.detach().clone() for p in lora_parameters(model)]
    train(model, entries(), TrainConfig(steps=3, learning_rate=1e-2), model_fn=model.predict_video)
    current = dict(model.named_parameters())
    assert all(torch.equal(current[name], value) for name, value in frozen.items())
    assert all(p.grad is None for p in model.parameters())
    assert any(not torch.equal(p, q) for p, q in zip(lora_parameters(model), lora_before, strict=True))
    assert not any(module.training for module in model.modules())  # eval mode as it was


def test_same_seed_same_history():
    runs = []
    for _ in range(2):
        model = lora_model()
        runs.append(train(model, entries(3), TrainConfig(steps=4, seed=7), model_fn=model.predict_video))
    assert runs[0] == runs[1]


def test_warmup_learning_rates_and_save_callbacks():
    model = lora_model()
    reports, saves = [], []
    config = TrainConfig(steps=6, learning_rate=0.1, warmup_steps=4, save_every=2, grad_accumulation=2)
    train(
        model,
        entries(),
        config,
        model_fn=model.predict_video,
        on_step=reports.append,
        on_save=lambda step, state: saves.append((step, sorted(state))),
    )
    assert [report.step for report in reports] == [1, 2, 3, 4, 5, 6]
    assert [report.learning_rate for report in reports] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    assert all(report.total_steps == 6 for report in reports)
    assert [step for step, _ in saves] == [2, 4, 6]
    assert "diffusion_model.blocks.0.q.lora_A.weight" in saves[0][1]
    assert [warmup_factor(step, 0) for step in range(3)] == [1.0, 1.0, 1.0]


def test_custom_should_save_rule():
    model = lora_model()
    saved = []
    train(
        model,
        entries(),
        TrainConfig(steps=5),
        model_fn=model.predict_video,
        should_save=lambda step: step in (1, 5),
        on_save=lambda step, state: saved.append(step),
    )
    assert saved == [1, 5]


def test_gradient_checkpointing_gives_the_same_update_and_is_undone():
    results = []
    for checkpointing in (False, True):
        model = lora_model()
        config = TrainConfig(steps=1, learning_rate=1e-2, gradient_checkpointing=checkpointing)
        train(model, entries(), config, model_fn=model.predict_video)
        results.append([p.detach().clone() for p in lora_parameters(model)])
        assert all("forward" not in vars(block) for block in model.blocks)
    for plain, checkpointed in zip(*results, strict=True):
        torch.testing.assert_close(plain, checkpointed, rtol=1e-6, atol=1e-7)


def test_checkpoint_modules_keeps_outputs_and_gradients():
    model = TinyVideoDiT(seed=3)
    latents = torch.randn(1, 4, 2, 2, 2)
    timestep = torch.tensor([10.0])
    model(latents, timestep).square().sum().backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    restore = checkpoint_modules(model.blocks)
    model(latents, timestep).square().sum().backward()
    restore()
    for grad, reference in zip((p.grad for p in model.parameters()), expected, strict=True):
        torch.testing.assert_close(grad, reference)
    assert all("forward" not in vars(block) for block in model.blocks)


def test_bf16_autocast_trains_float32_lora_weights():
    model = lora_model()
    history = train(model, entries(), TrainConfig(steps=2, bf16_autocast=True), model_fn=model.predict_video)
    assert all(torch.isfinite(torch.tensor(history)))
    assert {p.dtype for p in lora_parameters(model)} == {torch.float32}


def test_interrupt_from_on_step_restores_the_model():
    model = lora_model()

    def interrupt(report):
        raise KeyboardInterrupt

    config = TrainConfig(steps=5, gradient_checkpointing=True)
    with pytest.raises(KeyboardInterrupt):
        train(model, entries(), config, model_fn=model.predict_video, on_step=interrupt)
    assert all("forward" not in vars(block) for block in model.blocks)
    assert all(p.grad is None for p in model.parameters())


def test_refuses_models_without_lora_and_empty_caches():
    plain = TinyVideoDiT()
    with pytest.raises(ValueError, match="inject_lora"):
        train(plain, entries(), TrainConfig(steps=1), model_fn=plain.predict_video)
    model = lora_model()
    with pytest.raises(ValueError, match="empty"):
        train(model, [], TrainConfig(steps=1), model_fn=model.predict_video)


@pytest.mark.parametrize(
    "kwargs", [{"steps": 0}, {"learning_rate": 0.0}, {"warmup_steps": -1}, {"objective": "x"}]
)
def test_invalid_train_config_is_refused(kwargs):
    with pytest.raises(ValueError):
        TrainConfig(**{"steps": 1, **kwargs})
