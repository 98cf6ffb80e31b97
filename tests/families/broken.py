"""A user model file that cannot be imported (for the one-line-error test)."""
raise ImportError("this file is broken on purpose")
