"""Running a workspace: ``supervisor`` (``ratchet up``), ``triggerer`` (online KPIs that wake the
Architect) and ``story`` (``ratchet trace``: one conversation from call to version)."""
