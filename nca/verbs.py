"""The project's own verbs: generate, preview, complexity. Each takes argv and returns an exit code."""
VERBS: dict = {}
