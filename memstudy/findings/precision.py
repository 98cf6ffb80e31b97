"""The precision finding: what 16 bits buy, category by category (dtypes, autocast, master weights, loss scaling).

Applies where the rows vary a precision field (dtype, autocast, master_weights, loss_scale) in a family that lists
it. Read from the per-cell medians (summary.csv):
- float32 against float64, each pair of cells equal but for the dtype: which categories halve (moved here from
  `remedies`, whose dtypes study it describes);
- each precision against float32 (32-true) with every other field equal: bytes per ledger category, autocast's
  weight copies (`weight_copy_bytes`), the float32 scratch of the 16-bit emulation at the peak
  (`peak_emulation_bytes`: a numpy artefact, not the step's; it sits among the temporaries), the ratios, and which
  categories halve in every pair and which do not;
- why a category does not halve, from one predicted account per precision (the engine on shape-only arrays, the
  table labelled so): the bytes each dtype holds for backward, and the ops that made the float32 ones;
- ZeRO's accounting where master weights and Adam meet (optimiser state ÷ parameters = 12 Ψ ÷ 2 Ψ = 6);
- the gradients' relative error against a float64 twin (`grad_error_vs_float64`, cells run with float64_reference)
  and the step time against float32, beside its load;
- training ÷ inference total peak per precision.
Every sentence stating a finding is computed from those numbers; where they disagree it says "not so".
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from ..nn.models.registry import PRECISION_FIELDS, PRECISIONS
from ..report import document as doc
from ..report.context import Study
from ..report.document import Block, Figure, Heading, Paragraph, plot
from ..report.formats import LOADED_CORES
from ..run.results.fields import GRID_FIELDS
from .remedies import _against, _load_of

NAME = "precision"
FIGURES = ("dtype_ratio.png", "precision_bytes.png")
FIGURES_MODULE = "memstudy.findings.precision_figures"
REFERENCE = "32-true"


def applies(study: Study) -> bool:
    """A family that lists this finding, and rows that vary one of the precision fields."""
    cells = study.cells_declaring(NAME)
    return not cells.empty and any(f in cells and cells[f].nunique() > 1 for f in PRECISION_FIELDS)


def precision_of(row: Any) -> str:
    """The row's precision by name (PRECISIONS: Lightning's, then memstudy's), else its fields spelled out."""
    values = (row["dtype"], row["autocast"], bool(row["master_weights"]), row["loss_scale"])
    for name, fields in PRECISIONS.items():
        if tuple(fields) == values:
            return name
    return ", ".join(f"{f} {v}" for f, v in zip(PRECISION_FIELDS, values))


def with_precision(cells: pd.DataFrame) -> pd.DataFrame:
    return cells.assign(precision=[precision_of(r) for _, r in cells.iterrows()])


def blocks(study: Study) -> list[Block]:
    cells = with_precision(study.cells_declaring(NAME))
    out: list[Block] = [Heading("Precision: what 16 bits buy"), Paragraph(
        "Each precision is named as PyTorch Lightning's `--precision` names it (64-true, 32-true, bf16-true, "
        "16-true, bf16-mixed = autocast bfloat16 over float32 parameters, 16-mixed = autocast float16 with "
        "loss scaling), or memstudy's bf16-master / 16-master (16-bit parameters and gradients, float32 master "
        "weights and optimiser state). 16-bit arithmetic is emulated on numpy: each op computes in float32 and "
        "rounds its result once, as a 16-bit kernel with float32 accumulation does; the float32 scratch of that "
        "emulation is the ledger's workspace (`fp32_*`), counted among the temporaries, never as activations, "
        "and reported apart below.")]
    out += dtype_section(cells)
    out += category_section(cells)
    out += why_section(cells, study)
    out += zero_section(cells)
    out += error_time_section(cells)
    out += train_inference_section(cells)
    return out

