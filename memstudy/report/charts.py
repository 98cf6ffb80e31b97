"""The HTML renderer's charts as Plotly figure specs (plain dicts, drawn by plotly.js in the browser).

Each function returns `{"id", "title", "data", "layout"}` or None when the data cannot support the chart.
Hover labels print bytes in human units and exactly (`12.00 MiB = 12,582,912 B`), so a reader (and the
browser tests) can check a label against the CSV. Every point carries `customdata` = the summary cell (or
the timeline buffer key) it shows.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from ..run.results.fields import CATEGORIES
from ..units import format_bytes
from .formats import exact_bytes_text as exact_bytes
from .formats import is_missing
from .formats import short_bytes_text as short_bytes
from .style import CATEGORY_COLORS, CATEGORY_LABELS
from .timeline import Band, bands, file_categories, has_buffers, phase_spans, polygon

MODE_DASH = {"train": "solid", "inference": "dash", "generate": "dot"}
SERIES_COLORS = ("#440154", "#3b528b", "#21908d", "#5dc963", "#c2a000", "#e5541b", "#a01a7d", "#1f77b4")
PROBES = (("ledger", "step_peak_bytes"), ("tracemalloc", "tracemalloc_step_peak_bytes"),
          ("RSS", "rss_step_peak_bytes"), ("memory_profiler", "mprof_step_peak_bytes"))


def field_label(field: str, frame: Any = None) -> str:
    """A field as its CLI flag names it (`batch_size` -> batch, `out_features` -> classes), from the declaration of
    the families in `frame` (a frame of rows)."""
    declared = []
    if frame is not None and "model" in getattr(frame, "columns", ()):
        from .fit import field_declarations  # pandas: only for a frame of rows, never for a run's page

        declared = field_declarations(frame, field)
    return declared[0].cli_flag[2:].replace("-", " ") if declared else field.replace("_size", "")


def plain(value: Any) -> Any:
    """numpy and pandas scalars as JSON-ready Python values (NaN and NA as None)."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    try:
        if value != value:  # NaN, pandas NA raises TypeError
            return None
    except TypeError:
        return None
    return value


def bytes_axis(values: Sequence[float], log: bool, title: str) -> dict[str, Any]:
    """A y (or x) axis in binary units: ticks at powers of two (log) or at round KiB/MiB steps (linear)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v)) and (float(v) > 0 or not log)]
    axis: dict[str, Any] = {"title": {"text": title}, "type": "log" if log else "linear", "zeroline": False}
    if not finite:
        return axis
    lo, hi = min(finite), max(finite)
    if log:
        first, last = math.floor(math.log2(max(lo, 1))), math.ceil(math.log2(max(hi, 1)))
        step = max(1, math.ceil((last - first) / 8))
        ticks = [2.0 ** k for k in range(first, last + 1, step)]
    else:
        top = max(abs(hi), 1.0)
        unit = 1024 ** int(math.floor(math.log(top, 1024)))
        raw = top / unit / 6
        nice = next(s for s in (0.1, 0.2, 0.25, 0.5, 1, 2, 2.5, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000)
                    if s >= raw)
        ticks = [i * nice * unit for i in range(0, int(top / unit / nice) + 2)]
    axis.update(tickvals=ticks, ticktext=[short_bytes(t) for t in ticks])
    return axis


def count_axis(values: Sequence[float], title: str) -> dict[str, Any]:
    """A log axis for products of sizes (depth·batch, ...): ticks at powers of two, labelled as plain numbers."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v)) and float(v) > 0]
    axis: dict[str, Any] = {"title": {"text": title}, "type": "log"}
    if finite:
        first, last = math.floor(math.log2(min(finite))), math.ceil(math.log2(max(finite)))
        step = max(1, math.ceil((last - first) / 10))
        ticks = [2 ** k for k in range(first, last + 1, step)]
        axis.update(tickvals=ticks, ticktext=[f"{t:,}" for t in ticks])
    return axis


def chart_layout(title: str, **extra: Any) -> dict[str, Any]:
    layout = {"title": {"text": title_text(title), "font": {"size": 14}}, "hovermode": "closest",
              "margin": {"l": 80, "r": 20, "t": 60, "b": 60}, "legend": {"font": {"size": 11}},
              "font": {"family": "system-ui, sans-serif"}}
    layout.update(extra)
    return layout


# --- one step's timeline ---------------------------------------------------------------------------

