"""Repository tools, not installed with memstudy: README and docs/ generation (`python -m tools.published --readme`)."""
