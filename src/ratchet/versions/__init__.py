"""The Versions API: a read-only REST view of a workspace's versions (``ratchet serve versions``)."""

from ratchet.versions.app import create_app

__all__ = ["create_app"]
