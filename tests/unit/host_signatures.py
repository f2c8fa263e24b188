"""The signatures of the real host models, as the unit tests name them (test data, not the product)."""

from __future__ import annotations

from customvideox_core.host_signature import HostSignature

COGVIDEOX_2B = HostSignature("cogvideox", 1920, 30, 30, 64, 2, positions="sincos")
COGVIDEOX_5B = HostSignature("cogvideox", 3072, 42, 48, 64, 2)
COGVIDEOX_15 = HostSignature("cogvideox", 3072, 42, 48, 64, 2, patch_size_t=2)
WAN_1_3B = HostSignature("wan", 1536, 30, 12, 128, 2)
WAN_14B = HostSignature("wan", 5120, 40, 40, 128, 2)
WAN_22_5B = HostSignature("wan", 3072, 30, 24, 128, 2)