DTYPE_CATEGORIES = (  # the ledger's categories, then the step's totals and the other measurements
    ("parameters", "parameter_bytes"), ("optimiser state", "optimizer_state_bytes"), ("input", "input_bytes"),
    ("gradients (at the peak)", "peak_gradient_bytes"), ("activations held for backward", "activation_bytes"),
    ("temporaries (at the peak)", "peak_temporary_bytes"), ("output (at the peak)", "peak_output_bytes"),
)
DTYPE_QUANTITIES = DTYPE_CATEGORIES + (
    ("step peak (ledger)", "step_peak_bytes"), ("total peak (ledger)", "peak_bytes"),
    ("step peak (tracemalloc)", "tracemalloc_step_peak_bytes"), ("step time", "step_seconds"),
)


class DtypeRatio(NamedTuple):
    """float32 ÷ float64 of one quantity over the pairs where float64's value is above 0."""
    median: float
    low: float
    high: float
    pairs: int


def dtype_pairs(cells: pd.DataFrame) -> pd.DataFrame | None:
    """Each float32 cell beside the float64 cell with every other field equal (`*_ref`); None without both."""
    if not {"float32", "float64"} <= set(cells["dtype"]):
        return None
    pairs = _against(cells, "dtype", "float64", [c for _, c in DTYPE_QUANTITIES] + ["foreign_cores"])
    return pairs[pairs["dtype"] == "float32"].dropna(subset=["peak_bytes_ref"])


def dtype_ratios(pairs: pd.DataFrame) -> dict[str, DtypeRatio]:
    """float32 ÷ float64 per quantity of DTYPE_QUANTITIES (by its label), over the pairs."""
    ratios = {}
    for label, column in DTYPE_QUANTITIES:
        num = pd.to_numeric(pairs[column], errors="coerce").astype(float)
        den = pd.to_numeric(pairs[f"{column}_ref"], errors="coerce").astype(float)
        keep = den > 0
        if not keep.any():
            continue
        r = (num[keep] / den[keep]).to_numpy()
        ratios[label] = DtypeRatio(float(np.median(r)), float(r.min()), float(r.max()), int(keep.sum()))
    return ratios


def exact_halves(ratios: dict[str, DtypeRatio]) -> tuple[list[str], list[str]]:
    """(memory quantities at exactly 0.5 in every pair, those that are not; the input, with its int64 labels, and
    the step time are in neither)."""
    exact = [label for label, r in ratios.items() if r.low == r.high == 0.5 and label != "step time"]
    inexact = [label for label in ratios if label not in exact and label not in ("step time", "input")]
    return exact, inexact


def labels_ratio(batch: int, in_features: int) -> float:
    """float32 ÷ float64 of a training input: x halves, the int64 labels do not."""
    return (batch * in_features * 4 + batch * 8) / (batch * in_features * 8 + batch * 8)


def dtype_section(cells: pd.DataFrame) -> list[Block]:
    pairs = dtype_pairs(cells)
    if pairs is None:
        return []
    blocks: list[Block] = [Heading("float32 against float64", 3), Paragraph(
        f"Each float32 cell against the float64 cell with every other field equal ({len(pairs)} pairs, "
        "training and inference): ratio = float32 ÷ float64.")]
    ratios = dtype_ratios(pairs)
    body = [[label, r.pairs, doc.fixed(r.median, 4), doc.compound("{} – {}", doc.fixed(r.low, 4), doc.fixed(r.high, 4))]
            for label, r in ratios.items()]
    blocks.append(doc.table(["quantity", "pairs", "median ratio", "range"], body))
    train = pairs[pairs["mode"] == "train"]
    labels = ""
    if not train.empty and "in_features" in train and train["in_features"].notna().all():  # the MLP's input: x, labels
        r = train.iloc[0]
        b, i = int(r["batch_size"]), int(r["in_features"])
        labels = (f" The input is the exception by construction: x halves but the int64 labels do not (batch {b}, "
                  f"{i} features: ({b}·{i}·4 + {b}·8) ÷ ({b}·{i}·8 + {b}·8) = "
                  f"{labels_ratio(b, i):.4f}); inference has no labels.")
    exact, inexact = exact_halves(ratios)
    if not inexact:
        finding = ("Every category of the step but the input halves exactly (ratio 0.5000 in every pair): each "
                   "buffer is the same number of elements at half the itemsize, allocated and freed in the same "
                   "order, so the peak falls at the same event.")
    else:
        finding = (f"Not every category halves: {', '.join(inexact)} "
                   f"{'does' if len(inexact) == 1 else 'do'} not have the ratio 0.5000 in every pair (see the "
                   "range column)" + (f"; {', '.join(exact)} halve exactly." if exact else "."))
    load = _load_of(*pairs["foreign_cores"], *pairs["foreign_cores_ref"])
    timed = ("" if not math.isfinite(load) else
             f" Its pairs were timed while other processes kept at most {load:.2f} cores busy"
             + (" (loaded: the ratio is rough)." if load > LOADED_CORES else "."))
    blocks.append(Paragraph(
        finding + labels + " The step time is a measurement of its own, not a memory figure: float32 matrix "
        "products are faster, but the engine's per-op overhead does not depend on the dtype." + timed))
    blocks.append(Figure("dtype_ratio.png", "float32 / float64 ratio per category",
                         plot(FIGURES_MODULE, "dtype_ratio", ratios,
                              title="float32 ÷ float64, per category (median, range)")))
    return blocks


