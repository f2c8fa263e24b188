"""Convert Concat-ID's SAT CogVideoX-5B checkpoint to ComfyUI's CogVideoX layout (safetensors).

Run from the pack's folder (``ComfyUI/custom_nodes/ComfyUI-CustomVideoX``) with ComfyUI's Python::

    python scripts/convert_concat_id.py --input path/to/Concat-ID/single-identity \\
        --output ../../models/diffusion_models/concat_id_cogvideox5b_single.safetensors

``--help`` lists the options; the work is done by ``customvideox_core.convert.cli`` (host-free).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from customvideox_core.convert.cli import main

if __name__ == "__main__":
    sys.exit(main())
