"""The attention study's report section: a GPT's memory against sequence length, and the Megatron-LM formula.

Read from the per-cell medians (summary.csv) of a `gpt` study that varies `seq_len`:
- per-layer activation bytes: the slope of a cell's activation bytes over depth (cells that differ only in
  depth), so what the embeddings, the head and the loss hold drops out;
- the fit per-layer bytes = α·s·b·h + β·a·s²·b (least squares, no intercept) with R², against the formula's
  α and β for the study's dtype and dropout (`megatron.coefficients`), and the crossing s* = α·h / (β·a);
- the local log-log slope of per-layer bytes against s (from 1 towards 2);
- inference's working memory (the ledger's step peak): its spread over depth, and a fit in s·b and a·s²·b;
- selective against full checkpointing: bytes, peak and step time per strategy, β per strategy, and the share
  of activation memory selective recomputation removes, measured and by the formula (paper's units and GPT-3's).
- fused attention (`attention = flash`, cells beside eager ones): per-layer bytes fitted per attention and dtype
  with a third term λ·a·s·b (the fused op's log-sum-exp), flash's β against 0 and eager's against the formula,
  and flash's step time against eager's (with the load); every other part reads the eager cells only.
One representative training cell is also run once under the ledger, here, to show its block's buffers term by
term beside the formula (`megatron.block_rows`): the one table not read from the rows, labelled so.
Every sentence that states a finding is computed from those numbers; where the data disagree it says "not so".
The transformer families list this finding (`attention`) and declare the fields it reads (seq_len, heads,
dropout).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ..report import document as doc
from ..report.context import Study
from ..report.document import Block, Figure, Heading, Paragraph, plot
from ..report.fit import itemsize as _itemsize
from ..report.fit import least_squares
from ..report.formats import LOADED_CORES
from ..run.results.fields import GRID_FIELDS
from . import megatron

NAME = "attention"
FIGURES = ("attention_loglog.png", "attention_inference.png", "attention_checkpoint.png")
FIGURES_MODULE = "memstudy.findings.attention_figures"
SIZE_FIELDS = ("seq_len", "batch_size", "heads", "width")
GPT3 = {"seq_len": 2048, "heads": 96, "width": 12288}  # the paper's GPT-3 175B: ~70% removed


def applies(study: Study) -> bool:
    """Cells of a family that lists this finding, over more than one sequence length."""
    cells = study.cells_declaring(NAME)
    return not cells.empty and "seq_len" in cells.columns and cells["seq_len"].nunique() > 1


def _group_keys(frame: pd.DataFrame, leave_out: tuple[str, ...]) -> list[str]:
    return [f for f in GRID_FIELDS if f in frame.columns and f not in leave_out and frame[f].notna().any()]


def per_layer(train: pd.DataFrame) -> pd.DataFrame:
    """One row per cell group that differs only in depth (≥ 2 depths): the activation bytes' slope over depth
    (per-layer bytes) and intercept (what the embeddings, head and loss hold), with the group's fields."""
    keys = _group_keys(train, ("depth",))
    rows = []
    for values, part in train.groupby(keys, sort=True, dropna=False):
        if part["depth"].nunique() < 2:
            continue
        fit = least_squares(part["activation_bytes"].astype(float).to_numpy(),
                            {"per_layer": part["depth"].astype(float).to_numpy(),
                             "outside": np.ones(len(part))})
        rows.append({**dict(zip(keys, values if isinstance(values, tuple) else (values,))),
                     "per_layer_bytes": fit["coef"].get("per_layer", float("nan")),
                     "outside_bytes": fit["coef"].get("outside", float("nan")), "depth_r2": fit["r2"]})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    for f in SIZE_FIELDS:
        frame[f] = frame[f].astype(int)
    frame["sbh"] = frame["seq_len"] * frame["batch_size"] * frame["width"]
    frame["as2b"] = frame["heads"] * frame["seq_len"] ** 2 * frame["batch_size"]
    return frame


