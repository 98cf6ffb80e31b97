"""What the figures and charts share so they read alike: each category's label and colour."""
from __future__ import annotations

from ..run.results.fields import CATEGORIES

CATEGORY_LABELS = {
    "parameter": "parameters", "optimizer_state": "optimiser state", "input": "input", "kv_cache": "KV cache",
    "communication": "communication buffers", "gradient": "gradients", "activation": "activations (held for backward)",
    "temporary": "temporaries", "output": "output",
}
CATEGORY_COLORS = {
    "parameter": "#4c72b0", "optimizer_state": "#8172b2", "input": "#937860", "kv_cache": "#64b5cd",
    "communication": "#8c8c8c", "gradient": "#dd8452", "activation": "#c44e52", "temporary": "#ccb974",
    "output": "#55a868",
}
