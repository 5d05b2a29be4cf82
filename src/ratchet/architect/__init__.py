"""The Architect's REST adapter (FastAPI) over :mod:`ratchet.core.architect`."""
