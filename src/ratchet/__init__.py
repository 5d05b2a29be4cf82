"""Ratchet: serve an agent service from a git repo and improve it from feedback.

Plugins need only ``from ratchet import hookimpl``; everything else is imported lazily so that
``ratchet --help`` stays fast.
"""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("ratchet")

__all__ = ["__version__", "hookimpl"]
