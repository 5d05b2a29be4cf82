"""The Architect: plans a change from feedback or a wake-up, applies it in a worktree, tests, merges, tags.

``service`` runs jobs (:class:`~ratchet.architect.service.Architect`), ``jobs`` keeps their records,
``plans`` defines the actions and applies them, ``planners`` is the planner contract, ``worktree`` a
job's isolated git worktree, ``toolschemas`` the tool-schema diff that decides a major bump,
``client`` the HTTP client ``ratchet feedback``/``ratchet jobs`` use; ``app`` and ``routes/`` are the
REST adapter (FastAPI).
"""