def fit_formula(layers: pd.DataFrame) -> dict[str, Any]:
    """per-layer bytes = α·s·b·h + β·a·s²·b (no intercept), with R² and the largest residual.

    memstudy's layer norms also keep their statistics (`megatron.statistics_bytes`, per position): with one width
    they fold into α as 4·itemsize/h (`alpha_expected` adds them to the formula's α); with several widths they are
    fitted as their own term γ·s·b."""
    sb = (layers["seq_len"] * layers["batch_size"]).to_numpy(float)
    terms = {"alpha": layers["sbh"].to_numpy(float), "beta": layers["as2b"].to_numpy(float)}
    several_widths = layers["width"].nunique() > 1
    if several_widths:
        terms["gamma"] = sb
    fit = least_squares(layers["per_layer_bytes"].to_numpy(float), terms)
    coef = fit["coef"]
    alpha, beta, gamma = coef.get("alpha", float("nan")), coef.get("beta", 0.0), coef.get("gamma", 0.0)
    predicted = alpha * terms["alpha"] + beta * terms["beta"] + gamma * sb
    worst = float(np.max(np.abs(predicted - layers["per_layer_bytes"].to_numpy(float)))) if len(layers) else math.nan
    linear, quadratic, itemsize, _ = _formula(layers)
    statistics = megatron.STATISTICS_PER_POSITION * megatron.statistics_itemsize(itemsize)
    return {"alpha": alpha, "beta": beta, "gamma": gamma, "r2": fit["r2"], "n": fit["n"],
            "worst_residual_bytes": worst, "linear": linear, "quadratic": quadratic, "statistics": statistics,
            "width": None if several_widths else int(layers["width"].iloc[0]),
            "alpha_expected": linear if several_widths else linear + statistics / int(layers["width"].iloc[0])}


def local_slopes(layers: pd.DataFrame) -> list[tuple[int, int, float]]:
    """(s₁, s₂, d log bytes / d log s) between consecutive sequence lengths, the median over (batch, heads)."""
    lengths = sorted(layers["seq_len"].unique())
    out = []
    for s1, s2 in zip(lengths, lengths[1:]):
        slopes = []
        for _, part in layers.groupby(["batch_size", "heads", "width"]):
            y = part.set_index("seq_len")["per_layer_bytes"]
            if s1 in y.index and s2 in y.index and y[s1] > 0 and y[s2] > 0:
                slopes.append(math.log(y[s2] / y[s1]) / math.log(s2 / s1))
        if slopes:
            out.append((int(s1), int(s2), float(np.median(slopes))))
    return out


def _quadratic_shares(layers: pd.DataFrame) -> tuple[float, float]:
    """The fitted a·s²·b terms' share of per-layer bytes at the shortest and the longest s (median over groups)."""
    fit = fit_formula(layers)
    share = fit["beta"] * layers["as2b"] / layers["per_layer_bytes"]
    lengths = layers["seq_len"]
    return float(share[lengths == lengths.min()].median()), float(share[lengths == lengths.max()].median())


def _formula(frame: pd.DataFrame) -> tuple[int, int, int, float]:
    itemsize = _itemsize(frame["dtype"].iloc[0])
    dropout = float(frame["dropout"].iloc[0])
    linear, quadratic = megatron.coefficients(itemsize, dropout)
    return linear, quadratic, itemsize, dropout


def _sentence_fit(fit: dict[str, Any]) -> str:
    linear, quadratic, expected = fit["linear"], fit["quadratic"], fit["alpha_expected"]
    exact_a = abs(fit["alpha"] - expected) < 1e-6 * expected
    exact_b = abs(fit["beta"] - quadratic) < 1e-6 * max(quadratic, 1)
    if fit["width"] is not None:
        alpha_text = (f"α = {fit['alpha']:.4f} against the formula's {linear} plus the layer-norm statistics' "
                      f"{fit['statistics']}/h = {fit['statistics'] / fit['width']:.4f} (h = {fit['width']}: "
                      f"{megatron.STATISTICS_PER_POSITION} values of {fit['statistics'] // megatron.STATISTICS_PER_POSITION} "
                      f"B per position, which the formula does not count) = {expected:.4f}")
    else:
        alpha_text = (f"α = {fit['alpha']:.4f} (formula {linear}), γ = {fit['gamma']:.4f} B per position for the "
                      f"layer-norm statistics (expected {fit['statistics']})")
    verdict = ("so the ledger reproduces the formula's coefficients exactly" if exact_a and exact_b else
               "not so: the ledger's coefficients differ from the formula's")
    return (f"{alpha_text}; β = {fit['beta']:.4f} (formula {quadratic}); R² = {fit['r2']:.6f} over {fit['n']} "
            f"cell groups, largest residual {fit['worst_residual_bytes']:,.0f} B: {verdict}.")


