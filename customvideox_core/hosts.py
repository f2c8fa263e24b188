"""Deprecated name of :mod:`customvideox_core.host_signature` (the host signature an adapter carries and
the attention targets per family); kept so that code importing ``customvideox_core.hosts`` keeps working.
New code imports :mod:`customvideox_core.host_signature`."""

from .host_signature import *  # noqa: F403
from .host_signature import __all__  # noqa: F401
