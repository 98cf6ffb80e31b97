"""The blocks of "What the study shows": the default study's laws and ratios, its wall time, the timeline, the
width study."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from memstudy.units import format_bytes
from memstudy.findings.mlp import depth_slopes, input_law, training_law
from memstudy.report.formats import bytes_text as _bytes
from memstudy.report.formats import coef_text as _coef
from memstudy.report.formats import ratio_text as _ratio
from memstudy.report.load import timeline_cell as _timeline_cell
from memstudy.report.sections import peak_ratio_cells
from tools.published.results import (BENCH_CSV, DEFAULT_STUDY, OPTIMIZER_NAMES, Results, StudyData, and_list, at_cell,
                      load_clause, near, span, times)


def _grid_text(env: dict[str, Any] | None) -> str:
    spec = (env or {}).get("spec") or {}
    grid = spec.get("grid") or {}
    swept = [f"{k.replace('_size', '')} {span(v)}" if k != "mode" else "/".join(v)
             for k, v in grid.items() if isinstance(v, list) and len(v) > 1]
    fixed = {k: v[0] for k, v in grid.items() if isinstance(v, list) and len(v) == 1}
    parts = [" × ".join(swept)]
    if "width" in fixed:
        parts.append(f"width {fixed['width']}")
    if "dtype" in fixed:
        parts.append(str(fixed["dtype"]))
    if "optimizer" in fixed:
        parts.append(OPTIMIZER_NAMES.get(fixed["optimizer"], fixed["optimizer"]))
    if spec.get("repeats"):
        parts.append(f"{spec['repeats']} repeats")
    return ", ".join(p for p in parts if p)


def _law_bullet(study: StudyData) -> str:
    laws = [law for law in training_law(study.train_cells) if np.isfinite(law["a"])]
    if not laws:
        return "- **Training**: no activation law could be fitted."
    law = laws[0]
    cells = law["cells"]
    classes = sorted(study.train_cells["out_features"].dropna().unique().tolist())
    text = f"- **Training** activation bytes fit **a·depth·batch + b·batch + c** over the {cells} training cells"
    if near(law["ratio"], 1.0):
        text += (f", with **a = {_coef(law['a'])} = {law['expected_label'].split(' = ')[-1]}**. That is "
                 f"{law['expected_label'].split(' = ')[0]}, one stored intermediate per layer per example, with ratio "
                 f"{_ratio(law['ratio'])}")
    else:
        text += (f", with **a = {_coef(law['a'])}**, {_ratio(law['ratio'])} × {law['expected_label']} (one stored "
                 "intermediate per layer per example would be 1.000)")
    text += f" and R² = {_ratio(law['r2'])}."
    if len(classes) == 1:
        probs = classes[0] * law["itemsize"]
        if abs(law["b"] - probs) < 0.5:
            text += (f" b = {_coef(law['b'])} per example is the loss's softmax probabilities ({classes[0]} classes × "
                     f"{law['itemsize']} B)")
        else:
            text += (f" b = {_coef(law['b'])} per example (the loss's softmax probabilities alone would be "
                     f"{classes[0]} × {law['itemsize']} B)")
    else:
        text += f" b = {_coef(law['b'])} per example"
    return text + f", and c = {_coef(law['c'])}."


def _inference_bullet(study: StudyData) -> str:
    slopes = depth_slopes(study.ok_cells)
    if not slopes:
        return "- **Inference**: only one depth ran, so there is no slope over depth."
    batches = [s["key"].get("batch_size") for s in slopes]
    inference = [s["inference_slope"] for s in slopes]
    largest = max(abs(v) for v in inference)
    text = ("- **Inference** working memory (peak − parameters − optimiser state − input), fitted over depth at "
            "each ")
    if largest < 0.5:
        text += f"batch size ({and_list(batches)}), grows by **{_coef(0.0)} per layer** at every one."
    else:
        text += f"batch size ({and_list(batches)}), grows by up to **{_coef(largest)} per layer**."
    per_example = [s["train_slope"] / b for s, b in zip(slopes, batches)]
    if max(per_example) - min(per_example) < 0.5:
        text += f" Training's activations grow by batch × {_coef(per_example[0])} per layer."
    else:
        text += (" Training's activations grow by " + and_list([_coef(s["train_slope"]) for s in slopes])
                 + " per layer at those batches.")
    return text


def _ratio_bullet(study: StudyData) -> str:
    sliced, ratios, fixed = peak_ratio_cells(study.ok_cells)
    if ratios.empty:
        return "- No configuration ran in both modes, so there is no train ÷ inference ratio."
    column = "train_inference_peak_ratio"
    low, high = ratios.loc[ratios[column].idxmin()], ratios.loc[ratios[column].idxmax()]

    def peak(row: pd.Series, mode: str) -> str:
        hit = sliced[(sliced["depth"] == row["depth"]) & (sliced["batch_size"] == row["batch_size"])
                     & (sliced["mode"] == mode)]
        return _bytes(hit["peak_bytes"].iloc[0])

    smallest = ratios["batch_size"].min()
    at_small = ratios[ratios["batch_size"] == smallest][column]
    text = (f"- **Train ÷ inference total peak**, over the {len(ratios)} depth × batch pairs, ranges from "
            f"{times(low[column])} ({at_cell(low)}) to **{times(high[column])} ({at_cell(high)})**: "
            f"{peak(high, 'train')} "
            f"against {peak(high, 'inference')}. At the smallest batch ({smallest}) it is {times(at_small.min())}–"
            f"{times(at_small.max())}")
    if abs(at_small - 2).max() <= 0.1:
        return text + ", near 2×, because the gradients equal the parameters and the activations are small."
    return text + "."


def _wall_bullet(results: Results) -> str:
    rows = [r for r in results.bench_rows if r["figure"] == "study_wall_seconds" and r["status"] == "ok"]
    text = "- Wall time: "
    if rows:
        r = rows[0]
        text += (f"`memstudy study` (the sweep and report of this study: what `make study` runs after installing) took "
                 f"**{float(r['value']):.1f} s** when the benchmark last ran it (sweep {float(r['measured']):.1f} s + "
                 f"report {float(r['reference']):.1f} s; {load_clause([r.get('foreign_cores')])}; {BENCH_CSV}).")
    else:
        text += f"the benchmark's committed run did not time the study ({BENCH_CSV})."
    names = results.study_names()
    walls = {}
    for name in names:
        sessions = (results.study(name).env or {}).get("sessions") or []
        seconds = [s.get("wall_seconds") for s in sessions]
        if sessions and all(isinstance(v, (int, float)) for v in seconds):
            walls[name] = float(sum(seconds))
    if len(walls) == len(names) and names:
        text += (f" The committed sweeps took {walls.get(DEFAULT_STUDY, float('nan')):.1f} s for this study and "
                 f"{sum(walls.values()):.1f} s for all {len(names)} studies (`memstudy study --all`; the sum of the "
                 "sweep sessions' `wall_seconds` in each env.json, reports not included; "
                 + load_clause(pd.concat([results.study(n).ok_rows["foreign_cores"] for n in names]), "rows") + ").")
    else:
        text += (f" The sweeps' own wall time is recorded in env.json (`wall_seconds` per session) for {len(walls)} "
                 f"of the {len(names)} committed studies, so no total is given.")
    return text


def study_block(results: Results) -> list[str]:
    study = results.study(DEFAULT_STUDY)
    ok = int((study.summary["status"] == "ok").sum())
    spec = (study.env or {}).get("spec") or {}
    lines = [f"`make study` runs `{spec.get('path', 'experiments/default.toml')}`: {_grid_text(study.env)}. Each of "
             f"the {len(study.summary)} cells runs in a fresh process ({ok} finished every repeat). Results are "
             f"committed in [`results/{DEFAULT_STUDY}/`](results/{DEFAULT_STUDY}/report.md).", ""]
    lines += [_law_bullet(study), _inference_bullet(study), _ratio_bullet(study), _wall_bullet(results)]
    return lines


def timeline_block(results: Results) -> list[str]:
    study = results.study(DEFAULT_STUDY)
    path = results.path(f"results/{DEFAULT_STUDY}/timeline.csv")
    if not path.is_file():
        return ["(No timeline.csv in the committed study.)"]
    events = pd.read_csv(path)
    cell = _timeline_cell(study.env)
    config = study.runs[study.runs["cell"] == cell].iloc[0] if cell in set(study.runs["cell"]) else None
    where = f" ({at_cell(config)})" if config is not None else ""
    scratch = events[(events["phase"] == "optimizer") & (events["delta_bytes"] > 0)]
    sizes = sorted(set(scratch["delta_bytes"].astype(int).tolist()))
    if scratch.empty:
        update = "The optimiser then updates in place, with no scratch buffer."
    elif len(scratch) == 1:
        update = f"The optimiser then updates in place, through one {format_bytes(sizes[0])} scratch buffer."
    else:
        update = (f"The optimiser then updates in place, through {len(scratch)} scratch buffers of "
                  f"{and_list([format_bytes(s) for s in sizes])}.")
    return [f"The timeline shows one training step{where} as the ledger saw it, event by event ({len(events)} events). "
            "Forward stacks up one activation per layer (red). Backward releases them in reverse order while the "
            f"gradients (orange) take their place. {update}"]


def width_block(results: Results) -> list[str]:
    study = results.study("width")
    laws = [law for law in training_law(study.train_cells) if law["width_varies"] and np.isfinite(law["a"])]
    if not laws:
        return ["The width study fits no law over width."]
    law = laws[0]
    link = "The width study ([`results/width/`](results/width/report.md))"
    if near(law["ratio"], 1.0):
        text = (f"{link} shows that a stored intermediate grows with the layer's width: over its {law['cells']} "
                f"training cells, a = {_coef(law['a'])} = {law['expected_label'].split(' = ')[0]} per unit of "
                f"depth·batch·width (R² = {_ratio(law['r2'])}).")
    else:
        text = (f"{link} fits a = {_coef(law['a'])} per unit of depth·batch·width over its {law['cells']} training "
                f"cells: {_ratio(law['ratio'])} × the {law['expected_label']} (R² = {_ratio(law['r2'])}).")
    inputs = input_law(study.ok_cells)
    if law["d"] is not None and inputs is not None:
        text += (f" `in_features` adds {_coef(law['d'])} per example per input feature to the activations held "
                 f"for backward, and grows the input by e = {_coef(inputs['e'])} per example per feature (itemsize "
                 f"{inputs['itemsize']} B, {inputs['n']} cells).")
    return [text]