def blocks(study: Study) -> list[Block]:
    """The attention section (its figures drawn by the PNG renderer)."""
    gpt = study.cells_declaring(NAME)
    fused = attention_of(gpt) == "flash"
    flash_train = gpt[gpt["mode"] == "train"] if fused.any() else None  # both attentions: the flash section
    gpt = gpt[~fused]
    train, inference = gpt[gpt["mode"] == "train"], gpt[gpt["mode"] == "inference"]
    out: list[Block] = [Heading("Attention: memory quadratic in sequence length"), Paragraph(
        "Korthikanti et al. 2022 (Megatron-LM) count what one transformer layer holds for backward as "
        "s·b·h·(34 + 5·a·s/h) bytes with 16-bit activations and 1-byte dropout masks (s sequence length, "
        "b batch, h width, a heads). The same terms with this study's activation bytes give per-layer bytes "
        "= α·s·b·h + β·a·s²·b; below, α and β are fitted to the ledger's per-layer bytes (the slope of "
        "activation bytes over depth, so the embeddings, head and loss drop out) and set beside the "
        "formula's.")]
    layers = per_layer(train) if not train.empty else pd.DataFrame()
    if layers.empty:
        return out + [Paragraph("Not enough cells: per-layer bytes need training cells at two depths or more.")]
    if flash_train is not None:
        return out + _body(layers, train, inference) + _flash_lines(flash_train)
    return out + _body(layers, train, inference)


def _body(layers: pd.DataFrame, train: pd.DataFrame, inference: pd.DataFrame) -> list[Block]:
    """The eager cells' sections: the law, the terms, inference, checkpointing."""
    out: list[Block] = []
    plain = layers[layers["checkpoint"] == "none"] if "checkpoint" in layers else layers
    # several dtypes (float32 and bfloat16): the law and the term table per dtype; the rest in the main one
    dtypes = sorted(train["dtype"].unique(), key=lambda d: (d != "float32", d))
    main = dtypes[0]
    if not plain.empty:
        out += _law_lines(plain, main)
        for dtype in dtypes:
            out += _term_lines(plain[plain["dtype"] == dtype], train[train["dtype"] == dtype])
    inference = inference[inference["dtype"] == main] if len(dtypes) > 1 else inference
    if not inference.empty:
        out += _inference_lines(inference)
    layers, train = layers[layers["dtype"] == main], train[train["dtype"] == main]
    if "checkpoint" in layers and layers["checkpoint"].nunique() > 1:
        if len(dtypes) > 1:
            out.append(Paragraph(f"The sections below read the {main} cells."))
        out += _checkpoint_lines(train, layers)
    return out


def attention_of(frame: pd.DataFrame) -> pd.Series:
    """Each row's attention strategy (rows from before the field, and families without it, are eager)."""
    if "attention" not in frame.columns:
        return pd.Series("eager", index=frame.index)
    return frame["attention"].fillna("eager").replace("", "eager")


LSE_BYTES = 4  # the fused op's log-sum-exp per query row and head: float32 (float64 in a float64 model)


def fit_flash(layers: pd.DataFrame) -> dict[str, Any]:
    """per-layer bytes = α·s·b·h + β·a·s²·b + λ·a·s·b (no intercept): λ the log-sum-exp the fused op keeps per query
    row and head, which is neither of the formula's two shapes; R² and the largest residual."""
    terms = {"alpha": layers["sbh"].to_numpy(float), "beta": layers["as2b"].to_numpy(float),
             "lse": (layers["heads"] * layers["seq_len"] * layers["batch_size"]).to_numpy(float)}
    fit = least_squares(layers["per_layer_bytes"].to_numpy(float), terms)
    coef = fit["coef"]
    predicted = sum(coef.get(k, 0.0) * v for k, v in terms.items())
    worst = float(np.max(np.abs(predicted - layers["per_layer_bytes"].to_numpy(float)))) if len(layers) else math.nan
    return {"alpha": coef.get("alpha", math.nan), "beta": coef.get("beta", math.nan),
            "lse": coef.get("lse", math.nan), "r2": fit["r2"], "n": fit["n"], "worst_residual_bytes": worst}


def flash_blocks(study: Study) -> list[Block]:
    """The fused-attention part alone (docs/attention.md's block of the flash study)."""
    gpt = study.cells_declaring(NAME)
    return _flash_lines(gpt[gpt["mode"] == "train"])


