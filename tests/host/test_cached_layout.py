"""The cached reference layout inside a real ComfyUI: a CustomVideoX adapter run as Stand-In's branch.

Oracle: the independent float64 Stand-In (``standin_oracle``): every DiT block of an unpatched clone is
replaced by the published block math in float64, with the reference tokens carried from block to block
and recomputed at every call. A cached-layout adapter holds Stand-In's tensors (``alpha / rank`` folded
into ``up``), so the oracle reads the adapter's own file tensors.

- Sampling: Load CustomVideoX (a cached-layout file) + Apply equals the oracle, at two strengths, and
  equals Apply Stand-In with the same tensors; no weight is patched.
- Training: the training forward (``cached_model_fn``: the reference branch with autograd, the video
  through ComfyUI's own forward) equals the oracle on one DiT call, its gradients reach every LoRA
  weight, and gradient checkpointing (which runs every block twice) gives the same gradients.

Tiny random-weight Wan 2.1 T2V (2 blocks, dim 128, 2 heads), CPU.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from nodes_support import LATENT_SHAPE, conditioning, load_model, pack_modules, sample
from standin_oracle import RANK, lora_state, oracle_model
from training_support import copy_dataset, copy_settings

ORACLE_ATOL = 2e-4  # float32 host vs float64 oracle (sampling: two steps of ~unit latents)
REFERENCE_SIZE = 64
ADAPTER = "cvx_test_cached_layout"
TIMESTEP = 600.0


@pytest.fixture(scope="module")
def mods(pack_module):
    return pack_modules(
        pack_module,
        {
            "load": "nodes.load_node",
            "apply": "nodes.apply_node",
            "conditioning": "nodes.conditioning_node",
            "cached": "nodes.cached_layout",
            "standin": "nodes.standin_nodes",
            "host_model": "nodes.host_model",
            "train_node": "nodes.train_node",
            "train_run": "nodes.train_run",
            "train_data": "nodes.train_data",
            "settings": "nodes.patch_model",
            "types": "nodes.types",
            "adapter_file": "customvideox_core.adapter_file",
            "core": "customvideox_core",
            "lora_file": "customvideox_core.standin.lora_file",
            "training": "customvideox_core.training",
            "tab": "customvideox_core.tab",
        },
    )


@pytest.fixture(scope="module")
def model(tiny_models):
    return load_model(tiny_models.diffusion_models_dir, tiny_models.wan)


@pytest.fixture(scope="module")
def reference(comfy_host, vae):
    image = torch.rand(1, REFERENCE_SIZE, REFERENCE_SIZE, 3, generator=torch.Generator().manual_seed(11))
    node = comfy_host.node_class("CustomVideoXReferenceEncode")
    return node.execute(vae, image, REFERENCE_SIZE, REFERENCE_SIZE, "pad", False, None).args[0]


def write_adapter(mods, model, name: str, tensors: dict, *, layout: str = "cached") -> str:
    """A cached-layout adapter file in models/customvideox (as Train Adapter writes one)."""
    metadata = mods.adapter_file.AdapterMetadata(
        host=mods.host_model.host_signature(model),
        rank=RANK,
        alpha=float(RANK),
        targets=mods.training.ReferenceBranchLoRA.TARGETS,
        layout_version=mods.core.LAYOUT_VERSION,
        reference_layout=layout,
    )
    path = mods.train_node.adapter_output_path(name)
    mods.adapter_file.save_adapter(path, tensors, metadata, overwrite=True)
    return path.name


def load_and_apply(mods, model, reference, name: str, *, strength: float = 1.0, tab=None):
    with torch.inference_mode():
        loaded = mods.load.LoadCustomVideoX.execute(model, name, strength).args[0]
        tab = tab if tab is not None else mods.tab.TABSchedule(shape="constant", peak=0.0)
        applied = mods.apply.CustomVideoXApply.execute(
            loaded, reference, uncond_sees_reference=True, tab=tab
        ).args[0]
    return loaded, applied


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_loaded_adapter_samples_as_the_float64_standin_branch(mods, model, reference, strength):
    name = write_adapter(mods, model, ADAPTER, lora_state())
    loaded, applied = load_and_apply(mods, model, reference, name, strength=strength)
    assert not loaded.patches, (
        "a cached-layout LoRA must never patch the weights (it would touch every token)"
    )
    assert mods.cached.cached_adapter_of(loaded).strength == strength
    ours = sample(applied)
    oracle = sample(oracle_model(model, reference, lora_state(), strength))
    effect = (oracle - sample(model)).abs().max().item()
    assert effect > 50 * ORACLE_ATOL, f"the reference barely moves the output ({effect:.3g})"
    diff = (ours - oracle).abs().max().item()
    assert diff < ORACLE_ATOL, f"max diff {diff:.3g} (reference effect {effect:.3g})"
    parsed = mods.lora_file.parse_standin_state_dict(lora_state(), source="test")
    standin = mods.standin.apply_standin(
        model,
        parsed,
        reference,
        strength=strength,
        tab=None,
        erae=None,
        uncond_sees_reference=True,
    )
    assert torch.equal(ours, sample(standin)), "the cached layout is Stand-In's branch with our file"


def test_apply_tab_biases_the_cached_branch(mods, model, reference):
    name = write_adapter(mods, model, ADAPTER, lora_state())
    _, unbiased = load_and_apply(mods, model, reference, name)
    _, biased = load_and_apply(
        mods, model, reference, name, tab=mods.tab.TABSchedule(shape="constant", peak=3.0)
    )
    assert (sample(biased) - sample(unbiased)).abs().max().item() > 1e-3


def test_reference_conditioning_marks_decide_which_pass_sees_the_branch(mods, model, reference):
    """A negative conditioning marked by Reference Conditioning sees the reference with
    uncond_sees_reference off, exactly as an unmarked one does with it on."""
    name = write_adapter(mods, model, ADAPTER, lora_state())
    mark = mods.conditioning.mark_sees_reference
    with torch.inference_mode():
        loaded = mods.load.LoadCustomVideoX.execute(model, name, 1.0).args[0]
        blind, seeing = (
            mods.apply.CustomVideoXApply.execute(loaded, reference, uncond_sees_reference=flag).args[0]
            for flag in (False, True)
        )
    marked = sample(blind, negative=mark(conditioning(2), True))
    assert torch.equal(marked, sample(seeing))
    assert (marked - sample(blind)).abs().max().item() > 1e-4


def test_cached_adapter_needs_a_reference_and_a_plain_wan(mods, model, comfy_host, tiny_models):
    name = write_adapter(mods, model, ADAPTER, lora_state())
    with torch.inference_mode():
        loaded = mods.load.LoadCustomVideoX.execute(model, name, 1.0).args[0]
        with pytest.raises(ValueError, match="cached-layout CustomVideoX adapter"):
            mods.apply.CustomVideoXApply.execute(loaded, None)
        with pytest.raises(
            ValueError, match="reference_prefix_frames is 1, but this model carries a cached-layout"
        ):
            mods.apply.CustomVideoXApply.execute(loaded, None, reference_prefix_frames=1)
        cogvideox = load_model(tiny_models.diffusion_models_dir, tiny_models.cogvideox["5b"])
        host = mods.host_model.host_signature(cogvideox)
        metadata = mods.adapter_file.AdapterMetadata(
            host=host,
            rank=RANK,
            alpha=float(RANK),
            targets=("q",),
            layout_version=mods.core.LAYOUT_VERSION,
            reference_layout="cached",
        )
        with pytest.raises(mods.adapter_file.AdapterMismatchError, match="'cached' reference layout"):
            mods.adapter_file.check_adapter_host(metadata, host)


def test_a_joint_lora_file_is_not_read_as_a_cached_one(mods, model):
    """A generic LoRA labelled cached is refused with the Stand-In reader's message, never half-applied."""
    tensors = {"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(RANK, 128)}
    name = write_adapter(mods, model, "cvx_test_cached_wrong_keys", tensors)
    with torch.inference_mode(), pytest.raises(ValueError, match="not a Stand-In LoRA"):
        mods.load.LoadCustomVideoX.execute(model, name, 1.0)


# ---------------------------------------------------------------------------------------------------
# The training forward
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def training_copy(mods, model):
    """A trainable copy of the tiny Wan (as Train Adapter makes one), loaded, with ComfyUI's
    in_training flag set while the module's tests run."""
    import comfy.model_management

    host = mods.host_model.host_signature(model)
    with torch.inference_mode(False):
        copy = mods.train_run._training_copy(model)
        comfy.model_management.load_models_gpu([copy], memory_required=1e20, force_full_load=True)
        with mods.train_run._host_training_mode(host):
            yield copy.model.diffusion_model


@contextlib.contextmanager
def cached_session(mods, model, dit, context, seed: int = 3):
    """The cached layout's training session on ``dit`` (as Train Adapter starts it), its adapter's ``up``
    made non-zero (a fresh one is zero there and changes nothing); closed afterwards."""
    lora = mods.training.LoraTrainConfig(
        rank=RANK, alpha=2.0 * RANK, targets=mods.training.ReferenceBranchLoRA.TARGETS, init_seed=seed
    )
    host = mods.host_model.host_signature(model)
    session = mods.train_run.LAYOUT_TRAINING["cached"].start(dit, host, lora, None, context, torch.float32)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for up in session.adapter.up.values():
            up.copy_(torch.randn(up.shape, generator=generator) * 0.1)
    try:
        yield session
    finally:
        session.close()


def training_inputs(model, reference):
    generator = torch.Generator().manual_seed(21)
    video = torch.randn(LATENT_SHAPE, generator=generator)
    # the fixture's VAE ran outside inference mode: its latents carry the VAE's graph, not wanted here
    latent = model.model.process_latent_in(reference.latents.detach().clone())
    context = conditioning(1)[0][0]
    return video, latent, torch.tensor([TIMESTEP]), context


def test_training_forward_equals_the_float64_branch(mods, model, reference, training_copy):
    video, latent, timestep, context = training_inputs(model, reference)
    with torch.inference_mode(False), cached_session(mods, model, training_copy, context) as session:
        adapter = session.adapter
        ours = session.model_fn(video, latent, timestep)
        ours.square().mean().backward()
        assert not any(p.requires_grad for p in training_copy.parameters()), "only the adapter may train"
    # the last block's reference queries are never read (only its keys and values are): no gradient
    unused = {"down.1_q", "up.1_q"}
    for name, parameter in adapter.named_parameters():
        if name in unused:
            assert parameter.grad is None, name
        else:
            assert parameter.grad is not None and parameter.grad.abs().max() > 0, (
                f"no gradient reaches {name}"
            )
    assert not any(p.grad is not None for p in training_copy.parameters()), "the DiT's weights must not train"

    oracle = oracle_model(model, reference, adapter.adapter_state_dict(), 1.0)
    with torch.inference_mode():
        dit = model.model.diffusion_model
        expected = dit(
            video, timestep, context, transformer_options=oracle.model_options["transformer_options"]
        )
        plain = dit(video, timestep, context, transformer_options={})
    effect = (expected - plain).abs().max().item()
    diff = (ours.detach() - expected).abs().max().item()
    assert effect > 1e-2, f"the reference branch barely moves the prediction ({effect:.3g})"
    assert diff < 1e-4, f"max diff {diff:.3g} (reference effect {effect:.3g})"


def test_gradient_checkpointing_gives_the_same_gradients(mods, model, reference, training_copy):
    """Checkpointing runs each block again in backward; the branch must give that block its reference
    keys again (each block's attention calls are counted in pairs)."""
    video, latent, timestep, context = training_inputs(model, reference)
    gradients = []
    for checkpointed in (False, True):
        restore = (
            mods.training.checkpoint_modules(list(training_copy.blocks)) if checkpointed else (lambda: None)
        )
        try:
            with torch.inference_mode(False), cached_session(mods, model, training_copy, context) as session:
                session.model_fn(video, latent, timestep).square().mean().backward()
        finally:
            restore()
        named = session.adapter.named_parameters()
        gradients.append({n: p.grad.clone() for n, p in named if p.grad is not None})
    plain, checkpointed = gradients
    assert sorted(plain) == sorted(checkpointed) and len(plain) == 10
    for name, gradient in plain.items():
        torch.testing.assert_close(checkpointed[name], gradient, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------------
# It learns to read the reference: latents where copying the reference is the solution
# ---------------------------------------------------------------------------------------------------

COPY_STEPS = 600
COPY_LEARNING_RATE = 5e-3
COPY_RANK = 16
COPY_EVAL_ITEMS = 8
COPY_SIGMA = 0.5  # flow matching: x = (1 - σ) x0 + σ ε
COPY_SEEDS = (0, 1, 2)
VIDEO_SIZE = (64, 96)  # pixels (height, width): 8 × 12 latents, 4 × 6 tokens per frame


def flow_denoised(mods, patched, clean, context, *, seed: int) -> torch.Tensor:
    """ComfyUI's own denoised estimate (``apply_model``) at σ = COPY_SIGMA of a patched Wan."""
    import comfy.model_management

    comfy.model_management.load_models_gpu([patched])
    options = {**patched.model_options["transformer_options"], "wrappers": patched.wrappers}
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))
    noisy = (1.0 - COPY_SIGMA) * clean + COPY_SIGMA * noise
    sigma = torch.tensor([COPY_SIGMA])
    return patched.model.apply_model(noisy, sigma, c_crossattn=context, transformer_options=options)


