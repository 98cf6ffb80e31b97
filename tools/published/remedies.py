"""The block "What buys it back": checkpointing, saved-tensor policies, optimisers and dtypes, each bullet from its
study through the report's own section functions (memstudy/findings/remedies.py, dtypes: findings/precision.py)."""
from __future__ import annotations

import numpy as np

from memstudy.findings.precision import DTYPE_CATEGORIES, dtype_pairs, dtype_ratios, exact_halves
from memstudy.findings.remedies import (checkpoint_cells, optimizer_cells, optimizer_figures, parameter_share,
                                        policy_figures, segments_of, sqrt_finding)
from memstudy.report.formats import bytes_text as _bytes
from memstudy.report.formats import percent_text as _pct
from memstudy.report.formats import ratio_text as _ratio
from tools.published.results import OPTIMIZER_NAMES, Results, and_list, load_clause, near, span, times


def _checkpoint_bullet(results: Results) -> str:
    study = results.study("checkpointing")
    data, fixed, strategies = checkpoint_cells(study.train_cells)
    found = sqrt_finding(data)
    link = "- **Checkpointing** ([report](results/checkpointing/report.md))."
    if found is None:
        return link + " The study has no `sqrt` cell to compare."
    depth, batch, r = found["depth"], found["batch"], found["row"]
    length, count = segments_of("sqrt", depth)
    text = (f"{link} At depth {depth}, width {int(r['width'])}, batch {batch}, `sqrt` checkpointing (segments of "
            f"⌈√{depth}⌉ = {length} layers) holds **{r['layers']:.2f} layers' worth** of activations "
            f"({_bytes(r['activation_bytes'])}) instead of {float(r['activation_bytes_ref']) / r['unit']:.2f}. The "
            f"bound is 2√{depth} + 1 = {found['layers_bound']} layers' worth plus the loss's probabilities: "
            f"{'within it' if found['within_bound'] else 'it is OVER the bound'}. Its step took "
            f"**{times(r['time_ratio'])}** as long in this run "
            f"({load_clause(study.ok_rows['foreign_cores'], 'rows of this study')})")
    same = [s for s in strategies if s not in ("none", "sqrt") and segments_of(s, depth) == (length, count)]
    for s in same:
        hit = data[(data["checkpoint"] == s) & (data["depth"] == depth) & (data["batch_size"] == batch)]
        if len(hit) and np.isfinite(hit["time_ratio"].iloc[0]):
            text += f", and the same {count} × {length} split under `{s}` took {times(hit['time_ratio'].iloc[0])}"
    checkpointed = data[(data["checkpoint"] != "none")].dropna(subset=["time_ratio"])
    ratio = checkpointed["time_ratio"]
    depths, batches = span(checkpointed["depth"].tolist()), sorted(checkpointed["batch_size"].unique().tolist())
    text += (f". Over the study's {len(checkpointed)} checkpointed cells (depths {depths}, "
             f"batches {and_list(batches)}) the strategies cost "
             f"{times(ratio.min())}–{times(ratio.max())} the step: every strategy "
             "recomputes each layer's forward once, and the study's step times are noisy (see How it works).")
    peaks = "; ".join(f"at batch {p['batch']} it is {times(p['ratio'])} of no checkpointing "
                      f"({_bytes(p['none_bytes'])} → {_bytes(p['sqrt_bytes'])})" for p in found["peaks"])
    return text + (f" The total peak only falls when activations dominate. At depth {depth} with `sqrt`, {peaks}. "
                   "When the batch is no larger than the width, the gradients set the peak.")


def _policy_bullet(results: Results) -> str:
    study = results.study("policies")
    found = policy_figures(study.train_cells)
    rows, pytorch = found["rows"], found["pytorch_bytes"]
    link = "- **Saved-tensor policies** ([report](results/policies/report.md))."
    if "minimal" not in rows:
        return link + " The study has no `minimal` cells to compare against."
    minimal = rows["minimal"]["a"]
    cells = sorted(found["data"]["policy"].value_counts().unique().tolist())
    text = (f"{link} Bytes per layer per example are the slope of activation bytes over depth × batch, fitted over "
            f"each policy's {and_list(cells)} training cells. `minimal` holds "
            f"**{minimal:,.1f} B per layer per example**")
    if near(minimal / pytorch, 1.0):
        text += (f", PyTorch's figure of one width-sized buffer per Linear+activation layer ({found['width']} × "
                 f"{found['itemsize']} B).")
    else:
        text += f", {_ratio(minimal / pytorch)} × PyTorch's figure of {pytorch:,} B."
    if "all" in rows:
        text += (f" The textbook's \"store every intermediate\" (`all`: z and h) holds {rows['all']['a']:,.1f} B, "
                 f"{times(rows['all']['a'] / minimal)}.")
    if "half" in rows:
        half = rows["half"]
        text += (f" `half` (float16 storage) holds {half['a']:,.1f} B, {times(half['a'] / minimal)}, at a gradient "
                 f"relative error of {half['error']:.1e} (median over its cells; max {half['error_max']:.1e}).")
        if np.isfinite(half["time_ratio"]):
            text += (f" Its step takes {times(half['time_ratio'])} minimal's (median over cells; "
                     f"{load_clause(study.ok_rows['foreign_cores'], 'rows of this study')})"
                     + (", because numpy's float16 casts are slow." if half["time_ratio"] > 1 else "."))
    return text


