"""Deprecated name of :mod:`.patch_model` (``patch_model``: the optional node inputs as one patch on a
MODEL clone); kept so that code importing ``nodes.settings`` keeps working."""

from .patch_model import patch_model

__all__ = ["patch_model"]
