"""Model families, one module each (mlp, seed, gpt, cnn), and the registry that finds them."""
from .registry import (CHECKPOINTS, DTYPES, SHARED_FIELDS, ConfigError, Family, Field, all_field_names,
                       builtin_names, checkpoint_segments, get_family, normalize, parse_checkpoint)

__all__ = ["CHECKPOINTS", "DTYPES", "SHARED_FIELDS", "ConfigError", "Family", "Field", "all_field_names",
           "builtin_names", "checkpoint_segments", "get_family", "normalize", "parse_checkpoint"]
