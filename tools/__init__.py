"""Scripts that generate docs and README blocks from the code (not installed; tests import them by path)."""
