"""What the figures and charts share so they read alike: each category's label and colour."""
from __future__ import annotations

from ..run.results.fields import CATEGORIES

CATEGORY_LABELS = {
    "parameter": "parameters", "optimizer_state": "optimiser state", "input": "input", "gradient": "gradients",
    "activation": "activations (held for backward)", "temporary": "temporaries", "output": "output",
}
CATEGORY_COLORS = dict(zip(CATEGORIES, ("#4c72b0", "#8172b2", "#937860", "#dd8452", "#c44e52", "#ccb974", "#55a868")))