def layer_label(layer: str, names: dict[str, str]) -> str:
    """A timeline layer as a reader knows it: the family's name for it (`hidden 3`), else `layer 3`; "" (no layer:
    the loss, and any op outside a `layer_scope`) as `no layer`."""
    if layer == "":
        return "no layer"
    return f"{names[layer]} (layer {layer})" if layer in names else f"layer {layer}"


def _band_label(band: Band, names: dict[str, str]) -> str:
    death = f"event {band.died}" if band.died is not None else "alive at the end of the step"
    return (f"<b>{band.op}</b> ({band.role}), {layer_label(band.layer, names)}<br>{CATEGORY_LABELS[band.category]}"
            f"<br>{band.shape} {band.dtype}, {exact_bytes(band.nbytes)}<br>"
            f"born event {band.born} ({band.phase}), died {death}")


def _phase_marks(rows: list[dict[str, str]]) -> tuple[list[dict], list[dict]]:
    shapes, notes = [], []
    for i, (phase, start, stop) in enumerate(phase_spans(rows)):
        if i % 2:
            shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": start, "x1": stop, "y0": 0,
                           "y1": 1, "fillcolor": "rgba(120,120,120,0.10)", "line": {"width": 0}, "layer": "below"})
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": start, "x1": start, "y0": 0, "y1": 1,
                       "line": {"width": 0.5, "color": "rgba(80,80,80,0.5)"}})
        short = (stop - start) * 25 < len(rows)  # a short span's label goes up a line when its neighbour's is near
        notes.append({"x": (start + stop) / 2, "y": 1.0 + (0.045 if short and i % 2 else 0.0), "xref": "x",
                      "yref": "paper", "yanchor": "bottom",
                      "text": phase, "showarrow": False, "font": {"size": 10}})
    return shapes, notes


def title_text(title: str) -> str:
    """A chart title as plotly.js writes it: a second line (what was measured) smaller, under the first."""
    first, _, rest = title.partition("\n")
    return first + (f"<br><span style='font-size:11px'>{rest}</span>" if rest else "")


def timeline_chart(rows: list[dict[str, str]], title: str, chart_id: str = "timeline",
                   names: dict[str, str] | None = None) -> dict[str, Any] | None:
    """Live bytes by category over one step's events; with buffer columns, one hoverable band per buffer and a
    button per layer (`names`: the family's name for each layer index)."""
    names = names or {}
    if not rows:
        return None
    end = len(rows)
    present = file_categories(rows)
    totals = [int(r["live_bytes"]) if r.get("live_bytes") not in (None, "") else
              sum(int(r[f"{c}_bytes"]) for c in present) for r in rows]
    peak_event = max(range(end), key=lambda i: totals[i])
    shapes, notes = _phase_marks(rows)
    shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": peak_event + 0.5, "x1": peak_event + 0.5,
                   "y0": 0, "y1": 1, "line": {"width": 1, "dash": "dot", "color": "#222"}})
    notes.append({"x": peak_event + 0.5, "y": 0.98, "xref": "x", "yref": "paper", "xanchor": "right",
                  "text": f"peak {format_bytes(totals[peak_event])} (event {peak_event}) ", "showarrow": False,
                  "font": {"size": 10}, "bgcolor": "rgba(255,255,255,0.7)"})
    data: list[dict[str, Any]] = []
    layers: list[str] = []
    # one legend entry per category: clicking it hides or shows every band of that category
    for category in present:
        data.append({"type": "scatter", "x": [None], "y": [None], "mode": "markers", "name": CATEGORY_LABELS[category],
                     "legendgroup": category, "marker": {"color": CATEGORY_COLORS[category], "symbol": "square",
                                                         "size": 12}, "hoverinfo": "skip"})
    if has_buffers(rows):
        all_bands = bands(rows)
        shade = {c: 0 for c in CATEGORIES}
        for band in all_bands:
            xs, ys = polygon(band)
            # neighbouring buffers of one category alternate two shades, so each band reads on its own
            shade[band.category] ^= 1
            data.append({
                "type": "scatter", "x": xs, "y": ys, "mode": "lines", "fill": "toself", "hoveron": "fills",
                "line": {"width": 0.6, "color": "rgba(255,255,255,0.9)"},
                "fillcolor": CATEGORY_COLORS[band.category] + ("ff" if shade[band.category] else "c0"),
                "legendgroup": band.category, "showlegend": False, "name": f"buffer {band.key}",
                "text": _band_label(band, names), "hoverinfo": "text",
                "meta": {"key": band.key, "layer": band.layer, "category": band.category, "nbytes": band.nbytes,
                         "op": band.op, "born": band.born, "died": band.died, "runs": band.runs},
            })
        layers = sorted({b.layer for b in all_bands}, key=lambda v: (v == "", int(v) if v.isdigit() else 0, v))
        note = "hover a band for its buffer; click a layer to highlight its buffers"
    else:  # an older timeline.csv: the categories only, hover per event
        xs = list(range(end + 1))
        for category in present:
            ys = [int(r[f"{category}_bytes"]) for r in rows]
            text = [f"event {i} ({r['phase']}): {r.get('op', '')}<br>{CATEGORY_LABELS[category]} "
                    f"{exact_bytes(y)}<br>live {exact_bytes(totals[i])}" for i, (r, y) in enumerate(zip(rows, ys))]
            data.append({"type": "scatter", "x": xs, "y": ys + ys[-1:], "mode": "lines", "stackgroup": "live",
                         "line": {"shape": "hv", "width": 0}, "fillcolor": CATEGORY_COLORS[category],
                         "legendgroup": category, "showlegend": False, "name": CATEGORY_LABELS[category],
                         "text": text + text[-1:], "hovertemplate": "%{text}<extra></extra>"})
        note = "this timeline.csv predates the buffer columns: hover shows each event"
    layout = chart_layout(title, shapes=shapes, annotations=notes, margin={"l": 80, "r": 20, "t": 100, "b": 40},
                          legend={"orientation": "h", "y": -0.14, "font": {"size": 11}},
                          xaxis={"title": {"text": "ledger event (allocation or free), in order"}, "range": [0, end],
                                 "zeroline": False},
                          yaxis=bytes_axis([0, max(totals)], False, "live bytes"), height=540)
    return {"id": chart_id, "title": title, "note": note, "data": data, "layout": layout,
            "layers": [(layer, layer_label(layer, names)) for layer in layers], "peak_event": peak_event,
            "events": end}


