"""The CNN finding: where an image model keeps its memory (the convolutional families list it, `cnn`).

It reads the per-cell medians (the summary) and `layers.csv` (the bytes each op saved per layer, per cell and
repeat, written by the sweep), and `timeline.csv` for the column workspaces; it reads the fields the CNN family
declares (image_size, in_channels, classes, batch_norm, conv_save). Every sentence that states a finding is
computed from them and says "not so" when the data says so; expected values (k² = 9, an exponent of 2) are
named as expectations.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..report import document as doc
from ..report.context import Study
from ..report.document import Block, Bullets, Figure, Heading, Paragraph, plot
from ..report.fit import describe_fixed as _describe_fixed
from ..report.fit import least_squares
from ..report.formats import LOADED_CORES, bytes_text

NAME = "cnn"
FIGURES = ("cnn_activation_law.png", "cnn_blocks.png", "cnn_conv_algo.png")
FIGURES_MODULE = "memstudy.findings.cnn_figures"
KERNEL_POSITIONS = 9  # k² of the family's 3×3 convolutions
EXPONENT_TOLERANCE = 0.1  # |fitted − expected| within which an exponent counts as the expected one
# the fields a CNN study's cells differ in besides the ones each part of the section compares
SHAPE_FIELDS = ("depth", "width", "image_size", "in_channels", "classes", "batch_size", "batch_norm", "dtype",
                "optimizer", "policy", "seed")


def _int(value: Any) -> int:
    return int(float(value))


def _per_cell(layers: pd.DataFrame, value: str) -> pd.DataFrame:
    """Median over repeats of `value` per (cell, layer, op)."""
    return layers.groupby(["cell", "layer", "op"], sort=False)[value].median().reset_index()


def _pairs(frame: pd.DataFrame, field: str, a: Any, b: Any, columns: list[str], keys: tuple[str, ...]) -> pd.DataFrame:
    """Cells with `field` = a joined to the cell with `field` = b and every field in `keys` equal."""
    keys = [k for k in keys if k in frame.columns and k != field]
    left = frame[frame[field] == a][keys + columns]
    right = frame[frame[field] == b][keys + columns].rename(columns={c: f"{c}_b" for c in columns})
    return left.merge(right, on=keys, how="inner")


def _layer_order(layer: str) -> tuple:
    return (1, 0) if layer == "loss" else (0, _int(layer))


def applies(study: Study) -> bool:
    """Cells of a family that lists this finding."""
    return not study.cells_declaring(NAME).empty


def blocks(study: Study) -> list[Block]:
    cells = study.cells_declaring(NAME).copy()
    if cells.empty:
        return []
    for column in ("image_size", "batch_size", "depth", "width", "in_channels", "classes"):
        cells[column] = pd.to_numeric(cells[column], errors="coerce")
    cells["batch_norm"] = cells["batch_norm"].astype(str).str.lower()
    algo_lines = _algo_part(cells)
    if "conv_algo" in cells.columns and (cells["conv_algo"] == "per_example").any():
        # every other part compares memory at one algorithm: per_example (the others keep the same activations)
        cells = cells[cells["conv_algo"].isin(["per_example", "", None]) | cells["conv_algo"].isna()]
    layers = study.layers
    lines: list[Block] = [Heading("Where a CNN keeps its memory"), Paragraph(
        "Block i of the CNN is a 3×3 convolution to width·2^i channels, batch norm, ReLU and a 2×2 max-pool: "
        "each block has twice the channels and a quarter of the positions of the one before. Bytes below are "
        "the ledger's; `conv_save = input` keeps each convolution's input (PyTorch's choice) and rebuilds its "
        "im2col columns in backward, `columns` keeps the columns.")]
    train = cells[cells["mode"] == "train"]
    plain = train[train["checkpoint"] == "none"]
    lines += _law_part(plain, layers)
    lines += _blocks_part(plain, layers, study.layer_names)
    lines += _modes_part(cells)
    lines += _columns_part(plain, layers, study.out, study.timeline_cell)
    lines += _checkpoint_part(train, layers)
    return lines + algo_lines


# --- conv_algo: workspace against time -------------------------------------------------------------------------

ALGO_KEYS = SHAPE_FIELDS + ("conv_save", "checkpoint", "mode", "conv_workspace")


def _algo_part(cells: pd.DataFrame) -> list[Block]:
    """Each conv_algo against per_example on the same configuration: the convolutions' workspace (the ledger's
    most live conv2d.* bytes), the step's peak and its time. Only when the grid runs more than one algorithm."""
    if "conv_algo" not in cells.columns or cells["conv_algo"].nunique() < 2 or "conv_workspace_bytes" not in cells:
        return []
    lines: list[Block] = [Heading("Convolution algorithm: workspace against time", 3), Paragraph(
        "`conv_algo = per_example` makes the batch's im2col columns and one GEMM per example; `batched` lays a block "
        "of examples (here the whole batch unless `auto` chose fewer under `conv_workspace`) out as one matrix and "
        "makes one GEMM per block, holding the block's product beside its columns. Workspace is the most bytes of the "
        "convolutions' workspaces alive at once (ledger); time is the cell's median step (`step_seconds`, measured "
        "with other processes' load beside it).")]
    columns = ["conv_workspace_bytes", "peak_bytes", "step_seconds", "foreign_cores"]
    body, figure_pairs = [], []
    for algo in sorted(a for a in cells["conv_algo"].dropna().unique() if a != "per_example"):
        pairs = _pairs(cells, "conv_algo", algo, "per_example", columns, ALGO_KEYS).dropna(subset=columns[:3])
        if pairs.empty:
            continue
        ws = pairs["conv_workspace_bytes"].astype(float) / pairs["conv_workspace_bytes_b"].astype(float)
        peak = pairs["peak_bytes"].astype(float) / pairs["peak_bytes_b"].astype(float)
        time_ratio = pairs["step_seconds"].astype(float) / pairs["step_seconds_b"].astype(float)
        load = pd.concat([pairs["foreign_cores"], pairs["foreign_cores_b"]]).astype(float)
        faster = int((time_ratio < 1).sum())
        body.append([f"`{algo}`", len(pairs), doc.compound("{}–{}", doc.ratio(ws.min()), doc.ratio(ws.max())),
                     doc.compound("{}–{}", doc.ratio(peak.min()), doc.ratio(peak.max())),
                     doc.compound("{} ({}–{})", doc.ratio(time_ratio.median()), doc.ratio(time_ratio.min()),
                                  doc.ratio(time_ratio.max())), f"{faster} of {len(pairs)}",
                     doc.load(load.median())])
        figure_pairs.append((algo, pairs))
    if not body:
        return lines + [Paragraph("The grid runs no algorithm beside `per_example` on the same configuration.")]
    lines += [doc.table(["conv_algo", "pairs", "workspace ÷ per_example", "peak ÷ per_example",
                         "step time ÷ per_example, median (range)", "faster", "load (cores, median)"], body)]
    algo, pairs = figure_pairs[0]
    ratio = (pairs["step_seconds"].astype(float) / pairs["step_seconds_b"].astype(float)).median()
    more = int((pairs["conv_workspace_bytes"].astype(float) > pairs["conv_workspace_bytes_b"].astype(float)).sum())
    lines += [Paragraph(
        f"`{algo}` holds more convolution workspace than `per_example` in {more} of {len(pairs)} pairs and its step "
        f"takes {ratio:.3f}× per_example's (median): " + ("more workspace buys time, so." if ratio < 1 and more
                                                          else "not so: the larger workspace does not buy time here.")
        + " The trade-off for one configuration per image size (training, no checkpointing, `conv_save = input`, "
        "the largest batch and depth):")]
    train = cells[(cells["mode"] == "train") & (cells["checkpoint"] == "none") & (cells["conv_save"] == "input")]
    if not train.empty:
        pick = train[(train["batch_size"] == train["batch_size"].max()) & (train["depth"] == train["depth"].max())]
        algos = sorted(pick["conv_algo"].dropna().unique(), key=lambda a: a != "per_example")
        rows = []
        for image, part in pick.groupby("image_size", sort=True):
            row: list[Any] = [int(image)]
            for a in algos:
                one = part[part["conv_algo"] == a]
                row += ([doc.nbytes(one["conv_workspace_bytes"].iloc[0]), doc.ms(one["step_seconds"].iloc[0])]
                        if len(one) else ["", ""])
            rows.append(row)
        header = ["image"] + [h for a in algos for h in (f"`{a}` workspace", f"`{a}` step")]
        lines += [doc.table(header, rows)]
    plain = cells[(cells["mode"] == "train") & (cells["checkpoint"] == "none")]
    lines.append(Figure("cnn_conv_algo.png", "convolution workspace against step time, one marker per cell",
                        plot(FIGURES_MODULE, "conv_algo", plain,
                             title="Training step time vs convolution workspace (no checkpointing)")))
    return lines


