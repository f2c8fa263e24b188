"""Converters from published reference-trained checkpoints to the layouts ComfyUI's own loaders read.

- :mod:`.checkpoint_io`: read a checkpoint as plain tensors only (``.safetensors``, or ``.pt``/``.pth``/
  ``.ckpt`` through ``torch.load(weights_only=True)``; SAT checkpoint folders), never unpickling objects.
- :mod:`.sat_cogvideox`: SAT CogVideoX (Concat-ID's CogVideoX-5B release) → ComfyUI's native CogVideoX keys.
- :mod:`.cli`: ``python scripts/convert_concat_id.py`` (or ``python -m customvideox_core.convert``).
"""
