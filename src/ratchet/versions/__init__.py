"""The Versions API: a read-only view of a workspace's versions (``ratchet serve versions``).

``catalog`` reads versions from git tags with their metadata, state and eval summaries; ``app`` is
the REST adapter (FastAPI).
"""