def _flash_lines(train: pd.DataFrame) -> list[Block]:
    """Fused attention beside eager: the fit per attention and dtype, and the step time."""
    train = train.assign(attention=attention_of(train))
    layers = per_layer(train)
    lines: list[Block] = [Heading("Fused attention: the s² term gone", 3), Paragraph(
        "`attention = flash` runs each block's attention core as one op (memstudy/autograd/ops/flash.py) that keeps "
        "q, k, v, its output and the softmax's log-sum-exp (one float32 per query row and head, b·a·s values) and "
        "recomputes the scores in backward, tile by tile of keys, as FlashAttention's backward does; its tiles' "
        "scratch is the op's workspace, a temporary. Per-layer bytes are fitted per attention and dtype to "
        "α·s·b·h + β·a·s²·b + λ·a·s·b (λ: the log-sum-exp's bytes per row and head).")]
    if layers.empty or layers["attention"].nunique() < 2:
        return lines + [Paragraph("Not enough cells: the comparison needs eager and flash training cells at two "
                                  "depths or more.")]
    body, verdicts = [], []
    for (dtype, dropout), part in layers.groupby(["dtype", "dropout"]):
        _, quadratic, itemsize, _ = _formula(part)
        fits = {a: fit_flash(part[part["attention"] == a]) for a in ("eager", "flash")
                if (part["attention"] == a).any()}
        for attention, fit in fits.items():
            expected = quadratic if attention == "eager" else 0
            body.append([f"{dtype}, dropout {dropout:g}", attention, doc.fixed(fit["alpha"], 4),
                         doc.fixed(fit["beta"], 4), expected, doc.fixed(fit["lse"], 4), doc.fixed(fit["r2"], 6),
                         doc.num(fit["worst_residual_bytes"], "grouped", 0)])
        if {"eager", "flash"} <= set(fits):
            eager, flash = fits["eager"], fits["flash"]
            gone = abs(flash["beta"]) < 1e-6 and flash["worst_residual_bytes"] < 0.5
            eager_formula = abs(eager["beta"] - quadratic) < 1e-6 * max(quadratic, 1)
            lse_ok = abs(flash["lse"] - LSE_BYTES) < 1e-6
            verdicts.append(
                f"{dtype}: eager's β = {eager['beta']:.4f} " + (f"(the formula's {quadratic}, its softmax output)"
                                                                 if eager_formula else f"(not the formula's {quadratic})")
                + f", flash's β = {flash['beta']:.4f}: " + ("the a·s²·b term is gone (β = 0, every cell fitted "
                                                            "exactly)" if gone else "not so: quadratic bytes remain")
                + f"; flash's λ = {flash['lse']:.4f} B per query row and head "
                + ("(its float32 log-sum-exp)" if lse_ok else f"(not the {LSE_BYTES} B of a float32 log-sum-exp)")
                + (", its α eager's (its output, laid out (b, s, a, d), is the output projection's input itself: "
                   "the heads merged are a view)" if abs(flash["alpha"] - eager["alpha"]) < 1e-6 else
                   f", its α {flash['alpha'] - eager['alpha']:+.4f} B per s·b·h from eager's"))
    lines.append(doc.table(["dtype", "attention", "α", "β", "β expected", "λ", "R²", "largest residual (B)"], body,
                           caption="Per-layer bytes (the slope over depth of the largest live activation bytes), "
                                   "fitted per attention and dtype (β expected: eager's is the formula's softmax "
                                   "term at this dropout, flash's 0):"))
    if verdicts:
        lines.append(Paragraph("; ".join(verdicts) + "."))
    lines += _flash_time_lines(train)
    return lines


def _flash_time_lines(train: pd.DataFrame) -> list[Block]:
    """Flash's step time and peak against eager's, cell by cell (the cells that differ only in attention)."""
    keys = _group_keys(train, ("attention",))
    body, ratios = [], []
    for values, part in train.groupby(keys, sort=True, dropna=False):
        by = part.set_index("attention")
        if not {"eager", "flash"} <= set(by.index):
            continue
        e, f = by.loc["eager"], by.loc["flash"]
        ratio = float(f["step_seconds"]) / float(e["step_seconds"])
        load = [c for c in (e["foreign_cores"], f["foreign_cores"]) if pd.notna(c)]
        ratios.append((str(e["dtype"]), ratio))
        if int(e["depth"]) == int(train["depth"].max()) and int(e["heads"]) == int(train["heads"].max()):
            body.append([e["dtype"], int(e["seq_len"]), doc.nbytes(e["peak_bytes"]), doc.nbytes(f["peak_bytes"]),
                         doc.fixed(float(f["peak_bytes"]) / float(e["peak_bytes"]), 3), doc.ms(e["step_seconds"]),
                         doc.ms(f["step_seconds"]), doc.fixed(ratio, 2), doc.load(max(load) if load else None)])
    if not ratios:
        return []
    depth, heads = int(train["depth"].max()), int(train["heads"].max())
    lines: list[Block] = [doc.table(
        ["dtype", "s", "eager peak", "flash peak", "peak ÷ eager", "eager step", "flash step", "time ÷ eager",
         "load (cores)"], body, caption=f"Depth {depth}, heads {heads}: the total peak and the median step of each "
                                        "attention; load = the cores other processes kept busy while the two were "
                                        f"timed (the larger), (loaded) above {LOADED_CORES:g}:")]
    parts, medians = [], []
    for dtype in sorted({d for d, _ in ratios}):
        mine = [r for d, r in ratios if d == dtype]
        medians.append(float(np.median(mine)))
        parts.append(f"{dtype} {medians[-1]:.2f}× (from {min(mine):.2f}× to {max(mine):.2f}×, {len(mine)} cells)")
    if max(medians) < 1:
        verdict = ("every median is below 1: here the fused op is faster too, though it computes the scores twice "
                   "(forward and backward); why is not measured here (the eager path writes and reads a·s² arrays "
                   "the fused op never makes)")
    elif min(medians) > 1:
        verdict = ("every median is above 1: here the fused op costs time, computing the scores twice (forward and "
                   "backward) in Python-driven tiles, where FlashAttention on a GPU saves both memory and time")
    else:
        verdict = "the medians lie on both sides of 1: neither is faster in every dtype here"
    load = train["foreign_cores"].dropna()
    loaded = (f" Some steps were timed under load (up to {load.max():.2f} foreign cores; the table marks them), so "
              "the ratios are rough." if len(load) and load.max() > LOADED_CORES else "")
    lines.append(Paragraph("Flash's step time against eager's, median over the cells that differ only in attention: "
                           + "; ".join(parts) + f"; {verdict}." + loaded))
    return lines