@pytest.fixture(scope="module")
def copy_proof(mods, model):
    """``train_adapter`` in the cached layout on :func:`training_support.copy_dataset`, then the denoising error with the
    right and with the next item's reference, trained and untrained (the branch without a LoRA)."""
    run = mods.train_run
    settings = copy_settings(
        run,
        mods.train_data,
        adapter_name="cvx_test_cached_copy",
        size=(VIDEO_SIZE[1], VIDEO_SIZE[0], 5),
        rank=COPY_RANK,
        alpha=float(COPY_RANK),
        steps=COPY_STEPS,
        learning_rate=COPY_LEARNING_RATE,
        reference_layout="cached",
    )
    host = mods.host_model.host_signature(model)
    dataset = copy_dataset(mods.train_data, model.model, width=VIDEO_SIZE[1], height=VIDEO_SIZE[0], length=5)
    context = conditioning(1)[0][0]
    tab0 = mods.tab.TABSchedule(shape="constant", peak=0.0)
    with torch.inference_mode():
        outcome = run.train_adapter(
            model,
            host,
            dataset,
            context,
            settings,
            lora=settings.lora_config(host),
            output_path=mods.train_node.adapter_output_path(settings.adapter_name),
        )
        trained = run.model_with_adapter(model, host, outcome.state_dict, layout="cached")
    errors = dict.fromkeys(("untrained_right", "untrained_wrong", "trained_right", "trained_wrong"), 0.0)
    entries = dataset.entries[:COPY_EVAL_ITEMS]
    with torch.inference_mode():
        for index, entry in enumerate(entries):
            clean = model.model.process_latent_in(entry.video_latents.clone())
            for which, other in (("right", entry), ("wrong", entries[(index + 1) % len(entries)])):
                reference = mods.types.ReferenceLatents(
                    latents=other.reference_latents,
                    masks=torch.ones(1, *VIDEO_SIZE),
                    source_size=VIDEO_SIZE,
                    fit="pad",
                )
                untrained = mods.standin.apply_standin(
                    model, None, reference, strength=1.0, tab=tab0, erae=None, uncond_sees_reference=True
                )
                patched = mods.settings.patch_model(trained, reference, tab0, None, True)
                for name, patcher in (("untrained", untrained), ("trained", patched)):
                    for seed in COPY_SEEDS:
                        denoised = flow_denoised(mods, patcher, clean, context, seed=seed)
                        errors[f"{name}_{which}"] += float(((denoised - clean) ** 2).mean())
    count = len(entries) * len(COPY_SEEDS)
    errors = {key: value / count for key, value in errors.items()}
    losses = outcome.losses
    print(
        f"cached copy proof: loss {sum(losses[:100]) / 100:.4f} -> {sum(losses[-100:]) / 100:.4f}; {errors}"
    )
    return losses, errors


def test_cached_copy_proof(copy_proof):
    losses, errors = copy_proof
    assert len(losses) == COPY_STEPS
    first, last = sum(losses[:100]) / 100, sum(losses[-100:]) / 100
    assert last <= 0.9 * first, (first, last)
    assert errors["trained_right"] <= 0.7 * errors["untrained_right"], errors
    assert errors["trained_wrong"] >= 1.2 * errors["trained_right"], errors
