"""InterpFamily with a *wrong* shape rule for np.interp (float32 where numpy gives float64): the prediction then
differs from the ledger, and every place that shows a row must say so."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from memstudy.autograd import meta

sys.path.insert(0, str(Path(__file__).parent))  # the model's other file, beside this one
from numpy_ops import InterpFamily  # noqa: E402


@meta.implements(np.interp)
def wrong_interp_rule(x, xp, fp, left=None, right=None, period=None):
    return meta.new_buffer(np.shape(x), np.float32)


class InterpWrongRuleFamily(InterpFamily):
    name = "interp-wrong-rule"