def _law_lines(plain: pd.DataFrame, main: str | None = None) -> list[Block]:
    """The fit per dtype and dropout; the slopes and the figure over the `main` dtype's cells (default: all)."""
    lines: list[Block] = [Heading("The law and the formula", 3)]
    for (dtype, dropout), part in plain.groupby(["dtype", "dropout"]):
        linear, quadratic, itemsize, _ = _formula(part)
        fit = fit_formula(part)
        coefficients = ("the paper's own 34 and 5" if (linear, quadratic) == (34, 5) else
                        f"the paper's 34 and 5 become {linear} and {quadratic}")
        lines += [Paragraph(f"**{dtype}, dropout {dropout:g}** (activations {itemsize} B, masks 1 B; "
                            f"{coefficients}): " + _sentence_fit(fit))]
        crossings = []
        for (heads, width), _ in part.groupby(["heads", "width"]):
            if fit["beta"] > 0:
                crossing = fit["alpha"] * width / (fit["beta"] * heads)
                crossings.append(f"a = {heads}, h = {width}: s* = α·h/(β·a) = {crossing:.0f} (formula's "
                                 f"{linear}·h/({quadratic}·a) = {linear * width / (quadratic * heads):.0f})")
        if crossings:
            lines += [Paragraph("The quadratic term overtakes the linear one at " + "; ".join(crossings) + ".")]
    if main is not None and plain["dtype"].nunique() > 1:
        plain = plain[plain["dtype"] == main]
        lines.append(Paragraph(f"The slopes and the figure read the {main} cells."))
    slopes = local_slopes(plain)
    if slopes:
        first, last = slopes[0][2], slopes[-1][2]
        rising = all(later[2] >= earlier[2] - 1e-9 for earlier, later in zip(slopes, slopes[1:]))
        shares = _quadratic_shares(plain)
        lines += [Paragraph("Local log-log slope of per-layer bytes against s (median over batch and heads): "
                  + ", ".join(f"{s1}→{s2}: {k:.2f}" for s1, s2, k in slopes) + ". From s = "
                  f"{slopes[0][0]} to {slopes[-1][1]} it " + ("rises at every step" if rising else
                                                              "does not rise at every step (not so)")
                  + f", from {first:.2f} to {last:.2f}: the slope of α·s + β·s² is 1 + the quadratic term's share, "
                  f"and the a·s²·b terms are {100 * shares[0]:.0f}% of a layer's bytes at s = {slopes[0][0]} and "
                  f"{100 * shares[1]:.0f}% at s = {slopes[-1][1]} (median over batch and heads). A slope of 1 "
                  "needs s ≪ s*, one of 2 needs s ≫ s*; this range spans s* and shows the turn.")]
    lines.append(Figure("attention_loglog.png", "per-layer activation bytes against sequence length",
                        plot(FIGURES_MODULE, "loglog", plain)))
    return lines


