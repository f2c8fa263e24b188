"""Shared test set-up: make ``customvideox_core`` importable without shadowing ComfyUI.

The repository root is *appended* to ``sys.path`` (never inserted first): the pack's ``nodes/``
folder has the same name as ComfyUI's top-level ``nodes.py``, and the host tier puts ComfyUI's
root in front of it.
"""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))
