"""One router per resource: jobs (what was asked and what became of it), steps (an agent's work on a
job), templates (the library)."""
