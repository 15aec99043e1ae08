"""Configuration files: the model mapping, hot reloading of YAML files, Gemini safety settings,
the Codex CLI model catalog."""
