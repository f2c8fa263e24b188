"""Real-size host models without memory: ComfyUI's own DiT classes built under PyTorch's ``FakeTensorMode``,
and the two meters that read a fake step — FLOPs (``torch.utils.flop_counter.FlopCounterMode``) and the
peak of live tensor bytes (:class:`PeakMemory`).

A fake tensor has a shape, a dtype and a device but no data, so CogVideoX-5B or Wan 14B at 480p runs one
sampling step here in seconds, allocating nothing. Used by ``real_size.py`` and by the host tier's
no-host-sync test (``tests/host/test_no_host_sync.py``).

- :func:`fake_model`: the weights are fake tensors made under the mode and loaded by ComfyUI's own
  ``load_diffusion_model_state_dict`` (detection, model class and patcher as Load Diffusion Model gives
  them). The model's noise schedule (``model_sampling``, a few hundred floats) is rebuilt real, so the
  sampler's scheduler can compute its sigmas: the clock of a sampling is host data in ComfyUI.
- :func:`weights_stay_put`: while it is active ComfyUI's ``load_models_gpu`` does nothing. Fake weights
  cannot be moved (``Module.to`` swaps fake parameters in place, which torch refuses for them), and on
  the CPU there is nowhere to move them to.
- :func:`fake_modules_convert_in_place`: ``Module.to`` on fake parameters (peft moves each LoRA layer it
  makes), by setting their data instead of swapping them.
- :func:`flop_counter`: ``FlopCounterMode`` that also counts PyTorch's CPU flash attention
  (``_scaled_dot_product_flash_attention_for_cpu``, forward and backward), the op SDPA dispatches to on
  the CPU under fake tensors; :func:`attention_flops` sums the attention ops of a count.
- :class:`PeakMemory`: live tensor bytes (each storage once, views free) and their peak, as
  ``torch.cuda.max_memory_allocated`` would see a step: weights, activations, outputs, saved tensors of
  autograd. Kernel workspaces inside one op and allocator rounding are not seen.

Checked in torch 2.11 (ComfyUI's environment) and 2.13 (CI's unit tier) alike: ``Module.to`` on fake
parameters raises ("Couldn't swap"); ``torch.distributed._tools.mem_tracker.MemTracker`` fails on an
inference step of frozen weights (it hooks the gradient of every parameter: "cannot register a hook on a
tensor that doesn't require gradient"), hence :class:`PeakMemory`; the stock ``FlopCounterMode`` counts
0 FLOPs for ``_scaled_dot_product_flash_attention_for_cpu``, hence :func:`flop_counter`.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable, Iterator

import torch
from _host_models import load_model, weight_shapes
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

ATTENTION_OP_PREFIX = "aten._scaled_dot_product"
"""Every fused attention op of PyTorch (flash, efficient, cuDNN, CPU flash) and its backward."""


def fake_mode():
    """A ``FakeTensorMode`` that turns the real tensors it meets (noise, sigmas) into fake ones."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode(allow_non_fake_inputs=True)


def fake_model(mode, family: str, arguments: dict, dtype: torch.dtype):
    """A ComfyUI ``ModelPatcher`` of ``family``'s class built with ``arguments``, every weight a fake tensor
    of ``dtype`` (ComfyUI keeps its float32 layers float32 as it would), its noise schedule real."""
    import comfy.model_base

    with mode:
        state_dict = {
            name: torch.empty(shape, dtype=dtype) for name, shape in weight_shapes(family, arguments).items()
        }
        patcher = load_model(state_dict, dtype)
    base = patcher.model
    base.model_sampling = comfy.model_base.model_sampling(base.model_config, base.model_type)
    return patcher


@contextlib.contextmanager
def weights_stay_put() -> Iterator[None]:
    """ComfyUI's ``load_models_gpu`` as a no-op for the duration (see the module docstring)."""
    import comfy.model_management

    original = comfy.model_management.load_models_gpu
    comfy.model_management.load_models_gpu = lambda *args, **kwargs: None
    try:
        yield
    finally:
        comfy.model_management.load_models_gpu = original


@contextlib.contextmanager
def fake_modules_convert_in_place() -> Iterator[None]:
    """``Module.to`` (any ``Module._apply``) sets each fake parameter's ``data`` for the duration, as torch
    did before parameter swapping: torch swaps fake parameters, which it then refuses (peft moves every new
    LoRA layer with ``.to``). Real parameters convert as always."""
    from torch._subclasses.fake_tensor import FakeTensor

    original = torch.nn.Module._apply

    def apply(module, fn, recurse=True):
        fake = [p for p in module.parameters(recurse=False) if isinstance(p, FakeTensor)]
        if not fake:
            return original(module, fn, recurse)
        if recurse:
            for child in module.children():
                child._apply(fn)
        for parameter in fake:
            with torch.no_grad():
                parameter.data = fn(parameter)
        for name, buffer in module._buffers.items():
            if buffer is not None:
                module._buffers[name] = fn(buffer)
        return module

    torch.nn.Module._apply = apply
    try:
        yield
    finally:
        torch.nn.Module._apply = original


def _cpu_flash_flops(query, key, value, *args, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_flash_backward_flops(grad_out, query, key, value, *args, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def flop_counter() -> FlopCounterMode:
    """``FlopCounterMode`` (no printout) counting PyTorch's CPU flash attention too."""
    aten = torch.ops.aten
    return FlopCounterMode(
        display=False,
        custom_mapping={
            aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_flops,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward_flops,
        },
    )


def flops_by_op(counter: FlopCounterMode) -> dict[str, int]:
    """FLOPs of each op counted, by the op's name (``"aten.addmm"``...)."""
    return {str(op): count for op, count in counter.get_flop_counts()["Global"].items()}


def attention_flops(counter: FlopCounterMode) -> int:
    """FLOPs of the fused attention ops in ``counter`` (what SDPA-family kernels computed)."""
    return sum(count for op, count in flops_by_op(counter).items() if op.startswith(ATTENTION_OP_PREFIX))


class PeakMemory(TorchDispatchMode):
    """Live tensor bytes while it is active, and their peak (``peak``, bytes).

    A storage counts from the first op that creates or reads it until Python frees it, once however many
    tensors view it. ``track`` counts tensors that exist before (a model's weights) from the start.
    """

    def __init__(self) -> None:
        super().__init__()
        self._storages: dict[int, weakref.ref] = {}
        self.live = 0
        self.peak = 0

    def track(self, tensors: Iterable[torch.Tensor]) -> PeakMemory:
        for tensor in tensors:
            self._see(tensor)
        return self

    def _see(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._storages:
            return
        size = storage.nbytes()
        self._storages[key] = weakref.ref(storage, lambda _, key=key, size=size: self._free(key, size))
        self.live += size
        self.peak = max(self.peak, self.live)

    def _free(self, key: int, size: int) -> None:
        if self._storages.pop(key, None) is not None:
            self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for value in tree_leaves((args, kwargs)):
            if isinstance(value, torch.Tensor):
                self._see(value)
        out = func(*args, **(kwargs or {}))
        for value in tree_leaves(out):
            if isinstance(value, torch.Tensor):
                self._see(value)
        return out


def model_tensors(patcher) -> list[torch.Tensor]:
    """The parameters and buffers of a patcher's model (its weights, as loaded)."""
    model = patcher.model
    return [*model.parameters(), *model.buffers()]