def _optimizer_bullet(results: Results) -> str:
    study = results.study("optimizers")
    data, fixed, optimizers = optimizer_cells(study.train_cells)
    found = optimizer_figures(data, optimizers)
    expected = {"sgd": 0, "momentum": 1, "adam": 2}
    names = [OPTIMIZER_NAMES[o] for o in optimizers]
    link = "- **Optimisers** ([report](results/optimizers/report.md))."
    if all(found[o]["state_min"] == found[o]["state_max"] == expected[o] for o in optimizers):
        text = (f"{link} Measured state is exactly " + and_list([f"{expected[o]}×" for o in optimizers])
                + f" the parameter bytes for {and_list(names)}, in every cell")
    else:
        spans = [f"{found[o]['state_min']:.3f}–{found[o]['state_max']:.3f}×" for o in optimizers]
        text = f"{link} Measured state is {and_list(spans)} the parameter bytes for {and_list(names)}"
    cells = sorted({found[o]["cells"] for o in optimizers})
    text += (", and the median peak over the cells is " + and_list([times(found[o]["peak_ratio"]) for o in optimizers])
             + f" SGD's ({and_list(cells)} cells each).")
    widths = sorted(data["width"].unique().tolist())
    batches = sorted(data["batch_size"].unique().tolist())
    last = optimizers[-1]
    if len(widths) > 1 and len(batches) > 1:
        narrow = parameter_share(data, last, widths[0], batches[-1])
        wide = parameter_share(data, last, widths[-1], batches[-1])
        if narrow is not None and wide is not None:
            text += (f" With {OPTIMIZER_NAMES[last]}, the parameter side (parameters + gradients + state) is "
                     f"{_pct(narrow, False)} of the peak at width {widths[0]} and batch {batches[-1]}, and "
                     f"{_pct(wide, False)} at width {widths[-1]}.")
    return text + " Width grows the parameter side (width²); batch grows the activation side."


def _dtype_bullet(results: Results) -> str:
    study = results.study("dtypes")
    pairs = dtype_pairs(study.ok_cells)
    link = "- **Dtypes** ([report](results/dtypes/report.md))."
    if pairs is None or pairs.empty:
        return link + " The study has no float32 / float64 pairs."
    ratios = dtype_ratios(pairs)
    exact, _ = exact_halves(ratios)
    categories = [label for label, _ in DTYPE_CATEGORIES if label in ratios and label != "input"]
    halved = [c for c in categories if c in exact]
    if halved == categories:
        counted = [f"{c.replace(' (at the peak)', ' at the peak')} {ratios[c].pairs}" for c in categories]
        text = (f"{link} Moving from float64 to float32 halves **every** category of the ledger but the input exactly: "
                f"the ratio is 0.5000 in every pair of cells (float32 beside float64, every other field equal) where "
                f"the category is not empty (pairs: {', '.join(counted)}).")
    else:
        text = (f"{link} Moving from float64 to float32 halves {and_list(halved) or 'no category'} exactly; "
                + and_list([f"{c} {ratios[c].median:.4f} ({ratios[c].low:.4f}–{ratios[c].high:.4f})"
                         for c in categories if c not in halved]) + f" (medians over {len(pairs)} pairs).")
    if "input" in ratios:
        r = ratios["input"]
        text += (f" The input is the exception at {r.median:.4f} (median over {r.pairs} pairs; {r.low:.4f}–"
                 f"{r.high:.4f}), because the integer labels stay int64.")
    return text


def remedies_block(results: Results) -> list[str]:
    return [_checkpoint_bullet(results), _policy_bullet(results), _optimizer_bullet(results),
            _dtype_bullet(results)]
