"""The test tiers: ``harness`` loads a tier's cases and runs them through the runner's MCP tools,
``budgets`` reads ``ci/budgets.json`` (what each tier may cost and must reach, and the online SLO)."""