# --- activation bytes against image size and batch -------------------------------------------------------

def _law_part(plain: pd.DataFrame, layers: pd.DataFrame | None) -> list[Block]:
    lines: list[Block] = [Heading("Activation bytes against image size and batch", 3)]
    data = plain.dropna(subset=["activation_bytes"])
    data = data[data["activation_bytes"] > 0]
    split = [f for f in ("depth", "conv_save", "batch_norm", "width", "dtype") if data[f].nunique() > 1]
    fits = []
    for key, part in (data.groupby(split, sort=True) if split else [((), data)]):
        if part["image_size"].nunique() < 2 or part["batch_size"].nunique() < 2:
            continue
        y = np.log(part["activation_bytes"].astype(float).to_numpy())
        fit = least_squares(y, {"image": np.log(part["image_size"].to_numpy(float)),
                                "batch": np.log(part["batch_size"].to_numpy(float)), "const": np.ones(len(part))})
        group = dict(zip(split, key if isinstance(key, tuple) else (key,)))
        fits.append((group, len(part), fit["coef"].get("image", float("nan")), fit["coef"].get("batch", float("nan")),
                     fit["r2"]))
    if not fits:
        return lines + [Paragraph("The grid needs two image sizes and two batch sizes (training, no checkpointing) "
                                  "for this fit; it has fewer.")]
    lines += [Paragraph("Least squares on logarithms, log(activation bytes) = p·log(image_size) + q·log(batch) + c, "
                        "per group of training cells without checkpointing; activations ∝ image_size²·batch would "
                        "give p = 2 and q = 1.")]
    body = [[_describe_fixed(g) or "all", n, doc.fixed(p, 3), doc.fixed(q, 3), doc.ratio(r2)]
            for g, n, p, q, r2 in fits]
    lines += [doc.table(["group", "cells", "p (image_size)", "q (batch)", "R² (log)"], body)]
    ps, qs, r2s = [f[2] for f in fits], [f[3] for f in fits], [f[4] for f in fits]
    p_ok = all(abs(p - 2) <= EXPONENT_TOLERANCE for p in ps)
    q_ok = all(abs(q - 1) <= EXPONENT_TOLERANCE for q in qs)
    text = (f"Image-size exponent {min(ps):.3f}–{max(ps):.3f} over {len(fits)} groups, batch exponent "
            f"{min(qs):.3f}–{max(qs):.3f}, R² at least {min(r2s):.4f}. Activation bytes ∝ image_size²: "
            + ("so (every p within ±0.1 of 2)." if p_ok else "not so (some p is further than 0.1 from 2).")
            + " ∝ batch: " + ("so (every q within ±0.1 of 1)." if q_ok else "not so (some q is further than 0.1 "
                                                                         "from 1)."))
    if layers is not None:
        low = _low_resolution_share(data, layers)
        if low is not None:
            image, share_small, image_large, share_large = low
            text += (f" What does not grow with the image (the classifier's input and the loss's probabilities, "
                     f"which grow with the batch only) is {100 * share_small:.2g}% of the activation bytes at "
                     f"image {image} and {100 * share_large:.2g}% at image {image_large} (medians over cells).")
    lines += [Paragraph(text)]
    best = min(fits, key=lambda f: (f[0].get("conv_save", "input") != "input", str(f[0])))
    part = data
    for k, v in best[0].items():
        part = part[part[k] == v]
    lines.append(Figure("cnn_activation_law.png", "activation bytes vs image size, one line per batch",
                        plot(FIGURES_MODULE, "activation_law", part, best[2], best[3],
                             title=f"Training activation bytes vs image size ({_describe_fixed(best[0]) or 'all'})")))
    return lines


