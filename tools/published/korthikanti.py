"""docs/parallel.md's Korthikanti et al. 2022 tables, from the predictor (memstudy.findings.korthikanti): Table 2's six
rows for one layer of their 22B configuration, term by term."""
from __future__ import annotations

from memstudy.findings import korthikanti
from memstudy.units import format_bytes

from tools.published.results import Results


def _mib(nbytes: int | None) -> str:
    return "—" if nbytes is None else f"{nbytes / 2**20:,.2f}"


def table2_block(results: Results) -> list[str]:
    rows = korthikanti.table2()
    c = korthikanti.CONFIG_22B
    lines = [
        f"One transformer layer of the 22B configuration (h {c['width']}, a {c['heads']}, s {c['seq_len']}, "
        f"t {korthikanti.TENSOR_PARALLEL_22B}, micro-batch b = {korthikanti.BATCH}) in bfloat16 with dropout: what "
        "the rank holds for backward when its forward pass ends, predicted (the rank's graph on shape-only arrays, "
        "`memstudy.findings.korthikanti`), beside Korthikanti et al.'s Table 2.",
        "",
        "| setting | paper's expression | paper (bytes) | ledger, paper's terms (bytes) | equal | beyond the paper: "
        "layer-norm statistics | largest collective buffer (transient) |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        stats = sum(line.ledger_bytes for line in row.rows if line.label.startswith("layer-norm statistics"))
        lines.append(f"| {row.setting.label} | {row.setting.formula} | {row.formula_bytes:,} | {row.ledger_bytes:,} | "
                     f"{'yes' if row.formula_bytes == row.ledger_bytes else 'NO'} | {format_bytes(stats)} | "
                     f"{format_bytes(row.communication_bytes)} |")
    lines += ["", "Term by term (MiB; the paper's term beside the ledger's buffers; — : not in the paper):", ""]
    labels = [line.label for line in rows[0].rows if line.terms]
    header = "| term | " + " | ".join(f"{r.setting.label}: paper / ledger" for r in rows[:5]) + " |"
    lines += [header, "|---|" + "---:|" * 5]
    for label in labels:
        cells = []
        for r in rows[:5]:
            line = next((x for x in r.rows if x.label == label), None)
            cells.append("—" if line is None else f"{_mib(line.formula_bytes)} / {_mib(line.ledger_bytes)}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    full = rows[5]
    lines += ["", f"Full recomputation keeps each layer's input only: {full.rows[0].ledger_bytes:,} bytes in the "
                  f"ledger, 2sbh = {full.formula_bytes:,} in the paper."]
    return lines


def table3_block(results: Results) -> list[str]:
    lines = [
        "The first pipeline stage of Korthikanti et al.'s 175B, 530B and 1T configurations (their Table 3: s 2048, "
        "vocabulary 51,200, micro-batch 1, t 8) under 1F1B with sequence parallelism and selective recomputation, in "
        "bfloat16 with dropout: what the stage holds for backward when its first backward starts (p microbatches in "
        "flight, L/p layers each: L layers' worth), predicted (every block of the stage run on shape-only arrays).",
        "",
        "| model | heads | hidden | layers | t | p | paper: 34·s·b·h·L/t (bytes) | ledger: the blocks' paper terms "
        "(bytes) | equal | beyond the paper: layer-norm statistics | embedding layer (dropout masks, position ids) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for name, (heads, width, layers, t, p) in korthikanti.TABLE3_CONFIGS.items():
        r = korthikanti.first_stage(name)
        terms = r.blocks_bytes - r.statistics_bytes
        lines.append(f"| {name} | {heads} | {width:,} | {layers} | {t} | {p} | {r.formula_bytes:,} | {terms:,} | "
                     f"{'yes' if terms == r.formula_bytes else 'NO'} | {format_bytes(r.statistics_bytes)} | "
                     f"{format_bytes(r.embedding_bytes)} |" + ("" if not r.other_bytes else
                                                                f" (other: {format_bytes(r.other_bytes)})"))
    return lines


STRATEGY_BASES = {
    "GPT (depth 24, width 2048, 16 heads, s 2048, vocab 50,257, batch 8)":
        dict(model="gpt", depth=24, width=2048, heads=16, seq_len=2048, vocab=50257, batch_size=8, dropout=0.1),
    "Llama (Llama-3-8B's shapes: depth 32, width 4096, 32 heads, 8 kv heads, ffn 14,336, vocab 128,256, s 4096, "
    "batch 8)": dict(model="llama", depth=32, width=4096, heads=32, kv_heads=8, ffn=14336, seq_len=4096,
                     vocab=128256, batch_size=8),
}
STRATEGY_PRECISION = dict(precision="bf16-master", optimizer="adam")  # bfloat16 with float32 master weights, Adam


def strategies_block(results: Results) -> list[str]:
    from memstudy.findings import parallel

    lines = ["One rank's step, predicted (its graph on shape-only arrays: bytes exact for that graph; no timings), in "
             "bfloat16 with float32 master weights and Adam (`memstudy.findings.parallel`). Parameters and optimiser "
             "state as registered; gradients, activations and communication their largest live bytes; the paper's "
             "activations are Korthikanti et al.'s Table 2 row times the layers and microbatches the rank holds (GPT "
             "only: its terms are a GPT block's)."]
    for title, base in STRATEGY_BASES.items():
        rows = parallel.strategy_rows({**base, **STRATEGY_PRECISION})
        lines += ["", f"**{title}**", "",
                  "| strategy | parameters | gradients | optimizer state | activations | paper: the layers' "
                  "activations | communication | peak |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            c = r.bytes_by_category
            lines.append(f"| {r.label} | {format_bytes(c['parameter'])} | {format_bytes(c['gradient'])} | "
                         f"{format_bytes(c['optimizer_state'])} | {format_bytes(c['activation'])} | "
                         f"{format_bytes(r.formula_activation_bytes)} | {format_bytes(c['communication'])} | "
                         f"{format_bytes(r.peak_bytes)} |")
        cut = parallel.cuts(rows)
        lines += ["", "Categories a strategy holds at most half of one device's: " + "; ".join(
            f"{label}: {', '.join(c.replace('_', ' ') for c in cats) or 'none'}" for label, cats in cut.items()) + "."]
    return lines
