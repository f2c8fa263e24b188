"""``python -m customvideox_core.convert --input … --output …`` (same as scripts/convert_concat_id.py)."""

import sys

from .cli import main

sys.exit(main())
