"""The generation finding: where inference as it is deployed (a prefill and decode steps with a KV cache) stands
beside training and a single inference forward of the same model. The families that run mode generate list it.

Read from the per-cell medians (summary.csv) of the cells whose family lists `generation`; it applies when some of
them ran mode generate. The context of a cell is its sequence: seq_len for training and inference, prompt_len +
new_tokens for a generation, and a generation is set beside the training and inference cells of the same model
(every other field equal, seq_len too) only when it fills that context (prompt_len + new_tokens = seq_len). Each
part computes its numbers from those rows and says "not so" where they disagree with what it tests:
- training ÷ generation total peak per sequence (peak ÷ batch) at equal length, and how it moves with the context;
- each peak fitted over the context as fixed + linear·s + quadratic·s², and each term's share at the largest s;
- per sequence (the slope of the peak over the batch, the fixed part left out): how many sequences a decode step
  (and a whole generation) holds in what one training sequence takes;
- what fewer K/V heads (grouped-query attention) and a smaller dtype buy: the cache's ratio against the heads' or
  itemsizes' ratio, and the peaks';
- the prefill's peak against the largest decode step's; the prefill with every position's logits against the
  last one's only (`prefill_logits`, default `last` as transformers' generate);
- the cache's growth per decode step against 2 · layers · b · kv_heads · head_dim · itemsize.
It reads the fields the generating families declare: seq_len, heads, kv_heads (heads where a family has none),
width, depth, vocab, and generation's own (nn.generation).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..nn.generation import DEFAULTS, GENERATE
from ..report import document as doc
from ..report.context import Study
from ..report.document import Block, Bullets, Figure, Heading, Paragraph, plot
from ..report.fit import describe_fixed, itemsize, least_squares, representative, varying_fields
from ..report.formats import bytes_text

NAME = "generation"
FIGURES = ("generation_context.png",)
FIGURES_MODULE = "memstudy.findings.generation_figures"
GENERATION_FIELDS = ("prompt_len", "new_tokens", "kv_cache", "prefill_logits")
NUMERIC = ("seq_len", "batch_size", "depth", "width", "heads", "kv_heads", "prompt_len", "new_tokens", "vocab")
PEAKS = (  # (label, column, modes): the peaks fitted over the context (a generation's is its prefill's or a decode step's)
    ("training", "peak_bytes", ("train",)),
    ("inference (one forward)", "peak_bytes", ("inference",)),
    ("generation: prefill", "prefill_peak_bytes", (GENERATE,)),
    ("generation: largest decode step", "decode_peak_bytes", (GENERATE,)),
)
EXACT = 1e-9  # relative: a ratio "equal" to the expected one
NEGLIGIBLE = 0.01  # a fitted term's share of its peak at the largest context below which it counts as absent


def applies(study: Study) -> bool:
    """Cells of a family that lists this finding, some of them in mode generate."""
    cells = study.cells_declaring(NAME)
    return not cells.empty and (cells["mode"] == GENERATE).any()


def prepare(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells with numbers for the sizes, `kv` (K/V heads: kv_heads, else heads), `head_dim`, `itemsize`, and
    `context` (seq_len; prompt_len + new_tokens for a generation)."""
    cells = cells.copy()
    for column in NUMERIC:
        if column in cells.columns:
            cells[column] = pd.to_numeric(cells[column], errors="coerce")
    kv = cells["kv_heads"] if "kv_heads" in cells.columns else pd.Series(np.nan, index=cells.index)
    cells["kv"] = kv.fillna(cells["heads"])
    cells["head_dim"] = cells["width"] // cells["heads"]
    cells["itemsize"] = [itemsize(d) for d in cells["dtype"]]
    generating = cells["mode"] == GENERATE
    cells["context"] = cells["seq_len"].where(~generating, cells["prompt_len"] + cells["new_tokens"])
    return cells