def _low_resolution_share(data: pd.DataFrame, layers: pd.DataFrame) -> tuple | None:
    """(smallest image, share of layers `depth` and `loss` in its cells' activation bytes, largest image, share)."""
    per = _per_cell(layers, "activation_bytes")
    per = per.merge(data[["cell", "depth", "image_size"]], on="cell")
    if per.empty:
        return None
    per["head"] = [(layer == "loss" or _int(layer) == depth) for layer, depth in zip(per["layer"], per["depth"])]
    totals = per.groupby("cell").apply(lambda g: pd.Series({
        "share": g.loc[g["head"], "activation_bytes"].sum() / max(g["activation_bytes"].sum(), 1),
        "image_size": g["image_size"].iloc[0]}), include_groups=False)
    small, large = totals["image_size"].min(), totals["image_size"].max()
    return (int(small), float(totals[totals["image_size"] == small]["share"].median()), int(large),
            float(totals[totals["image_size"] == large]["share"].median()))


# --- per block -----------------------------------------------------------------------------------------

def _blocks_part(plain: pd.DataFrame, layers: pd.DataFrame | None, names: Any = None) -> list[Block]:
    """`names(cell)`: the family's name of each layer index of a cell (`Study.layer_names`)."""
    lines: list[Block] = [Heading("Which block holds the memory", 3)]
    if layers is None:
        return lines + [Paragraph("(No layers.csv in this directory: the per-block breakdown needs a sweep that "
                                  "writes it.)")]
    per = _per_cell(layers, "activation_bytes").groupby(["cell", "layer"], sort=False)["activation_bytes"].sum()
    per = per.reset_index().merge(plain[["cell", "depth", "image_size", "batch_size", "conv_save"]], on="cell")
    if per.empty:
        return lines + [Paragraph("No training cell without checkpointing has per-layer figures.")]
    totals = per.groupby("cell")["activation_bytes"].sum()
    first = per[per["layer"] == "0"].set_index("cell")["activation_bytes"]
    shares = (first / totals).dropna()
    largest = per.loc[per["layer"] != "loss"].copy()
    largest["order"] = [_layer_order(layer) for layer in largest["layer"]]
    top = largest.sort_values("activation_bytes", ascending=False).groupby("cell").head(1)
    first_largest = int((top["layer"] == "0").sum())
    info = plain.set_index("cell")
    lines += [Paragraph("Each layer's bytes are those its ops saved first (the ledger's `by_layer`): a block's input "
                        "is counted in the block whose convolution keeps it; layer `depth` is the head (global pool "
                        "and classifier), `loss` the softmax probabilities. Block 0's convolution keeps the network "
                        "input itself under `conv_save = input`, which the ledger counts as input, not here.")]
    items = []
    for conv_save in sorted(info.loc[shares.index, "conv_save"].unique()):
        subset = shares[info.loc[shares.index, "conv_save"] == conv_save]
        items.append(f"`{conv_save}`: block 0 holds {subset.min():.1%}–{subset.max():.1%} of the activation bytes "
                     f"(median {subset.median():.1%}) over {len(subset)} cells.")
    items.append(f"Block 0 holds more than any other layer in {first_largest} of {len(top)} cells: "
                 + ("so in every cell." if first_largest == len(top) else "not so in every cell."))
    lines.append(Bullets(tuple(items)))
    # one next-block / block ratio, the VGG pattern (channels ×2, positions ÷4: about half)
    ratios = []
    for cell, group in per.groupby("cell"):
        by_layer = dict(zip(group["layer"], group["activation_bytes"]))
        if "0" in by_layer and "1" in by_layer and by_layer["0"] > 0:
            ratios.append(by_layer["1"] / by_layer["0"])
    if ratios:
        lines += [Paragraph(f"Block 1 holds {min(ratios):.3f}–{max(ratios):.3f}× what block 0 holds (median "
                            f"{float(np.median(ratios)):.3f}×, {len(ratios)} cells).")]
    pick = _representative_cell(plain)
    if pick is not None:
        sample = per[per["cell"].isin(pick["cell"])]
        layers_order = sorted(sample["layer"].unique(), key=_layer_order)
        named = names(pick["cell"].iloc[0]) if names is not None else {}
        body = []
        for layer in layers_order:
            row: list[Any] = [f"{layer}: {named[layer]}" if layer in named else layer]
            for _, cell in pick.iterrows():
                value = sample[(sample["cell"] == cell["cell"]) & (sample["layer"] == layer)]["activation_bytes"].sum()
                total = totals.get(cell["cell"], float("nan"))
                row.append(doc.compound("{} ({})", doc.nbytes(value), doc.percent(value / total, False, 1)))
            body.append(row)
        where = (f"depth {_int(pick['depth'].iloc[0])}, image {_int(pick['image_size'].iloc[0])}, "
                 f"batch {_int(pick['batch_size'].iloc[0])}")
        lines += [doc.table(["layer"] + [f"`{c}`" for c in pick["conv_save"]], body,
                            caption=f"Per layer at {where} (share of the step's activation bytes):"),
                  Figure("cnn_blocks.png", "activation bytes per layer",
                         plot(FIGURES_MODULE, "blocks", sample, pick, layers_order,
                              title=f"Activation bytes per layer ({where})"))]
    return lines


