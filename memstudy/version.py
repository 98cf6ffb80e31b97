"""memstudy's version, in a module of its own: provenance records it without importing the package's API."""
__version__ = "0.1.0"