# --- the study's charts ------------------------------------------------------------------------------

def hover_config(row: Any, fields: Sequence[str], frame: Any = None) -> str:
    return ", ".join(f"{field_label(f, frame)} {plain(row[f])}" for f in fields)


def peak_chart(cells: Any, field: str, fixed: dict[str, Any], series_field: str | None,
               tied: Sequence[str] = (), numeric: bool = True) -> dict[str, Any] | None:
    """Median total peak against one swept field: train and inference (and one line per `series_field`);
    `tied` fields move with `field` (named in the axis title); `numeric`: a size, drawn on a log axis."""
    data_cells = cells.dropna(subset=["peak_bytes"])
    if data_cells.empty or data_cells[field].nunique() < 2:
        return None

    def _label(name: str) -> str:
        return field_label(name, cells)

    values = sorted(data_cells[field].unique().tolist(), key=lambda v: (str(type(v)), v))
    series_values = sorted(data_cells[series_field].unique().tolist()) if series_field else [None]
    traces = []
    for i, value in enumerate(series_values):
        color = SERIES_COLORS[i % len(SERIES_COLORS)]
        for mode in MODE_DASH:
            part = data_cells[data_cells["mode"] == mode]
            if series_field:
                part = part[part[series_field] == value]
            if part.empty:
                continue
            order = {v: i for i, v in enumerate(values)}
            part = part.assign(_order=part[field].map(order)).sort_values("_order")
            shown = [field] + ([series_field] if series_field else [])
            name = f"{mode}" + (f", {_label(series_field)} {value}" if series_field else "")
            traces.append({
                "type": "scatter", "mode": "lines+markers", "name": name,
                "x": [plain(v) if numeric else str(plain(v)) for v in part[field]],
                "y": [plain(v) for v in part["peak_bytes"]], "customdata": part["cell"].tolist(),
                "text": [f"{hover_config(r, shown, cells)}, {mode}<br>total peak {exact_bytes(r['peak_bytes'])}"
                         for _, r in part.iterrows()],
                "hovertemplate": "%{text}<extra></extra>",
                "line": {"color": color, "dash": MODE_DASH[mode]}, "marker": {"color": color, "size": 7},
            })
    if not traces:
        return None
    at = ", ".join(f"{_label(k)} {v}" for k, v in fixed.items())
    name = " = ".join(_label(f) for f in (field, *tied))
    title = f"Total peak against {name}" + (f" ({at})" if at else "")
    xaxis: dict[str, Any] = {"title": {"text": name}}
    if numeric:
        xaxis.update(type="log", tickvals=[plain(v) for v in values], ticktext=[str(plain(v)) for v in values])
    else:
        xaxis.update(type="category", categoryorder="array", categoryarray=[str(plain(v)) for v in values])
    layout = chart_layout(title, xaxis=xaxis, yaxis=bytes_axis(data_cells["peak_bytes"].tolist(), True,
                                                          "total peak (ledger)"))
    return {"id": f"peak-{field}", "title": title, "data": traces, "layout": layout}