def _representative_cell(plain: pd.DataFrame) -> pd.DataFrame | None:
    """The cells (one per conv_save) at the middle depth, the largest image and the largest batch."""
    if plain.empty:
        return None
    depths = sorted(plain["depth"].unique())
    depth = depths[len(depths) // 2]
    part = plain[plain["depth"] == depth]
    part = part[part["image_size"] == part["image_size"].max()]
    part = part[part["batch_size"] == part["batch_size"].max()]
    part = part.drop_duplicates("conv_save").sort_values("conv_save", key=lambda s: s != "input")
    return part if not part.empty else None


# --- training against inference --------------------------------------------------------------------------

def _modes_part(cells: pd.DataFrame) -> list[Block]:
    lines: list[Block] = [Heading("Training against inference", 3)]
    keys = SHAPE_FIELDS + ("conv_save", "checkpoint")
    pairs = _pairs(cells, "mode", "train", "inference", ["peak_bytes", "activation_bytes"], keys)
    pairs = pairs[pairs["checkpoint"] == "none"] if "checkpoint" in pairs.columns else pairs
    if pairs.empty:
        return lines + [Paragraph("No configuration ran in both modes.")]
    pairs = pairs.assign(ratio=pairs["peak_bytes"].astype(float) / pairs["peak_bytes_b"].astype(float))
    items = []
    for conv_save in sorted(pairs["conv_save"].unique()):
        part = pairs[pairs["conv_save"] == conv_save]
        items += [f"`{conv_save}`: training peak ÷ inference peak {part['ratio'].min():.2f}–"
                  f"{part['ratio'].max():.2f}× (median {part['ratio'].median():.2f}×) over {len(part)} pairs."]
    # does the ratio grow with the image? compare the smallest and largest image at equal other fields
    small, large = pairs["image_size"].min(), pairs["image_size"].max()
    if small != large:
        grid = pairs.pivot_table(index=[k for k in ("depth", "batch_size", "conv_save", "batch_norm")
                                        if k in pairs.columns], columns="image_size", values="ratio")
        both = grid[[small, large]].dropna()
        grows = int((both[large] > both[small]).sum())
        items += [f"From image {int(small)} to image {int(large)} the ratio rises in {grows} of {len(both)} "
                  "configurations" + (": it grows with the image." if grows == len(both) else
                                      (": not so, it does not grow with the image." if grows == 0 else "."))]
    infer = cells[cells["mode"] == "inference"]
    same = _pairs(infer, "conv_save", "input", "columns", ["peak_bytes"], SHAPE_FIELDS + ("checkpoint",))
    if not same.empty:
        equal = int((same["peak_bytes"] == same["peak_bytes_b"]).sum())
        items += [f"Inference peaks under `input` and `columns` are equal in {equal} of {len(same)} pairs"
                  + (" (inference keeps nothing for backward; both make the same column workspace)."
                     if equal == len(same) else ".")]
    lines.append(Bullets(tuple(items)))
    pick = pairs[pairs["conv_save"] == "input"] if (pairs["conv_save"] == "input").any() else pairs
    depths = sorted(pick["depth"].unique())
    pick = pick[pick["depth"] == depths[len(depths) // 2]]
    table = pick.pivot_table(index="image_size", columns="batch_size", values="ratio")
    if not table.empty:
        body = [[int(image)] + [doc.times(table.loc[image, b]) for b in table.columns] for image in table.index]
        lines.append(doc.table(["image \\ batch"] + [str(int(b)) for b in table.columns], body,
                               caption=f"Training peak ÷ inference peak at depth {int(depths[len(depths) // 2])}, "
                               f"`{pick['conv_save'].iloc[0]}`; rows are image sizes, columns batch sizes:"))
    return lines


# --- columns against input ---------------------------------------------------------------------------------

def _columns_part(plain: pd.DataFrame, layers: pd.DataFrame | None, out: Path, cell: str | None) -> list[Block]:
    lines: list[Block] = [Heading("Keeping the columns against keeping the input", 3)]
    pairs = _pairs(plain, "conv_save", "columns", "input", ["cell", "activation_bytes", "peak_bytes"], SHAPE_FIELDS)
    if pairs.empty:
        return lines + [Paragraph("The grid does not run both `conv_save` values on the same configuration.")]
    if layers is not None:
        conv = layers[layers["op"] == "conv2d"]
        held = (conv.assign(bytes=conv["activation_bytes"] + conv["input_bytes"])
                .groupby(["cell", "repeat"])["bytes"].sum().groupby("cell").median())
        pairs["conv"] = pairs["cell"].map(held)
        pairs["conv_b"] = pairs["cell_b"].map(held)
        conv_ratio = (pairs["conv"] / pairs["conv_b"]).dropna()
        if len(conv_ratio):
            exact = bool(np.allclose(conv_ratio, KERNEL_POSITIONS, rtol=1e-9))
            lines += [Paragraph(f"What the convolutions keep (their saved input, the network input included, or their "
                                f"columns): `columns` ÷ `input` = {conv_ratio.min():.4f}–{conv_ratio.max():.4f} over "
                                f"{len(conv_ratio)} pairs, against k² = {KERNEL_POSITIONS} expected for 3×3 kernels "
                                "with stride 1 and padding 1 (one column per output position, as many positions as "
                                "the input): " + ("so, exactly." if exact else "not so."))]
    total = (pairs["activation_bytes"].astype(float) / pairs["activation_bytes_b"].astype(float))
    peak = (pairs["peak_bytes"].astype(float) / pairs["peak_bytes_b"].astype(float))
    lines += [Paragraph(f"The step's activation bytes grow {total.min():.2f}–{total.max():.2f}× (median "
                        f"{total.median():.2f}×) and its total peak {peak.min():.2f}–{peak.max():.2f}× (median "
                        f"{peak.median():.2f}×): "
                        + ("less than 9, because batch norm, ReLU and the pools keep the same bytes either way."
                           if total.max() < KERNEL_POSITIONS else "not less than 9.")
                        + " (The activation bytes under `input` leave out the network input that block 0 keeps, "
                          "which the ledger counts as input.)")]
    lines += _workspace_lines(out, cell)
    return lines


def _workspace_lines(out: Path, cell: str | None) -> list[Block]:
    """The column workspaces of the timeline's cell (timeline.csv, one training step)."""
    path = out / "timeline.csv"
    if not path.is_file():
        return []
    try:
        events = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return []
    if not {"op", "phase", "delta_bytes"} <= set(events.columns):
        return []
    born = events[(events["delta_bytes"] > 0) & events["op"].astype(str).str.startswith("conv2d.")]
    if born.empty:
        return [Paragraph("The timeline's cell made no column workspace.")]
    parts = []
    for (op, phase), group in born.groupby(["op", "phase"], sort=False):
        parts.append(f"{len(group)} `{op}` in {phase} (largest {bytes_text(group['delta_bytes'].max())})")
    return [Paragraph(f"Column buffers the timeline's training cell{f' (`{cell}`)' if cell else ''} made and freed "
                      "within the step (the ledger sees them as temporaries through `Node.workspace`): "
                      + "; ".join(parts) + ".")]


# --- checkpointing -----------------------------------------------------------------------------------------

def _checkpoint_part(train: pd.DataFrame, layers: pd.DataFrame | None) -> list[Block]:
    lines: list[Block] = [Heading("Checkpointing the blocks", 3)]
    columns = ["cell", "activation_bytes", "peak_bytes", "step_seconds", "recomputed_ops", "foreign_cores"]
    pairs = _pairs(train, "checkpoint", "sqrt", "none", columns, SHAPE_FIELDS + ("conv_save",))
    if pairs.empty:
        return lines + [Paragraph("The grid has no `sqrt` cell next to a `none` one.")]
    pairs = pairs.assign(
        activation_ratio=pairs["activation_bytes"].astype(float) / pairs["activation_bytes_b"].astype(float),
        peak_ratio=pairs["peak_bytes"].astype(float) / pairs["peak_bytes_b"].astype(float),
        time_ratio=pairs["step_seconds"].astype(float) / pairs["step_seconds_b"].astype(float))
    lines += [Paragraph("`sqrt` splits the blocks into segments of ⌈√depth⌉ blocks; each segment keeps only its input "
                        "in forward and is recomputed in backward. Ratios are `sqrt` ÷ `none` on the same "
                        "configuration; load = the most cores other processes kept busy while a pair's steps were "
                        f"timed, (loaded) above {LOADED_CORES:g}.")]
    body = []
    for depth, group in pairs.groupby("depth"):
        segment = math.isqrt(int(depth) - 1) + 1
        for conv_save, part in group.groupby("conv_save"):
            load = pd.concat([part["foreign_cores"], part["foreign_cores_b"]]).dropna()
            body.append([int(depth), f"{-(-int(depth) // segment)} × {segment}", conv_save, len(part),
                         doc.compound("{}–{}", doc.fixed(part["activation_ratio"].min(), 3),
                                      doc.fixed(part["activation_ratio"].max(), 3)),
                         doc.compound("{}–{}", doc.fixed(part["peak_ratio"].min(), 3),
                                      doc.fixed(part["peak_ratio"].max(), 3)),
                         doc.compound("{} ({}–{})", doc.times(part["time_ratio"].median()),
                                      doc.fixed(part["time_ratio"].min(), 2), doc.fixed(part["time_ratio"].max(), 2)),
                         doc.load(load.max() if len(load) else None), int(part["recomputed_ops"].median())])
    lines += [doc.table(["depth", "segments × blocks", "conv_save", "pairs", "activation ratio", "peak ratio",
                         "time ratio, median (range)", "load (cores)", "ops recomputed (median)"], body)]
    lower_act = int((pairs["activation_ratio"] < 1).sum())
    lower_peak = int((pairs["peak_ratio"] < 1).sum())
    n = len(pairs)
    lines += [Paragraph(f"Checkpointing lowers the activation bytes in {lower_act} of {n} pairs and the total peak in "
                        f"{lower_peak} of {n}" + (": so, everywhere." if lower_peak == n and lower_act == n else
                                                  (": not so anywhere." if lower_peak == 0 and lower_act == 0
                                                   else "."))
                        + f" The median activation ratio is {pairs['activation_ratio'].median():.3f}.")]
    if layers is not None:
        # the recompute of the first segment brings block 0's saved bytes back: they bound what sqrt can save
        per = layers.groupby(["cell", "repeat", "layer"])["activation_bytes"].sum().groupby(["cell", "layer"]).median()
        per = per.reset_index()
        totals = per.groupby("cell")["activation_bytes"].sum()
        first = per[per["layer"] == "0"].set_index("cell")["activation_bytes"]
        share = (first / totals).reindex(pairs["cell_b"]).to_numpy()
        known = ~np.isnan(share)
        if known.any():
            above = int((pairs["activation_ratio"].to_numpy()[known] >= share[known] - 1e-12).sum())
            lines += [Paragraph(f"Block 0 alone holds {np.nanmin(share):.1%}–{np.nanmax(share):.1%} of the activation "
                                f"bytes without checkpointing; `sqrt` keeps at least that share in {above} of "
                                f"{int(known.sum())} pairs"
                                + (", as it must: the first segment's recompute brings block 0's saved tensors back."
                                   if above == int(known.sum()) else ": not so in every pair."))]
    return lines