def model_keys(cells: pd.DataFrame) -> list[str]:
    """The fields that tell one model-and-batch from another: every varying field but the mode and generation's."""
    return [f for f in varying_fields(cells) if f != "mode" and f not in GENERATION_FIELDS]


def filling(cells: pd.DataFrame) -> pd.DataFrame:
    """The generation cells that fill their model's context (prompt_len + new_tokens = seq_len)."""
    gen = cells[cells["mode"] == GENERATE]
    return gen[gen["context"] == gen["seq_len"]]


def generation_slice(gen: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The generation cells at one setting of generation's own fields: the defaults where they ran (dynamic cache,
    last position's logits), the most new tokens."""
    fixed: dict[str, Any] = {}
    for name in ("kv_cache", "prefill_logits"):
        if name in gen.columns and gen[name].nunique() > 1:
            value = DEFAULTS[name] if (gen[name] == DEFAULTS[name]).any() else sorted(gen[name].unique())[0]
            fixed[name] = value
            gen = gen[gen[name] == value]
    if gen["new_tokens"].nunique() > 1:
        fixed["new_tokens"] = int(gen["new_tokens"].max())
        gen = gen[gen["new_tokens"] == fixed["new_tokens"]]
    return gen, fixed


def train_generation_pairs(cells: pd.DataFrame) -> pd.DataFrame:
    """Each training cell beside each generation of the same model and batch that fills its context: per sequence,
    training's total peak ÷ the generation's (`ratio`), with the generation's own fields."""
    keys = [k for k in model_keys(cells) if k not in ("seq_len",)] + ["seq_len"]
    train = cells[cells["mode"] == "train"][keys + ["context", "peak_bytes"]]
    gen = filling(cells)[keys + list(GENERATION_FIELDS) + ["peak_bytes"]]
    pairs = train.merge(gen, on=keys, suffixes=("_train", "_gen"))
    pairs["ratio"] = (pairs["peak_bytes_train"].astype(float) / pairs["peak_bytes_gen"].astype(float))
    return pairs


def context_fit(part: pd.DataFrame, column: str) -> dict[str, Any] | None:
    """column = fixed + linear·s + quadratic·s² over the contexts s (one cell per context); None with fewer than
    three contexts. Gives the terms, R², the largest residual, and each term's share at the largest context."""
    part = part.dropna(subset=[column]).sort_values("context")
    if part["context"].nunique() < 3 or len(part) != part["context"].nunique():
        return None
    s = part["context"].astype(float).to_numpy()
    y = part[column].astype(float).to_numpy()
    fit = least_squares(y, {"fixed": np.ones(len(s)), "linear": s, "quadratic": s ** 2})
    coef = {k: fit["coef"].get(k, 0.0) for k in ("fixed", "linear", "quadratic")}
    residual = float(np.max(np.abs(y - (coef["fixed"] + coef["linear"] * s + coef["quadratic"] * s ** 2))))
    top = float(s.max())
    terms = {"fixed": coef["fixed"], "linear": coef["linear"] * top, "quadratic": coef["quadratic"] * top ** 2}
    total = sum(terms.values())
    share = {k: round(v / total, 6) + 0.0 if total else float("nan") for k, v in terms.items()}  # no "-0.00%"
    return {"coef": coef, "r2": fit["r2"], "residual": residual, "points": len(s), "top": int(top), "share": share,
            "y_top": float(y[-1])}


def per_sequence(cells: pd.DataFrame, column: str, keys: list[str]) -> pd.DataFrame:
    """The slope of `column` over the batch per group of `keys` (every other model field equal): what each more
    sequence adds. One row per group with two or more batch sizes."""
    rows = []
    for values, part in cells.dropna(subset=[column]).groupby(keys, sort=True, dropna=False):
        if part["batch_size"].nunique() < 2:
            continue
        fit = least_squares(part[column].astype(float).to_numpy(),
                            {"per_sequence": part["batch_size"].astype(float).to_numpy(), "fixed": np.ones(len(part))})
        rows.append({**dict(zip(keys, values if isinstance(values, tuple) else (values,))),
                     "per_sequence": fit["coef"].get("per_sequence", float("nan")), "r2": fit["r2"]})
    return pd.DataFrame(rows)


def ratio_pairs(cells: pd.DataFrame, field: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """Cells with the smaller value of `field` beside those with the larger one, every other field equal: each
    column's ratio small ÷ large, and the ratio of `field`'s own measure (for kv: kv heads; dtype: itemsize)."""
    values = sorted(cells[field].dropna().unique().tolist(), key=lambda v: (itemsize(v) if field == "dtype" else v))
    if len(values) < 2:
        return pd.DataFrame()
    keys = [f for f in varying_fields(cells) if f != field] + ["mode"]
    keys = list(dict.fromkeys(keys))
    out = []
    small, large = values[0], values[-1]
    left = cells[cells[field] == small]
    right = cells[cells[field] == large]
    both = left.merge(right, on=keys, suffixes=("_small", "_large"))
    for _, row in both.iterrows():
        entry = {k: row[k] for k in keys}
        measure = "itemsize" if field == "dtype" else "kv"
        entry["expected"] = float(row[f"{measure}_small"]) / float(row[f"{measure}_large"])
        for column in columns:
            a, b = row.get(f"{column}_small"), row.get(f"{column}_large")
            entry[column] = float(a) / float(b) if pd.notna(a) and pd.notna(b) and float(b) else float("nan")
        out.append(entry)
    frame = pd.DataFrame(out)
    frame.attrs.update(small=small, large=large)
    return frame


def _range(values: pd.Series, fmt: str = "{:.3f}") -> str:
    """`lo–hi` as `fmt` writes them, or one value when they read the same."""
    values = values.dropna()
    lo, hi = fmt.format(float(values.min())), fmt.format(float(values.max()))
    return lo if lo == hi else f"{lo}–{hi}"


def _equal(a: float, b: float) -> bool:
    return bool(np.isclose(a, b, rtol=EXACT, atol=0))


# --- the section ------------------------------------------------------------------------------------------

def blocks(study: Study) -> list[Block]:
    cells = study.cells_declaring(NAME)
    if cells.empty or not (cells["mode"] == GENERATE).any():
        return []
    cells = prepare(cells)
    gen = cells[cells["mode"] == GENERATE]
    lines: list[Block] = [Heading("Generation: inference as it is deployed"), Paragraph(
        f"A generation is a prefill (one forward of the prompt that fills the KV cache) and one decode step per "
        f"further token, each reading the cache and adding its keys and values, under no_grad, greedy. "
        f"{len(gen)} generation cells ran beside {int((cells['mode'] == 'train').sum())} training and "
        f"{int((cells['mode'] == 'inference').sum())} inference cells of the same models. The context of a cell is "
        "its sequence: seq_len for training and inference, prompt_len + new_tokens for a generation, set beside "
        "the others only where it fills the model's context. The prefill computes the last position's logits only "
        "unless `prefill_logits = all` (the default is `last`, as transformers' generate asks for "
        "`logits_to_keep = 1`). Peaks are the ledger's totals (parameters and input included); the prefill's and "
        "decode steps' peaks are those of their phases.")]
    lines += _ratio_part(cells)
    lines += _context_part(cells, study)
    lines += _sequences_part(cells)
    lines += _gqa_part(cells)
    lines += _dtype_part(cells)
    lines += _prefill_part(cells)
    lines += _growth_part(cells)
    return lines


def choices(cells: pd.DataFrame) -> dict[str, Any]:
    """The value every table holds each model field at when it does not vary it (`fit.representative` over all the
    cells), so that the parts show one slice of the grid."""
    return {column: representative(cells, column) for column in model_keys(cells)}


def _slice(cells: pd.DataFrame, keep: tuple[str, ...]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Training, inference and the filling generations at one value of every model field outside `keep`
    (`choices`), and the generations at one setting of their own fields."""
    gen, gen_fixed = generation_slice(filling(cells))
    frame = pd.concat([cells[cells["mode"] != GENERATE], gen])
    fixed = {k: v for k, v in choices(cells).items() if k not in keep}
    for column, value in fixed.items():
        frame = frame[frame[column] == value]
    return frame, {**fixed, **gen_fixed}


def _ratio_part(cells: pd.DataFrame) -> list[Block]:
    lines: list[Block] = [Heading("Training ÷ generation, per sequence, at equal length", 3)]
    pairs = train_generation_pairs(cells)
    if pairs.empty:
        return lines + [Paragraph("No training cell has a generation of the same model filling its context, so "
                                  "there is no ratio to show.")]
    sliced, fixed = _slice(cells, ("seq_len", "batch_size"))
    shown = train_generation_pairs(sliced)
    batches = sorted(shown["batch_size"].unique().tolist()) if "batch_size" in shown else []
    if batches:
        body = []
        for context in sorted(shown["seq_len"].unique()):
            row: list[Any] = [int(context)]
            for b in batches:
                hit = shown[(shown["seq_len"] == context) & (shown["batch_size"] == b)]
                row.append(doc.times(hit["ratio"].iloc[0]) if len(hit) else "—")
            body.append(row)
        lines.append(doc.table(["context \\ batch"] + [str(int(b)) for b in batches], body, caption=(
            "Training's total peak ÷ the generation's, per sequence (both ÷ batch, so the ratio of the totals)"
            + (f", at {describe_fixed(fixed)}" if fixed else "") + ":")))
    groups = [k for k in model_keys(cells) if k != "seq_len"] + [f for f in GENERATION_FIELDS if f != "prompt_len"]
    groups = [g for g in groups if g in pairs.columns]
    moves = []
    for _, part in pairs.groupby(groups, dropna=False) if groups else [((), pairs)]:
        part = part.sort_values("seq_len")
        if part["seq_len"].nunique() >= 2:
            moves.append((float(part["ratio"].iloc[0]), float(part["ratio"].iloc[-1]), int(part["seq_len"].iloc[0]),
                          int(part["seq_len"].iloc[-1])))
    items = [f"Over all {len(pairs)} pairs the ratio is {_range(pairs['ratio'], '{:.2f}×')}; training needs more "
             f"than the generation of the same length in {int((pairs['ratio'] > 1).sum())} of them"
             + (": so in every pair." if (pairs["ratio"] > 1).all() else
                f": not so in {int((pairs['ratio'] <= 1).sum())} (there the generation needs as much or more).")]
    if moves:
        falls = sum(last < first for first, last, _, _ in moves)
        lo, hi = moves[0][2], moves[0][3]
        items.append(
            f"As the context grows from {lo} to {hi} tokens the ratio falls in {falls} of {len(moves)} groups (every "
            f"other field equal), from {_range(pd.Series([m[0] for m in moves]), '{:.2f}×')} to "
            f"{_range(pd.Series([m[1] for m in moves]), '{:.2f}×')}: "
            + ("the generation's share grows with the context in every group." if falls == len(moves) else
               "not so in every group: " + f"in {len(moves) - falls} it rises or stays."))
    return lines + [Bullets(tuple(items))]


def _context_part(cells: pd.DataFrame, study: Study) -> list[Block]:
    lines: list[Block] = [Heading("What is fixed, what grows linearly, what quadratically", 3)]
    sliced, fixed = _slice(cells, ("seq_len",))
    fits = []
    for label, column, modes in PEAKS:
        part = sliced[sliced["mode"].isin(modes)]
        fit = context_fit(part, column) if not part.empty else None
        if fit is not None:
            fits.append((label, column, modes, fit))
    if not fits:
        return lines + [Paragraph("The fit needs three contexts or more per mode (with the other fields equal); the "
                                  "grid has fewer.")]
    at = f" at {describe_fixed(fixed)}" if fixed else ""
    body = [[label, doc.coef(f["coef"]["fixed"]), doc.coef(f["coef"]["linear"]), doc.coef(f["coef"]["quadratic"]),
             doc.fixed(f["r2"], 6), doc.nbytes(f["residual"]),
             "/".join(f"{100 * f['share'][k]:.0f}%" for k in ("fixed", "linear", "quadratic"))]
            for label, _, _, f in fits]
    lines.append(doc.table(["peak", "fixed", "per token (·s)", "per token² (·s²)", "R²", "largest residual",
                            f"shares at s = {fits[0][3]['top']} (fixed/linear/quadratic)"], body, caption=(
        f"Each peak (bytes) fitted over the context s as fixed + linear·s + quadratic·s² (least squares over "
        f"{fits[0][3]['points']} contexts){at}; the shares are each term's part of the fitted peak at the largest "
        "context:")))
    items = []
    by_label = {label: f for label, _, _, f in fits}
    for label, f in by_label.items():
        share = f["share"]
        main = max(share, key=lambda k: share[k])
        items.append(f"{label[0].upper() + label[1:]}: at s = {f['top']}, fixed {100 * share['fixed']:.1f}%, linear "
                     f"{100 * share['linear']:.1f}%, quadratic {100 * share['quadratic']:.1f}%: the {main} part is "
                     "the largest.")
    gen = sliced[sliced["mode"] == GENERATE].dropna(subset=["prefill_peak_bytes"])
    if not gen.empty:
        own = int((gen["peak_bytes"] == gen["prefill_peak_bytes"]).sum())
        items.append(f"A whole generation's peak is its prefill's in {own} of {len(gen)} cells here"
                     + (" (so its fit is the prefill's)." if own == len(gen) else
                        f"; in {len(gen) - own} a decode step's is higher."))
    decode = by_label.get("generation: largest decode step")
    if decode is not None:
        absent = abs(decode["share"]["quadratic"]) < NEGLIGIBLE
        items.append("A decode step reads one query against the cache, so its peak should have no quadratic part: "
                     + (f"so (its quadratic term is {100 * decode['share']['quadratic']:.2f}% at s = {decode['top']})."
                        if absent else f"not so (its quadratic term is {100 * decode['share']['quadratic']:.1f}%)."))
    prefill = by_label.get("generation: prefill")
    if prefill is not None and decode is not None:
        items.append("Generation's quadratic part is its prefill's (the prompt's s × s scores): the prefill's "
                     f"quadratic term is {100 * prefill['share']['quadratic']:.1f}% of its peak at s = {prefill['top']}.")
    lines.append(Bullets(tuple(items)))
    lines.append(Figure("generation_context.png", "peaks against the context, per mode", plot(
        FIGURES_MODULE, "context_peaks", sliced, [(label, column, modes, f) for label, column, modes, f in fits],
        title=f"Peaks against the context{at}")))
    return lines


def _sequences_part(cells: pd.DataFrame) -> list[Block]:
    lines: list[Block] = [Heading("Sequences a generation holds in one training sequence's memory", 3)]
    if cells["batch_size"].nunique() < 2:
        return lines + [Paragraph("The grid has one batch size, so no per-sequence slope.")]
    keys = [k for k in model_keys(cells) if k != "batch_size"]
    gen, gen_fixed = generation_slice(filling(cells))
    train = per_sequence(cells[cells["mode"] == "train"], "peak_bytes", keys)
    decode = per_sequence(gen, "decode_peak_bytes", keys)
    whole = per_sequence(gen, "peak_bytes", keys)
    if train.empty or decode.empty:
        return lines + [Paragraph("No model ran training and generation at two batch sizes or more.")]
    both = train.merge(decode, on=keys, suffixes=("_train", "_decode")).merge(
        whole.rename(columns={"per_sequence": "per_sequence_whole", "r2": "r2_whole"}), on=keys)
    both["sequences"] = both["per_sequence_train"] / both["per_sequence_decode"]
    both["sequences_whole"] = both["per_sequence_train"] / both["per_sequence_whole"]
    shown = both
    fixed = {k: v for k, v in choices(cells).items() if k in keys and k != "seq_len"}
    for column, value in fixed.items():
        shown = shown[shown[column] == value]
    body = [[int(r["seq_len"]), doc.nbytes(r["per_sequence_train"]), doc.nbytes(r["per_sequence_decode"]),
             doc.nbytes(r["per_sequence_whole"]), doc.fixed(r["sequences"], 1), doc.fixed(r["sequences_whole"], 1)]
            for _, r in shown.sort_values("seq_len").iterrows()]
    fixed = {**fixed, **gen_fixed}
    lines.append(doc.table(["context", "training, per sequence", "decode step, per sequence",
                            "whole generation, per sequence", "sequences per training sequence (decode)",
                            "(whole generation)"], body, caption=(
        "Per sequence: the slope of the total peak over the batch (least squares over the batch sizes, every other "
        "field equal), so the weights and other fixed bytes drop out; sequences = training's slope ÷ the "
        "generation's" + (f", at {describe_fixed(fixed)}" if fixed else "") + ":")))
    others = [k for k in keys if k != "seq_len"]
    trends = [g.sort_values("seq_len") for _, g in (both.groupby(others) if others else [((), both)])
              if g["seq_len"].nunique() > 1]
    rises = sum(t["sequences"].iloc[-1] > t["sequences"].iloc[0] for t in trends)
    first = shown.sort_values("seq_len")
    items = [f"One training sequence's memory holds {_range(both['sequences'], '{:.1f}')} sequences of a decode step "
             f"over {len(both)} model-and-context groups ({first['sequences'].iloc[0]:.1f} at context "
             f"{int(first['seq_len'].iloc[0])}, {first['sequences'].iloc[-1]:.1f} at {int(first['seq_len'].iloc[-1])} "
             f"in the table) and {_range(both['sequences_whole'], '{:.1f}')} of a whole generation (its prefill "
             "included)."]
    if trends:
        train_growth = pd.Series([t["per_sequence_train"].iloc[-1] / t["per_sequence_train"].iloc[0] for t in trends])
        decode_growth = pd.Series([t["per_sequence_decode"].iloc[-1] / t["per_sequence_decode"].iloc[0]
                                   for t in trends])
        lo, hi = int(trends[0]["seq_len"].iloc[0]), int(trends[0]["seq_len"].iloc[-1])
        items.append(f"From context {lo} to {hi} the number rises in {rises} of {len(trends)} groups and falls or "
                     f"stays in {len(trends) - rises}: training's bytes per sequence grow "
                     f"{_range(train_growth, '{:.2f}×')}, a decode step's {_range(decode_growth, '{:.2f}×')}.")
    lines.append(Bullets(tuple(items)))
    return lines


def _gqa_part(cells: pd.DataFrame) -> list[Block]:
    lines: list[Block] = [Heading("What fewer K/V heads buy (grouped-query attention)", 3)]
    if "kv_heads" not in cells.columns or cells["kv_heads"].nunique() < 2:
        return lines + [Paragraph("The grid has one number of K/V heads, so nothing to compare.")]
    pairs = ratio_pairs(cells, "kv_heads", ("kv_cache_bytes", "peak_bytes", "decode_peak_bytes"))
    if pairs.empty:
        return lines + [Paragraph("No cells differ in kv_heads alone.")]
    small, large = pairs.attrs["small"], pairs.attrs["large"]
    gen = pairs[pairs["mode"] == GENERATE]
    exact = sum(_equal(r["kv_cache_bytes"], r["expected"]) for _, r in gen.iterrows())
    body = [[mode, int((pairs["mode"] == mode).sum()), _range(part["peak_bytes"]),
             _range(part["decode_peak_bytes"]) if part["decode_peak_bytes"].notna().any() else "—",
             _range(part["kv_cache_bytes"]) if part["kv_cache_bytes"].notna().any() else "—"]
            for mode, part in pairs.groupby("mode", sort=False)]
    lines.append(doc.table(["mode", "pairs", "total peak ratio", "decode-step peak ratio", "KV cache ratio"], body,
                           caption=f"kv_heads {int(small)} ÷ kv_heads {int(large)}, every other field equal:"))
    expected = _range(gen["expected"])
    full = cells[(cells["mode"] == GENERATE) & (cells["kv_heads"] == large)]
    share = full["peak_kv_cache_bytes"].astype(float) / full["peak_bytes"].astype(float)
    lines.append(Paragraph(
        f"The cache holds kv_heads heads of keys and values, so kv_heads {int(small)} should keep {expected} of "
        f"kv_heads {int(large)}'s cache: {exact} of {len(gen)} generation pairs keep exactly that ("
        + ("so" if exact == len(gen) else "not so") + f"). The generation's total peak falls to "
        f"{_range(gen['peak_bytes'])} of it, and the largest decode step's to {_range(gen['decode_peak_bytes'])}: at "
        f"the generation's peak the cache is {_range(share, '{:.1%}')} of the total with kv_heads {int(large)}."))
    return lines


def _dtype_part(cells: pd.DataFrame) -> list[Block]:
    lines: list[Block] = [Heading("What a smaller dtype buys the cache", 3)]
    if cells["dtype"].nunique() < 2:
        return lines + [Paragraph("The grid has one dtype, so nothing to compare.")]
    pairs = ratio_pairs(cells, "dtype", ("kv_cache_bytes", "peak_bytes", "decode_peak_bytes"))
    if pairs.empty:
        return lines + [Paragraph("No cells differ in dtype alone.")]
    small, large = pairs.attrs["small"], pairs.attrs["large"]
    gen = pairs[pairs["mode"] == GENERATE]
    exact = sum(_equal(r["kv_cache_bytes"], r["expected"]) for _, r in gen.iterrows())
    sixteen = [d for d in cells["dtype"].unique() if itemsize(d) == 2]
    lines.append(Paragraph(
        f"{small} ÷ {large} (itemsize {itemsize(small)} ÷ {itemsize(large)} B), every other field equal: the KV "
        f"cache's ratio is {_range(gen['kv_cache_bytes'])} in the {len(gen)} generation pairs, the itemsizes' ratio "
        f"exactly in {exact} of them (" + ("so" if exact == len(gen) else "not so") + "); the generation's total peak "
        f"is {_range(gen['peak_bytes'])} and training's {_range(pairs[pairs['mode'] == 'train']['peak_bytes'])}."
        + ("" if sixteen else " No 16-bit dtype ran in this study: the same rows with a 16-bit dtype answer what a "
           "16-bit cache buys.")))
    return lines


def _prefill_part(cells: pd.DataFrame) -> list[Block]:
    lines: list[Block] = [Heading("Prefill against decode", 3)]
    gen = cells[(cells["mode"] == GENERATE) & cells["decode_peak_bytes"].notna()]
    if gen.empty:
        return lines + [Paragraph("No generation had a decode step (new_tokens 1 everywhere).")]
    ratio = gen["prefill_peak_bytes"].astype(float) / gen["decode_peak_bytes"].astype(float)
    above = int((ratio > 1).sum())
    items = [f"The prefill's peak is {_range(ratio, '{:.2f}×')} the largest decode step's over {len(gen)} generation "
             f"cells; it is the higher one in {above} of them"
             + (": so in every cell." if above == len(gen) else f": not so in {len(gen) - above}.")]
    if "prefill_logits" in gen.columns and gen["prefill_logits"].nunique() > 1:
        keys = [f for f in varying_fields(gen) if f != "prefill_logits"]
        gen = gen.assign(logits_extra=gen["batch_size"] * (gen["prompt_len"] - 1) * gen["vocab"] * gen["itemsize"])
        both = gen[gen["prefill_logits"] == "all"].merge(gen[gen["prefill_logits"] == "last"], on=keys,
                                                         suffixes=("_all", "_last"))
        if not both.empty:
            grow = both["prefill_peak_bytes_all"].astype(float) / both["prefill_peak_bytes_last"].astype(float)
            share = ((both["prefill_peak_bytes_all"] - both["prefill_peak_bytes_last"]).astype(float)
                     / both["logits_extra_all"].astype(float))
            raised = grow > 1
            items.append(
                f"Every prompt position's logits (`prefill_logits = all`) against the last one's only (`last`, the "
                f"default): the prefill's peak is {_range(grow, '{:.3f}×')} over {len(both)} pairs. Computing them "
                f"raises the prefill's peak in {int(raised.sum())} of {len(both)} pairs"
                + (": so in every pair" if raised.all() else f": not so in {int((~raised).sum())}, where the peak is "
                   "the same either way")
                + f". The extra logits are b·(prompt_len − 1)·vocab·itemsize = {_range(both['logits_extra_all'], '{:,.0f}')}"
                f" B; the peak rises by {_range(share, '{:.2f}')} of them.")
    return lines + [Bullets(tuple(items))]


def _growth_part(cells: pd.DataFrame) -> list[Block]:
    lines: list[Block] = [Heading("The cache, token by token", 3)]
    gen = cells[(cells["mode"] == GENERATE) & cells["kv_cache_step_bytes"].notna()]
    if gen.empty:
        return lines + [Paragraph("No generation had a decode step.")]
    per_token = 2 * gen["depth"] * gen["batch_size"] * gen["kv"] * gen["head_dim"] * gen["itemsize"]
    dynamic = gen["kv_cache"] == "dynamic"
    grows = int((gen.loc[dynamic, "kv_cache_step_bytes"] == per_token[dynamic]).sum())
    sized = gen["kv_cache_prefill_bytes"] == per_token * gen["prompt_len"]
    static = ~dynamic
    full = int((gen.loc[static, "kv_cache_bytes"] == (per_token * gen["context"])[static]).sum())
    items = [f"A dynamic cache grows each decode step by 2 · layers · b · kv_heads · head_dim · itemsize "
             f"({_range(per_token[dynamic], '{:,.0f}')} B here): exactly that in {grows} of {int(dynamic.sum())} "
             f"dynamic cells (" + ("so" if grows == int(dynamic.sum()) else "not so") + f"), and holds that times "
             f"prompt_len after the prefill in {int(sized[dynamic].sum())} of them."]
    pairs = [("kv_cache_bytes", "predicted_kv_cache_bytes"), ("prefill_peak_bytes", "predicted_prefill_peak_bytes"),
             ("decode_peak_bytes", "predicted_decode_peak_bytes")]
    both = gen.dropna(subset=[c for pair in pairs for c in pair])
    agree = int(sum(all(row[m] == row[p] for m, p in pairs) for _, row in both.iterrows()))
    items.append(f"Measured = predicted: the ledger's cache after the last step, prefill peak and decode-step peak "
                 f"equal the predictor's in {agree} of {len(both)} generation cells"
                 + (" (so)." if agree == len(both) else " (not so: the prediction did not follow the engine)."))
    if static.any():
        items.append(f"A static cache holds prompt_len + new_tokens positions from the prefill on and grows by "
                     f"{_range(gen.loc[static, 'kv_cache_step_bytes'], '{:,.0f}')} B per step; its bytes equal the "
                     f"formula at prompt_len + new_tokens in {full} of {int(static.sum())} static cells.")
    return lines + [Bullets(tuple(items))]
