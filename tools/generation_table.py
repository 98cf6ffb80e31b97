"""The real-scale generation table of docs/generation.md, predicted: Llama-3-8B and Llama-3-70B (experiments/configs/),
batch 1-64, context 1k-128k tokens, in one dtype.

Every number is the predictor's (`memory.predict.predicted_account`: the engine run on shape-only arrays under the
ledger): one generation per batch × context with a static cache of exactly `context` positions (prompt_len =
context - NEW_TOKENS, NEW_TOKENS tokens, so one decode step reads a full cache), from which it reads the KV cache's
bytes, the decode step's peak and the prefill's peak (memory/generation.py). The cache per token is the predicted
cache ÷ (batch · context), and the page checks it against 2 · layers · kv_heads · head_dim · itemsize. A context
above a config's max_position_embeddings is run as it is (the rotary embedding has no position table, so the bytes
are those of a long-context model of the same shapes).

    python tools/generation_table.py                        # print the block (float32, --budget 80GB)
    python tools/generation_table.py --dtype float32 --write  # rewrite the block in docs/generation.md
    python tools/generation_table.py --check                # exit 1 when the page's block differs

The block's first line records the dtype and budget it was made with; `--check` and tests/test_generation_table.py
regenerate it with those.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from memstudy.config import normalize  # noqa: E402
from memstudy.measure.generation import generation_figures  # noqa: E402
from memstudy.measure.predict import predicted_account  # noqa: E402
from memstudy.nn.models.hf_config import hf_config_fields  # noqa: E402
from memstudy.nn.models.registry import DTYPES  # noqa: E402
from memstudy.units import format_bytes, parse_bytes  # noqa: E402

MODELS = (("Llama-3-8B", "experiments/configs/llama-3-8b.json"),
          ("Llama-3-70B", "experiments/configs/llama-3-70b.json"))
BATCHES = (1, 2, 4, 8, 16, 32, 64)
CONTEXTS = tuple(1024 * 2 ** i for i in range(8))  # 1k .. 128k
NEW_TOKENS = 2  # the prefill and one decode step, which reads the full cache
PAGE = ROOT / "docs" / "generation.md"
START = re.compile(r"<!-- generation-table:start \(python tools/generation_table.py --dtype (\S+) --budget (\S+)\) -->")
END = "<!-- generation-table:end -->"


def config(path: str, batch: int, context: int, dtype: str) -> dict[str, Any]:
    _, fields = hf_config_fields(ROOT / path, "llama")
    return normalize({"model": "llama", **fields, "dtype": dtype, "mode": "generate", "batch_size": batch,
                      "seq_len": context, "new_tokens": NEW_TOKENS, "kv_cache": "static"})


def predicted(path: str, batch: int, context: int, dtype: str) -> dict[str, int]:
    """The predicted figures of one generation: parameters, KV cache, decode-step and prefill peaks (bytes)."""
    account = predicted_account(config(path, batch, context, dtype))
    figures = generation_figures(account)
    return {"parameter_bytes": account.registered_bytes["parameter"], "kv_cache_bytes": figures["kv_cache_bytes"],
            "decode_peak_bytes": figures["decode_peak_bytes"], "prefill_peak_bytes": figures["prefill_peak_bytes"]}


def _k(context: int) -> str:
    return f"{context // 1024}k"


def _fits(value: int, budget: int) -> str:
    return format_bytes(value) + ("" if value <= budget else " ✗")


def model_section(name: str, path: str, dtype: str, budget: int) -> list[str]:
    cells = {(b, c): predicted(path, b, c, dtype) for b in BATCHES for c in CONTEXTS}
    cfg = config(path, 1, CONTEXTS[0], dtype)
    d = cfg["width"] // cfg["heads"]
    itemsize = np.dtype(dtype).itemsize
    formula = 2 * cfg["depth"] * cfg["kv_heads"] * d * itemsize
    per_token = {cells[key]["kv_cache_bytes"] / (key[0] * key[1]) for key in cells}
    if per_token != {formula}:  # the page states one figure: the predictor must give it everywhere
        raise AssertionError(f"{name}: cache per token {sorted(per_token)} is not 2·L·kv·d·itemsize = {formula}")
    params = cells[(1, CONTEXTS[0])]["parameter_bytes"]
    header = "| batch \\ context | " + " | ".join(_k(c) for c in CONTEXTS) + " |"
    rule = "|---|" + "--:|" * len(CONTEXTS)
    lines = [f"### {name}", "",
             f"`{path}`: {cfg['depth']} layers, hidden {cfg['width']}, {cfg['heads']} heads, {cfg['kv_heads']} K/V heads "
             f"(d = {d}), vocabulary {cfg['vocab']}; parameters {format_bytes(params)} ({params:,} B) in {dtype}. "
             f"**KV cache per token per sequence: {formula:,} B** = 2 · {cfg['depth']} layers · {cfg['kv_heads']} "
             f"K/V heads · {d} · {itemsize} B, the predictor's cache ÷ (batch · "
             "context) in every cell below.", "",
             "KV cache (predicted):", "", header, rule]
    for b in BATCHES:
        lines.append(f"| {b} | " + " | ".join(format_bytes(cells[(b, c)]["kv_cache_bytes"]) for c in CONTEXTS) + " |")
    lines += ["", f"Total: the decode step's peak (predicted: weights, the full cache, the step's working memory; ✗ "
                  f"above the budget {format_bytes(budget)}):", "", header, rule]
    for b in BATCHES:
        lines.append(f"| {b} | " + " | ".join(_fits(cells[(b, c)]["decode_peak_bytes"], budget) for c in CONTEXTS)
                     + " |")
    alone = (f" The parameters alone ({format_bytes(params)}) exceed the budget, so nothing fits."
             if params > budget else "")
    lines += ["", f"The largest context that fits the budget {format_bytes(budget)}, per batch (of the contexts "
                  "above; — none): by the decode step's peak, and by the whole generation's, whose eager prefill "
                  "computes the prompt's scores, b · heads · prompt_len · context values per layer." + alone, "",
              "| batch | decode step fits up to | its peak there | whole generation (eager prefill) fits up to "
              "| its peak there |", "|---|--:|--:|--:|--:|"]
    for b in BATCHES:
        row = [str(b)]
        for column in ("decode_peak_bytes", "prefill_peak_bytes"):
            fitting = [c for c in CONTEXTS if max(cells[(b, c)]["decode_peak_bytes"],
                                                  cells[(b, c)][column]) <= budget]
            top = fitting[-1] if fitting else None
            row += [_k(top), format_bytes(max(cells[(b, top)]["decode_peak_bytes"], cells[(b, top)][column]))] \
                if top else ["—", "—"]
        lines.append("| " + " | ".join(row) + " |")
    return lines + [""]


def block(dtype: str = "float32", budget: str = "80GB") -> str:
    """The generated block, markers included."""
    budget_bytes = parse_bytes(budget, "--budget")
    lines = [f"<!-- generation-table:start (python tools/generation_table.py --dtype {dtype} --budget {budget}) -->",
             "", f"**Predicted in {dtype}**, budget `--budget {budget}` = {budget_bytes:,} B; "
                 f"batch {BATCHES[0]}–{BATCHES[-1]} × context {_k(CONTEXTS[0])}–{_k(CONTEXTS[-1])} tokens, a static "
                 f"cache of exactly the context, {NEW_TOKENS} new tokens (the decode step reads the full cache).", ""]
    for name, path in MODELS:
        lines += model_section(name, path, dtype, budget_bytes)
    return "\n".join(lines + [END])


def page_block(text: str) -> tuple[str, str, str] | None:
    """(the page's block, its dtype, its budget), or None when the page has no block."""
    match = START.search(text)
    if match is None or END not in text[match.start():]:
        return None
    stop = text.index(END, match.start()) + len(END)
    return text[match.start():stop], match.group(1), match.group(2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="(the page's, else float32)")
    parser.add_argument("--budget", default=None, help="(the page's, else 80GB)")
    parser.add_argument("--write", action="store_true", help=f"rewrite the block in {PAGE.relative_to(ROOT)}")
    parser.add_argument("--check", action="store_true", help="exit 1 when the page's block differs")
    args = parser.parse_args(argv)
    text = PAGE.read_text(encoding="utf-8") if PAGE.is_file() else ""
    found = page_block(text)
    dtype = args.dtype or (found[1] if found else "float32")
    budget = args.budget or (found[2] if found else "80GB")
    try:
        parse_bytes(budget, "--budget")
    except ValueError as exc:
        parser.error(str(exc))
    new = block(dtype, budget)
    if args.check:
        return 0 if found and found[0] == new else 1
    if args.write:
        if found is None:
            parser.error(f"{PAGE}: no generation-table block to rewrite")
        PAGE.write_text(text.replace(found[0], new), encoding="utf-8")
        return 0
    print(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
