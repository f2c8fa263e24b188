"""Facts that the nodes, the batch client and the tests share, each written once (no torch, no ComfyUI).

================  =======================  ===============================================================
name              value                    why
================  =======================  ===============================================================
``SEED_MAX``      ``2**64 - 1``            ComfyUI seeds are unsigned 64-bit integers
``SIZE_STEP``     ``16``                   pixel sizes: 8× VAE compression × DiT patch size 2
``MODEL_FOLDER``  ``"customvideox"``       ``models/customvideox``: adapters the pack trains and loads
``ADAPTER_        ``(".safetensors",       the adapter file names listed and written (never pickles)
EXTENSIONS``      ".sft")``
================  =======================  ===============================================================
"""

from __future__ import annotations

SEED_MAX = 2**64 - 1
SIZE_STEP = 16
MODEL_FOLDER = "customvideox"
ADAPTER_EXTENSIONS = (".safetensors", ".sft")
ADAPTER_SUFFIX = ADAPTER_EXTENSIONS[0]
"""The extension of the files the Train Adapter node writes."""
