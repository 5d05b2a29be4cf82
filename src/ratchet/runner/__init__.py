"""The Runner: serves the workspace's runner tools with the active state.

``service`` holds the logic (:class:`~ratchet.runner.service.Runner`: decide, call, log the decision,
hot-reload), ``context`` the :class:`RunContext` a tool receives, ``server`` the MCP adapter.
"""
