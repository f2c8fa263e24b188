"""Facts that the nodes, the batch client and the tests share, each written once (no torch, no ComfyUI).

================  =======================  ===============================================================
name              value                    why
================  =======================  ===============================================================
``SEED_MAX``      ``2**64 - 1``            ComfyUI seeds are unsigned 64-bit integers
``SIZE_STEP``     ``16``                   pixel sizes: 8× VAE compression × DiT patch size 2
``TEMPORAL_       ``4``                    video lengths are 1 + 4k frames: the CogVideoX and Wan VAEs
COMPRESSION``                              compress time 4× (1 + 4k frames → 1 + k latent frames)
``MODEL_FOLDER``  ``"customvideox"``       ``models/customvideox``: adapters the pack trains and loads
``DATASET_        ``"customvideox_         folders (besides ComfyUI's input folder) that may hold
FOLDER``          datasets"``              training datasets; registered like the model folders
``ADAPTER_        ``SAFETENSORS_           the adapter file names listed and written (never pickles)
EXTENSIONS``      SUFFIXES``
================  =======================  ===============================================================

File suffixes, each kind written once (every reader and file list takes its set from here):

===============================  ================================  ===========================================
name                             value                             read how
===============================  ================================  ===========================================
``SAFETENSORS_SUFFIXES``         ``.safetensors``, ``.sft``        safetensors: no code can run
``TORCH_CHECKPOINT_SUFFIXES``    ``.ckpt``, ``.pt``, ``.pth``      ``torch.load(weights_only=True)`` only
                                                                   (SAT / Concat-ID checkpoints)
``TORCH_FILE_SUFFIXES``          the above and ``.bin``            the same (Stand-In files)
``PICKLE_SUFFIXES``              the above, ``.pkl``, ``.pickle``  refused where only safetensors is read
``CHECKPOINT_SUFFIXES``          torch checkpoints, safetensors    what the converters' loader reads
``STANDIN_SUFFIXES``             safetensors, torch files          what Load Stand-In reads and lists
===============================  ================================  ===========================================
"""

from __future__ import annotations

SEED_MAX = 2**64 - 1
SIZE_STEP = 16
TEMPORAL_COMPRESSION = 4
MODEL_FOLDER = "customvideox"
DATASET_FOLDER = "customvideox_datasets"
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
TORCH_CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")
TORCH_FILE_SUFFIXES = (*TORCH_CHECKPOINT_SUFFIXES, ".bin")
PICKLE_SUFFIXES = (*TORCH_FILE_SUFFIXES, ".pkl", ".pickle")
CHECKPOINT_SUFFIXES = (*TORCH_CHECKPOINT_SUFFIXES, *SAFETENSORS_SUFFIXES)
STANDIN_SUFFIXES = (*SAFETENSORS_SUFFIXES, *TORCH_FILE_SUFFIXES)
ADAPTER_EXTENSIONS = SAFETENSORS_SUFFIXES
ADAPTER_SUFFIX = ADAPTER_EXTENSIONS[0]
"""The extension of the files the Train Adapter node writes."""