# --- each precision against float32 ----------------------------------------------------------------------------

CATEGORY_COLUMNS = (  # (label, column): the ledger's categories, autocast's weight copies, the emulation, the peak
    ("parameters", "parameter_bytes"), ("gradients (at the peak)", "peak_gradient_bytes"),
    ("optimiser state", "optimizer_state_bytes"), ("activations held for backward", "activation_bytes"),
    ("temporaries (at the peak)", "peak_temporary_bytes"), ("total peak", "peak_bytes"),
)
EXTRA_COLUMNS = (("weight copies (autocast)", "weight_copy_bytes"), ("emulation scratch (at the peak)",
                                                                     "peak_emulation_bytes"))


def _keys(frame: pd.DataFrame) -> list[str]:
    """The fields that pair a cell with its float32 sibling: every grid field but the precision's."""
    return [f for f in GRID_FIELDS if f in frame and f not in PRECISION_FIELDS and f != "float64_reference"
            and frame[f].notna().any()]


def against_reference(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Each cell with `<column>_ref`: its 32-true sibling's (every other field equal); empty without one."""
    ref = frame[frame["precision"] == REFERENCE]
    if ref.empty:
        return frame.iloc[0:0]
    keys = _keys(frame)
    ref = ref[keys + columns].rename(columns={c: f"{c}_ref" for c in columns})
    return frame.merge(ref, on=keys, how="inner")


def ordered(precisions: Any) -> list[str]:
    order = list(PRECISIONS)
    return sorted(set(precisions), key=lambda p: (order.index(p) if p in order else len(order), p))


class Ratio(NamedTuple):
    median: float
    low: float
    high: float
    pairs: int


def ratios(pairs: pd.DataFrame, column: str) -> Ratio | None:
    num = pd.to_numeric(pairs[column], errors="coerce").astype(float)
    den = pd.to_numeric(pairs[f"{column}_ref"], errors="coerce").astype(float)
    keep = (den > 0) & num.notna()
    if not keep.any():
        return None
    r = (num[keep] / den[keep]).to_numpy()
    return Ratio(float(np.median(r)), float(r.min()), float(r.max()), int(keep.sum()))


def _ratio_cell(r: Ratio | None) -> Any:
    if r is None:
        return ""
    if r.low == r.high:
        return doc.fixed(r.median, 4)
    return doc.compound("{} ({}–{})", doc.fixed(r.median, 4), doc.fixed(r.low, 4), doc.fixed(r.high, 4))


def representative(train: pd.DataFrame, model: str) -> pd.DataFrame:
    """One configuration of `model` in every precision the study has for it: the 32-true cell with the largest total
    peak, and its siblings (every other field equal)."""
    mine = train[train["model"] == model]
    ref = mine[mine["precision"] == REFERENCE]
    if ref.empty:
        return mine.iloc[0:0]
    top = ref.sort_values("peak_bytes").iloc[-1]
    keys = _keys(mine)
    same = np.ones(len(mine), dtype=bool)
    for k in keys:
        same &= (mine[k] == top[k]).to_numpy() | (mine[k].isna() & pd.isna(top[k])).to_numpy()
    return mine[same]


def _halving(pairs: pd.DataFrame, precision: str) -> str:
    """Which categories take the same ratio to float32 in every pair (grouped by it), and which vary."""
    part = pairs[pairs["precision"] == precision]
    exact: dict[float, list[str]] = {}
    other = []
    for label, column in CATEGORY_COLUMNS[:5]:
        r = ratios(part, column)
        if r is None:
            continue
        if r.low == r.high:
            exact.setdefault(r.median, []).append(label)
        else:
            other.append(f"{label} {r.median:.3f} ({r.low:.3f}–{r.high:.3f})")
    words = {0.5: "halve", 1.0: "stay as they are", 2.0: "double", 1.5: "grow 1.5×"}
    parts = [f"{', '.join(labels)} {words.get(ratio, f'are ×{ratio:.4f}')} exactly in every pair"
             for ratio, labels in sorted(exact.items())]
    if other:
        parts.append("not the same in every pair: " + "; ".join(other))
    return f"**{precision}** ({len(part)} pairs): " + "; ".join(parts) + "."


def category_section(cells: pd.DataFrame) -> list[Block]:
    train = cells[cells["mode"] == "train"]
    columns = [c for _, c in CATEGORY_COLUMNS + EXTRA_COLUMNS] + ["step_seconds", "foreign_cores"]
    pairs = against_reference(train, columns)
    pairs = pairs[pairs["precision"] != REFERENCE]
    if pairs.empty:
        return []
    precisions = ordered(pairs["precision"])
    body = [[p] + [_ratio_cell(ratios(pairs[pairs["precision"] == p], c)) for _, c in CATEGORY_COLUMNS]
            for p in precisions]
    out: list[Block] = [Heading(f"Each precision against {REFERENCE}", 3), doc.table(
        ["precision"] + [label for label, _ in CATEGORY_COLUMNS], body, caption=
        f"Training cells: each precision's bytes ÷ its {REFERENCE} sibling's (every other field equal), median over "
        "the pairs (and the range where the pairs differ):")]
    out.append(Paragraph(" ".join(_halving(pairs, p) for p in precisions)))
    for model in sorted(train["model"].unique()):
        rep = representative(train, model)
        if rep["precision"].nunique() < 2:
            continue
        rows = []
        for p in ordered(rep["precision"]):
            r = rep[rep["precision"] == p].iloc[0]
            rows.append([p] + [doc.nbytes(r[c]) for _, c in CATEGORY_COLUMNS + EXTRA_COLUMNS])
        r0 = rep.iloc[0]
        out.append(doc.table(["precision"] + [label for label, _ in CATEGORY_COLUMNS + EXTRA_COLUMNS], rows,
                             caption=f"{model}, {_describe(r0)}, training step (ledger; medians over repeats). "
                             "The weight copies are autocast's 16-bit casts of the parameters (made once per "
                             "forward, kept for backward by the Linears that need them: activations); the "
                             "emulation's float32 scratch is part of the temporaries:"))
        out.append(Figure("precision_bytes.png", "bytes per category, per precision",
                          plot(FIGURES_MODULE, "precision_bytes", rep, [label for label, _ in CATEGORY_COLUMNS[:5]],
                               [c for _, c in CATEGORY_COLUMNS[:5]], ordered(rep["precision"]),
                               title=f"{model}, {_describe(r0)}: a training step's bytes at its peak")))
    return out


def _describe(row: Any) -> str:
    sizes = [f"{f.replace('_size', '')} {int(row[f])}" for f in ("depth", "width", "batch_size", "seq_len")
             if f in row and pd.notna(row[f])]
    return ", ".join(sizes + [str(row["optimizer"])])


# --- why: the bytes each dtype holds, from one predicted account per precision ------------------------------------

def why_section(cells: pd.DataFrame, study: Study) -> list[Block]:
    from ..measure.predict import predicted_account

    train = cells[cells["mode"] == "train"]
    out: list[Block] = []
    for model in sorted(train["model"].unique()):
        rep = representative(train, model)
        if rep["precision"].nunique() < 2:
            continue
        rows, notes = [], []
        for p in ordered(rep["precision"]):
            r = rep[rep["precision"] == p].iloc[0]
            config = study.config_of(r["cell"])
            if config is None:
                continue
            account = predicted_account(config)
            held = [b for b in account.buffers if b.category == "activation"]
            by_dtype: dict[str, list[Any]] = {}
            for b in held:  # autocast's weight copies apart: they are not activations of the batch
                key = f"{b.dtype} (weight copies)" if b.op == "autocast_weight" else b.dtype
                by_dtype.setdefault(key, []).append(b)
            agree = account.activation_bytes == int(r["activation_bytes"])
            for dtype in sorted(by_dtype, key=lambda d: -sum(b.nbytes for b in by_dtype[d])):
                group = by_dtype[dtype]
                ops = sorted({b.op for b in group})
                rows.append([p, dtype, doc.count(sum(b.nbytes for b in group)), len(group), ", ".join(ops)])
            if not agree:
                notes.append(f"{p}: the predicted activations differ from the row's (not so)")
        out += [Heading(f"Why: what each dtype holds for backward ({model})", 3), doc.table(
            ["precision", "dtype", "bytes (predicted)", "buffers", "made by"], rows, caption=
            f"{model}, {_describe(rep.iloc[0])}: every buffer held for backward in a training step, by dtype, from "
            "one predicted account per precision (the engine on shape-only arrays; its totals equal the rows'"
            + (")." if not notes else "; " + "; ".join(notes) + ")."))]
        out.append(Paragraph(_why_sentence(rows)))
    return out


def _why_sentence(rows: list[list[Any]]) -> str:
    """Which dtypes' bytes cannot halve in a 16-bit precision: the float32, 1-byte and integer buffers, and the ops
    that made them."""
    parts = []
    for p in dict.fromkeys(r[0] for r in rows):
        if p == REFERENCE or p == "64-true":
            continue
        kept = [r for r in rows if r[0] == p and r[1].split(" ")[0] not in ("bfloat16", "float16")]
        if kept:
            parts.append(f"in {p}, " + "; ".join(f"{r[2].text} B of {r[1]} (made by {r[4]})" for r in kept))
    if not parts:
        return ""
    return ("What does not halve is what is not 16-bit: " + "; ".join(parts) + ". float32 buffers of a 16-bit "
            "precision are the layer norms' statistics and the loss's probabilities (and under autocast the "
            "float32 residual stream the norms read), 1-byte ones the dropout masks, integers the token ids or "
            "labels: their bytes are the same in float32.")


# --- ZeRO, errors, time, training ÷ inference ---------------------------------------------------------------------

def zero_section(cells: pd.DataFrame) -> list[Block]:
    train = cells[(cells["mode"] == "train") & cells["master_weights"].astype(bool) & (cells["optimizer"] == "adam")]
    if train.empty:
        return []
    state = train["optimizer_state_bytes"].astype(float) - _scaler_bytes(train)
    ratio = state / train["parameter_bytes"].astype(float)
    exact = bool((ratio == 6.0).all())
    return [Paragraph(
        f"**ZeRO's accounting** (Rajbhandari et al. 2020: 2 Ψ parameters + 2 Ψ gradients + 12 Ψ optimiser state "
        f"for mixed-precision Adam): in the {len(train)} training cells with master weights and Adam, optimiser "
        f"state ÷ parameters = {ratio.median():.4f}" + ("" if ratio.min() == ratio.max() else
                                                      f" ({ratio.min():.4f}–{ratio.max():.4f})")
        + (" in every cell: 12 Ψ against 2 Ψ (float32 master weights, first and second moments, 4 Ψ each), exactly."
           if exact else ": not so, the state is not 6× the parameters in every cell.")
        + " (The loss scaler's two 4-byte buffers are taken out where there is one.)")]


def _scaler_bytes(frame: pd.DataFrame) -> pd.Series:
    return pd.Series([8.0 if s == "dynamic" else 0.0 for s in frame["loss_scale"]], index=frame.index)


def error_time_section(cells: pd.DataFrame) -> list[Block]:
    train = cells[cells["mode"] == "train"]
    pairs = against_reference(train, ["step_seconds", "foreign_cores"])
    body = []
    for p in ordered(train["precision"]):
        mine = train[train["precision"] == p]
        errors = pd.to_numeric(mine["grad_error_vs_float64"], errors="coerce").dropna()
        part = pairs[pairs["precision"] == p]
        time_ratio = ratios(part, "step_seconds") if p != REFERENCE else None
        load = _load_of(*part["foreign_cores"], *part["foreign_cores_ref"]) if len(part) else float("nan")
        reference = p == "64-true"  # float64 against its float64 twin: 0 by construction
        body.append([p, "0 (the reference)" if reference and len(errors) else
                     doc.num(errors.median(), "sci", 2) if len(errors) else "not measured",
                     "" if reference or not len(errors) else doc.num(errors.max(), "sci", 2), _ratio_cell(time_ratio),
                     doc.load(load if math.isfinite(load) else None)])
    if not body:
        return []
    out: list[Block] = [Heading("Gradient error and step time", 3), doc.table(
        ["precision", "gradient error vs float64 (median)", "(largest)", f"step time ÷ {REFERENCE}", "load (cores)"],
        body, caption="Training cells: ‖g − g₆₄‖ / ‖g₆₄‖ over all parameters against a float64 twin at the same "
        "weights and batch (before any update; cells run with float64_reference), and the median step time "
        f"against the {REFERENCE} sibling's, with the larger of the two loads it was timed under:")]
    units = {"bfloat16": 2.0 ** -8, "float16": 2.0 ** -11}
    sentences = []
    for p in ordered(train["precision"]):
        mine = train[train["precision"] == p]
        errors = pd.to_numeric(mine["grad_error_vs_float64"], errors="coerce").dropna()
        low = next((d for d in (mine["autocast"].iloc[0], mine["dtype"].iloc[0]) if d in units), None)
        if len(errors) and low is not None:
            sentences.append(f"{p}: {errors.median():.2e}, {errors.median() / units[low]:.1f}× {low}'s unit "
                             f"roundoff ({units[low]:.1e})")
    if sentences:
        out.append(Paragraph("The 16-bit gradients' error is of the order of their type's unit roundoff: "
                             + "; ".join(sentences) + ". The step times are the emulation's on numpy (16-bit values "
                             "converted to float32 and back around each op), not what 16-bit hardware would take."))
    return out


def train_inference_section(cells: pd.DataFrame) -> list[Block]:
    keys = [k for k in _keys(cells) if k != "mode"] + ["dtype", "autocast", "master_weights", "loss_scale"]
    train, inference = cells[cells["mode"] == "train"], cells[cells["mode"] == "inference"]
    if train.empty or inference.empty:
        return []
    both = train.merge(inference[keys + ["peak_bytes"]], on=keys, suffixes=("", "_inference"))
    if both.empty:
        return []
    body = []
    for p in ordered(both["precision"]):
        r = (both[both["precision"] == p]["peak_bytes"].astype(float)
             / both[both["precision"] == p]["peak_bytes_inference"].astype(float))
        body.append([p, len(r), doc.fixed(r.median(), 2), doc.compound("{} – {}", doc.fixed(r.min(), 2),
                                                                      doc.fixed(r.max(), 2))])
    return [Heading("Training ÷ inference, per precision", 3), doc.table(
        ["precision", "pairs", "median", "range"], body, caption="Total peak of a training step ÷ that of the "
        "inference step with every other field equal (both in the same precision):")]
