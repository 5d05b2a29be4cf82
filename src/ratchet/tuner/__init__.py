"""The Tuner: takes structured feedback, folds it into staging and promotes patch versions.

``service`` holds the logic (:class:`~ratchet.tuner.service.Tuner`: feedback routes, fold, micro tier,
promotion), ``worker`` the folding process beside the server, ``server`` the MCP adapter.
"""