def _term_lines(plain: pd.DataFrame, train: pd.DataFrame) -> list[Block]:
    """One representative cell, run once here under the ledger: its block's buffers term by term."""
    from ..measure.workload import Workload
    from ..nn.models.registry import normalize

    median_s = sorted(plain["seq_len"].unique())[len(plain["seq_len"].unique()) // 2]
    candidates = train[(train["seq_len"] == median_s) & (train["checkpoint"] == "none")]
    if candidates.empty:
        return []
    row = candidates.sort_values(["depth", "batch_size", "heads"]).iloc[-1]
    fields = {f: row[f] for f in ("seq_len", "batch_size", "heads", "width", "depth", "vocab", "dtype", "dropout",
                                  "bias", "seed", "optimizer")}
    config = normalize({"model": row["model"], **{k: (v.item() if hasattr(v, "item") else v) for k, v in fields.items()},
                        "mode": "train", "checkpoint": "none"})
    account = Workload(config).ledger_step()
    s, b, a, h = config["seq_len"], config["batch_size"], config["heads"], config["width"]
    itemsize, dropout = _itemsize(config["dtype"]), config["dropout"]
    body, total_ledger, total_formula = [], 0, 0
    for r in megatron.block_rows(account, 0, s, b, h, a, itemsize, dropout):
        per = ""
        if r.terms:
            t = megatron.TERM[r.terms[0]]
            per = (f"{sum(megatron.TERM[k].elements for k in r.terms)}·{'a·s²·b' if t.quadratic else 's·b·h'}"
                   f"·{1 if t.mask else itemsize}")
            total_ledger += r.ledger_bytes
            total_formula += r.formula_bytes
        body.append([r.label, per, doc.count(r.ledger_bytes), doc.count(r.formula_bytes),
                     "" if r.formula_bytes is None else ("yes" if r.ledger_bytes == r.formula_bytes else "NO")])
    body.append([doc.strong("block total (formula's terms)"), "", doc.count(total_ledger), doc.count(total_formula),
                 "yes" if total_ledger == total_formula else "NO"])
    outside = megatron.outside_rows(account, config["depth"])
    outside_lines = [f"{r.label}: {r.ledger_bytes:,} B" for r in outside if r.ledger_bytes]
    agree = int(account.activation_bytes) == int(row["activation_bytes"])
    return [Heading(f"The formula term by term ({config['dtype']})", 3),
            doc.table(["term", "per layer (elements × bytes)", "ledger bytes", "formula bytes", "equal"], body, caption=
                      f"One cell (s = {s}, b = {b}, a = {a}, h = {h}, depth {config['depth']}, {config['dtype']}, "
                      f"dropout {dropout:g}) run once more, here, under the ledger; its activation bytes "
                      f"({account.activation_bytes:,} B) " + ("equal" if agree else "do NOT equal")
                      + f" the sweep's row ({int(row['activation_bytes']):,} B). Block 0's buffers held after "
                      "forward, sorted into the paper's terms by the op that made each and the op that saved it "
                      f"(`{megatron.__name__}`):"),
            Paragraph("Q, K and V are one buffer: c_attn's output, of which q, k and v are views, held once. What the "
                      "formula does not count is listed apart: per block the layer-norm statistics above; outside "
                      "the blocks " + "; ".join(outside_lines) + ".")]


def _inference_lines(inference: pd.DataFrame) -> list[Block]:
    lines: list[Block] = [Heading("Inference: one layer's scores at a time", 3)]
    keys = _group_keys(inference, ("depth",))
    spreads = []
    for _, part in inference.groupby(keys, dropna=False):
        if part["depth"].nunique() > 1:
            peaks = part["step_peak_bytes"].astype(float)
            spreads.append((peaks.max() - peaks.min()) / peaks.max())
    if spreads:
        worst = max(spreads)
        lines += [Paragraph(f"Working memory (the ledger's step peak) across depths, cells equal otherwise: at most "
                            f"{100 * worst:.2f}% apart over {len(spreads)} groups: "
                            + ("flat in depth: each block's intermediates are freed before the next block runs."
                               if worst < 0.01 else "not so: it changes with depth."))]
    deepest = inference[inference["depth"] == inference["depth"].max()]
    s = deepest["seq_len"].to_numpy(float)
    b = deepest["batch_size"].to_numpy(float)
    a = deepest["heads"].to_numpy(float)
    h = deepest["width"].to_numpy(float)
    fit = least_squares(deepest["step_peak_bytes"].to_numpy(float),
                        {"const": np.ones(len(s)), "sb": s * b, "sbh": s * b * h, "as2b": a * s * s * b})
    itemsize = _itemsize(deepest["dtype"].iloc[0])
    q = fit["coef"].get("as2b", float("nan"))
    lines += [Paragraph(f"Fitted step peak = c + p·s·b(·h) + q·a·s²·b over {fit['n']} cells (R² = {fit['r2']:.6f}): "
                        f"q = {q:.3f} B per score element = {q / itemsize:.2f} × {itemsize} B: "
                        + (f"about {round(q / itemsize)} score tensors of one layer are alive at the peak (an op's "
                           "input and its output), quadratic in s." if q > 0.5 * itemsize else
                           "not so: no quadratic term stands out.")),
              Figure("attention_inference.png", "inference step peak against sequence length, per depth",
                     plot(FIGURES_MODULE, "inference", inference))]
    return lines


def _checkpoint_lines(train: pd.DataFrame, layers: pd.DataFrame) -> list[Block]:
    strategies = sorted(layers["checkpoint"].unique(), key=lambda x: (x != "none", x != "selective", x))
    linear, quadratic, itemsize, dropout = _formula(layers)
    lines: list[Block] = [Heading("Selective recomputation against full checkpointing", 3), Paragraph(
        "`selective` (the paper's remedy) runs each block's attention core (q @ kᵀ, scale, mask, softmax, "
        "dropout, @ v) as one checkpoint that keeps q, k and v and recomputes the rest in backward; `sqrt` and "
        "`every:K` recompute whole segments of blocks.")]
    fits = {}
    for strategy in strategies:
        part = layers[layers["checkpoint"] == strategy]
        fits[strategy] = fit_formula(part)
    body = [[st, doc.fixed(f["alpha"], 4), doc.fixed(f["beta"], 4), doc.fixed(f["r2"], 6),
             doc.num(f["worst_residual_bytes"], "grouped", 0)] for st, f in fits.items()]
    expected = next(iter(fits.values()))["alpha_expected"]
    lines.append(doc.table(["strategy", "α", "β", "R²", "largest residual (B)"], body, caption=
                           "Per-layer bytes (the slope over depth of the largest live activation bytes), fitted per "
                           f"strategy (formula without checkpointing: α = {linear} (+ statistics: {expected:.4f}), "
                           f"β = {quadratic}):"))
    if "selective" in fits:
        sel = layers[layers["checkpoint"] == "selective"]
        statistics = megatron.STATISTICS_PER_POSITION * megatron.statistics_itemsize(itemsize) * sel["seq_len"] \
            * sel["batch_size"]
        matches = (sel["per_layer_bytes"] - statistics).round(6) == linear * sel["sbh"]
        lines.append(Paragraph(
            f"Selective: per-layer bytes equal {linear}·s·b·h (plus the layer-norm statistics, "
            f"{megatron.STATISTICS_PER_POSITION}·s·b·{megatron.statistics_itemsize(itemsize)} B) "
            f"in {int(matches.sum())} of {len(sel)} cell "
            "groups: " + ("the quadratic term is gone exactly (β = 0); the recompute holds one block's scores "
                          "only while that block's backward runs." if bool(matches.all()) else
                          "not so: some quadratic bytes remain.")))
    # the table: the deepest cells, the largest batch × heads, every sequence length
    deepest = train[train["depth"] == train["depth"].max()]
    pick = deepest.assign(ba=deepest["batch_size"].astype(int) * deepest["heads"].astype(int))
    pick = pick[pick["ba"] == pick["ba"].max()]
    b, a = int(pick["batch_size"].iloc[0]), int(pick["heads"].iloc[0])
    pick = pick[(pick["batch_size"] == b) & (pick["heads"] == a)]
    none = pick[pick["checkpoint"] == "none"].set_index("seq_len")
    body = []
    for s in sorted(pick["seq_len"].unique()):
        for strategy in strategies:
            r = pick[(pick["seq_len"] == s) & (pick["checkpoint"] == strategy)]
            if r.empty:
                continue
            r = r.iloc[0]
            ref = none.loc[s] if s in none.index else None
            act_ratio = float(r["activation_bytes"]) / float(ref["activation_bytes"]) if ref is not None else math.nan
            time_ratio = float(r["step_seconds"]) / float(ref["step_seconds"]) if ref is not None else math.nan
            load = [c for c in (r["foreign_cores"], None if ref is None else ref["foreign_cores"]) if pd.notna(c)]
            body.append([int(s), strategy, doc.nbytes(r["activation_bytes"]), doc.fixed(act_ratio, 3),
                         doc.nbytes(r["peak_bytes"]), doc.ms(r["step_seconds"]), doc.fixed(time_ratio, 2),
                         doc.load(max(load) if load else None),
                         int(r["recomputed_ops"]) if pd.notna(r["recomputed_ops"]) else 0])
    h = int(pick["width"].iloc[0])
    depth = int(pick["depth"].iloc[0])
    lines.append(doc.table(["s", "strategy", "activation bytes", "÷ none", "total peak", "step time", "time ÷ none",
                            "load (cores)", "ops recomputed"], body, caption=
                           f"Depth {depth}, batch {b}, heads {a}, width {h} (the largest batch × heads): activation "
                           "bytes are the ledger's largest live total (the recompute's transient included), time the "
                           "median step; load = the cores other processes kept busy while the step and its `none` "
                           f"reference were timed (the larger), (loaded) above {LOADED_CORES:g}:"))
    lines += _time_lines(pick, strategies)
    lines += _fraction_lines(layers, linear, quadratic)
    lines.append(Figure("attention_checkpoint.png", "activation bytes and step time per strategy",
                        plot(FIGURES_MODULE, "checkpoint", pick, strategies,
                             title=f"depth {depth}, batch {b}, heads {a}, width {h}")))
    return lines


def _time_lines(pick: pd.DataFrame, strategies: list[str]) -> list[Block]:
    """Each strategy's step time against no checkpointing over the table's lengths: median and range."""
    none = pick[pick["checkpoint"] == "none"].set_index("seq_len")["step_seconds"].astype(float)
    ratios = {}
    for strategy in strategies:
        if strategy == "none":
            continue
        mine = pick[pick["checkpoint"] == strategy].set_index("seq_len")["step_seconds"].astype(float)
        r = (mine / none).dropna()
        if len(r):
            ratios[strategy] = r
    if not ratios:
        return []
    parts = [f"`{k}` {v.median():.2f}× (from {v.min():.2f}× to {v.max():.2f}×)" for k, v in ratios.items()]
    line = "Step time against no checkpointing, median over the table's lengths: " + "; ".join(parts) + "."
    if "selective" in ratios and len(ratios) > 1:
        full = min((v.median(), k) for k, v in ratios.items() if k != "selective")
        cheaper = ratios["selective"].median() < full[0]
        line += (f" Selective recomputation's median is {'below' if cheaper else 'not below (not so)'} that of "
                 f"`{full[1]}`, the cheapest full checkpointing")
        spread = max(v.max() / v.min() for v in ratios.values())
        line += (f"; single steps on this shared 2-core machine vary a lot (a strategy's ratio spans up to "
                 f"{spread:.1f}× across lengths), so the time figures are rough." if spread > 1.5 else ".")
    load = pick["foreign_cores"].dropna()
    if len(load) and load.max() > LOADED_CORES:
        line += (f" Some of these steps were timed under load (other processes kept up to {load.max():.2f} cores "
                 "busy; the table marks them).")
    return [Paragraph(line)]


def _fraction_lines(layers: pd.DataFrame, linear: int, quadratic: int) -> list[Block]:
    """The share of per-layer activation memory selective recomputation removes: measured, and the formula's."""
    if "selective" not in set(layers["checkpoint"]):
        return []
    keys = [k for k in ("seq_len", "batch_size", "heads", "width") if k in layers]
    both = layers[layers["checkpoint"] == "none"].merge(layers[layers["checkpoint"] == "selective"], on=keys,
                                                         suffixes=("", "_sel"))
    body = []
    itemsize = _itemsize(layers["dtype"].iloc[0])
    for _, r in both.sort_values(keys).iterrows():
        statistics = megatron.statistics_bytes(int(r["seq_len"]), int(r["batch_size"]), itemsize)
        measured = 1 - (r["per_layer_bytes_sel"] - statistics) / (r["per_layer_bytes"] - statistics)
        this_dtype = quadratic * r["heads"] * r["seq_len"] / r["width"]
        this_dtype /= linear + this_dtype
        paper = megatron.fraction_removed(int(r["seq_len"]), int(r["heads"]), int(r["width"]))
        body.append([int(r["seq_len"]), int(r["batch_size"]), int(r["heads"]), doc.percent(measured, False),
                     doc.percent(this_dtype, False), doc.percent(paper, False)])
    agree = all(row[3].text == row[4].text for row in body)
    gpt3 = megatron.fraction_removed(GPT3["seq_len"], GPT3["heads"], GPT3["width"])
    return [doc.table(["s", "batch", "heads", "measured", "formula, this dtype", "formula, paper's units"], body,
                      caption="Share of per-layer activation memory selective recomputation removes (the formula's "
                      "terms: the layer-norm statistics taken out of the measured bytes): measured, by the formula "
                      f"for this dtype ({quadratic}as/h ÷ ({linear} + {quadratic}as/h)) and in the paper's units "
                      "(5as/h ÷ (34 + 5as/h)):"),
            Paragraph(("The measured share equals the formula's for this dtype in every row." if agree else
                       "Not so: the measured share differs from the formula's in some rows.")
                      + f" For GPT-3 (s = {GPT3['seq_len']}, a = {GPT3['heads']}, h = {GPT3['width']}) the formula "
                      f"gives 5as/h = {5 * GPT3['heads'] * GPT3['seq_len'] / GPT3['width']:.0f} and "
                      f"{100 * gpt3:.1f}% removed, the paper's \"about 70%\".")]
