"""The real-scale generation table of docs/generation.md, predicted: Llama-3-8B and Llama-3-70B (experiments/configs/),
batch 1-64, context 1k-128k tokens, in one dtype.

Every number is the predictor's (`memory.predict.predicted_account`: the engine run on shape-only arrays under the
ledger): one generation per batch × context with a static cache of exactly `context` positions (prompt_len =
context - NEW_TOKENS, NEW_TOKENS tokens, so one decode step reads a full cache), from which it reads the KV cache's
bytes, the decode step's peak and the prefill's peak (memory/generation.py). The cache per token is the predicted
cache ÷ (batch · context), and the page checks it against 2 · layers · kv_heads · head_dim · itemsize. A context
above a config's max_position_embeddings is run as it is (the rotary embedding has no position table, so the bytes
are those of a long-context model of the same shapes).

    python tools/generation_table.py                          # print the page's table (bfloat16, budget 80GB)
    python tools/generation_table.py --dtype float32 --budget 40GB   # the same in another dtype or budget

docs/generation.md holds it in bfloat16 with an 80 GB budget as the `generation-table` block of tools.published
(`make readme` rewrites it; tests/test_generation_table.py checks it).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from memstudy.autograd.precision import dtype as as_dtype  # noqa: E402
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
DTYPE, BUDGET = "bfloat16", "80GB"  # the page's: how the models are served (an 80 GB accelerator)


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
    itemsize = as_dtype(dtype).itemsize
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


def lines(dtype: str = DTYPE, budget: str = BUDGET) -> list[str]:
    """The page's block (markers aside)."""
    budget_bytes = parse_bytes(budget, "--budget")
    out = [f"**Predicted in {dtype}**, budget `--budget {budget}` = {budget_bytes:,} B; "
           f"batch {BATCHES[0]}–{BATCHES[-1]} × context {_k(CONTEXTS[0])}–{_k(CONTEXTS[-1])} tokens, a static "
           f"cache of exactly the context, {NEW_TOKENS} new tokens (the decode step reads the full cache).", ""]
    for name, path in MODELS:
        out += model_section(name, path, dtype, budget_bytes)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=DTYPES, default=DTYPE)
    parser.add_argument("--budget", default=BUDGET)
    args = parser.parse_args(argv)
    try:
        parse_bytes(args.budget, "--budget")
    except ValueError as exc:
        parser.error(str(exc))
    print("\n".join(lines(args.dtype, args.budget)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
