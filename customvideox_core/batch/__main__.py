"""``python -m customvideox_core.batch``: see :mod:`customvideox_core.batch` for the usage."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