def breakdown_chart(rows: dict[str, Any], where: str) -> dict[str, Any] | None:
    """What is live at the peak, train beside inference (and generate), stacked by category (one series per
    category)."""
    modes = [m for m in MODE_DASH if rows.get(m) is not None]
    if not modes:
        return None
    traces = []
    for category in CATEGORIES:
        column = f"peak_{category}_bytes"
        if all(is_missing(rows[m].get(column)) for m in modes):
            continue  # a category the rows predate (a runs.csv from before it)
        ys = [plain(rows[m].get(column)) or 0 for m in modes]
        traces.append({
            "type": "bar", "name": CATEGORY_LABELS[category], "x": modes, "y": ys,
            "marker": {"color": CATEGORY_COLORS[category]}, "customdata": [rows[m]["cell"] for m in modes],
            "text": [f"{m}: {CATEGORY_LABELS[category]}<br>{exact_bytes(y)}" for m, y in zip(modes, ys)],
            "hovertemplate": "%{text}<extra></extra>", "textposition": "none",
        })
    peaks = [plain(rows[m]["peak_bytes"]) or 0 for m in modes]
    title = f"What is live at the peak, train against inference ({where})"
    notes = [{"x": m, "y": p, "text": format_bytes(p), "showarrow": False, "yanchor": "bottom"}
             for m, p in zip(modes, peaks)]
    layout = chart_layout(title, barmode="stack", annotations=notes,
                     yaxis=bytes_axis([0, max(peaks) * 1.08], False, "live bytes at the step's peak (ledger)"))
    return {"id": "breakdown", "title": title, "data": traces, "layout": layout}


def predicted_chart(ok_rows: Any) -> dict[str, Any] | None:
    """Measured step peak by probe against the predicted step peak, every repeat; y = x for reference."""
    rows = ok_rows.dropna(subset=["predicted_step_peak_bytes"])
    rows = rows[rows["predicted_step_peak_bytes"] > 0]
    if rows.empty:
        return None
    traces = []
    values = rows["predicted_step_peak_bytes"].astype(float).tolist()
    for i, (label, column) in enumerate(PROBES):
        if column not in rows.columns:
            continue
        part = rows.dropna(subset=[column])
        part = part[part[column] > 0]
        if part.empty:
            continue
        values += part[column].astype(float).tolist()
        traces.append({
            "type": "scatter", "mode": "markers", "name": label, "x": part["predicted_step_peak_bytes"].tolist(),
            "y": part[column].tolist(), "customdata": part["cell"].tolist(),
            "marker": {"size": 6, "opacity": 0.7, "color": SERIES_COLORS[(2 * i) % len(SERIES_COLORS)]},
            "text": [f"{r['cell']} (repeat {plain(r['repeat'])})<br>predicted "
                     f"{exact_bytes(r['predicted_step_peak_bytes'])}<br>{label} {exact_bytes(r[column])}"
                     for _, r in part.iterrows()],
            "hovertemplate": "%{text}<extra></extra>",
        })
    if not traces:
        return None
    lo, hi = min(values), max(values)
    traces.append({"type": "scatter", "mode": "lines", "name": "y = x", "x": [lo, hi], "y": [lo, hi],
                   "line": {"color": "black", "width": 1}, "hoverinfo": "skip"})
    title = "Measured step peak by probe against the predicted step peak (every repeat)"
    layout = chart_layout(title, xaxis=bytes_axis(values, True, "predicted step peak"),
                     yaxis=bytes_axis(values, True, "measured step peak"))
    return {"id": "predicted", "title": title, "data": traces, "layout": layout}
