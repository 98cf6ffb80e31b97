"""The worked example of docs/attention.md: one GPT step's memory, predicted, term by term beside Megatron-LM's formula.

`python -m tools.worked` prints the tables for GPT-2 small (depth 12, width 768, heads 12, seq_len 1024,
vocab 50257, batch 8, Adam, dropout 0.1) in float32, and in bfloat16 with float32 master weights (the paper's own
16-bit activations: its 34 and 5 without conversion), then ZeRO's model states (2 Ψ + 2 Ψ + 12 Ψ bytes) for GPT-2
small and a GPT of about 7.5 B parameters beside the paper's 120 GB, all from the shape-only predictor (the engine
run on MetaArrays under the ledger: the ledger's own account, no numbers computed); `make readme` (tools.published,
block `gpt2`) writes them into docs/attention.md. Every figure in the block comes from those accounts or from
`megatron`'s formula.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable

from memstudy.units import format_bytes
from memstudy.findings import megatron

GPT2_SMALL = {"model": "gpt", "depth": 12, "width": 768, "heads": 12, "seq_len": 1024, "vocab": 50257,
              "batch_size": 8, "dtype": "float32", "optimizer": "adam", "dropout": 0.1}
GPT2_SMALL_BF16 = {**GPT2_SMALL, "dtype": "bfloat16", "master_weights": True}  # Megatron-LM's and ZeRO's setting
# about 7.5 B parameters (ZeRO's Table 1 model size): GPT-2's shape scaled to 36 layers of width 4096
GPT_7_5B = {**GPT2_SMALL_BF16, "depth": 36, "width": 4096, "heads": 32, "batch_size": 1}
ZERO_PAPER_GB = 120  # ZeRO (Rajbhandari et al. 2020), Table 1: 7.5 B parameters, N = 1, 16 bytes per parameter
VARIANTS = (("train", {}), ("inference", {"mode": "inference"}), ("selective", {"checkpoint": "selective"}),
            ("sqrt", {"checkpoint": "sqrt"}))


def _predicted(config: dict[str, Any]) -> Any:
    from memstudy.measure.predict import predicted_account

    return predicted_account(config)


def accounts(raw: dict[str, Any], account_of: Callable[[dict[str, Any]], Any] = _predicted
             ) -> tuple[dict[str, Any], dict[str, Any], dict[str, float]]:
    """(normalised configs, accounts, seconds) of the four variants: train, inference, selective, sqrt."""
    from memstudy.nn.models.registry import normalize

    configs, results, seconds = {}, {}, {}
    for name, change in VARIANTS:
        configs[name] = normalize({**raw, **change})
        start = time.perf_counter()
        results[name] = account_of(configs[name])
        seconds[name] = time.perf_counter() - start
    return configs, results, seconds


def _b(value: float) -> str:
    return f"{format_bytes(value)} ({int(value):,} B)"


def _precision(config: dict[str, Any]) -> str:
    return config["dtype"] + (" with float32 master weights" if config.get("master_weights") else "")


def table_lines(configs: dict[str, Any], results: dict[str, Any], label: str = "predicted") -> list[str]:
    from memstudy.autograd.precision import dtype as as_dtype

    config, train = configs["train"], results["train"]
    s, b, h, a, depth = (config["seq_len"], config["batch_size"], config["width"], config["heads"], config["depth"])
    itemsize = as_dtype(config["dtype"]).itemsize
    dropout = config["dropout"]
    blocks = [megatron.block_rows(train, layer, s, b, h, a, itemsize, dropout) for layer in range(depth)]
    same = all([r.ledger_bytes for r in rows] == [r.ledger_bytes for r in blocks[0]] for rows in blocks)
    registered = train.registered_bytes
    lines = [f"GPT-2 small: depth {depth}, width {h}, heads {a}, seq_len {s}, vocab {config['vocab']}, batch {b}, "
             f"{_precision(config)}, {config['optimizer']}, dropout {dropout:g}; {label} by `memstudy predict` (the "
             "engine run on shape-only arrays under the ledger). Per layer: block 0's buffers held after forward, "
             "sorted into the paper's terms (`memstudy.findings.megatron`)"
             + ("; every block holds the same." if same else "; NOT every block holds the same."), "",
             "| what | per layer | × " + str(depth) + " layers / total | formula |", "|---|--:|--:|--:|",
             f"| parameters | | {_b(registered['parameter'])} | |",
             f"| gradients (largest live) | | {_b(train.max_by_category['gradient'])} | |",
             f"| {config['optimizer']} state" + (" (float32 master weights and moments)" if config.get("master_weights")
                                                 else "") + f" | | {_b(registered['optimizer_state'])} | |"]
    in_formula = 0
    for i, r in enumerate(blocks[0]):
        total = sum(rows[i].ledger_bytes for rows in blocks)
        formula = "" if r.formula_bytes is None else format_bytes(r.formula_bytes * depth)
        if r.terms:
            in_formula += total
        lines.append(f"| activations: {r.label} | {format_bytes(r.ledger_bytes)} | {format_bytes(total)} | {formula} |")
    formula_total = depth * megatron.layer_bytes(s, b, h, a, itemsize, dropout)
    lines.append(f"| **activations in the formula's terms** | {format_bytes(in_formula // depth)} | "
                 f"**{format_bytes(in_formula)}** | **{format_bytes(formula_total)}** |")
    outside = megatron.outside_rows(train, depth)
    for r in outside:
        lines.append(f"| {r.label} | | {format_bytes(r.ledger_bytes)} | |")
    lines += [f"| **activations held for backward (ledger's largest live)** | | **{_b(train.activation_bytes)}** | |",
              f"| **training step: total peak** | | **{_b(train.peak_bytes)}** | |"]
    for name, text in (("inference", "inference (no_grad): total peak"),
                       ("selective", "`--checkpoint selective`: activations / total peak"),
                       ("sqrt", "`--checkpoint sqrt`: activations / total peak")):
        acc = results[name]
        value = _b(acc.peak_bytes) if name == "inference" else \
            f"{format_bytes(acc.activation_bytes)} / {format_bytes(acc.peak_bytes)}"
        lines.append(f"| {text} | | {value} | |")
    linear, quadratic = megatron.coefficients(itemsize, dropout)
    removed = megatron.fraction_removed(s, a, h)
    selective_blocks = sum(megatron.total(megatron.block_rows(results["selective"], layer, s, b, h, a, itemsize,
                                                              dropout)) for layer in range(depth))
    measured_removed = 1 - selective_blocks / in_formula
    match = "equals" if in_formula == formula_total else "does NOT equal"
    papers = (f"the paper's own 34 and 5: {itemsize}-byte activations and 1-byte masks, no conversion"
              if (linear, quadratic) == (34, 5) else
              f"{linear} and {quadratic} are the paper's 34 and 5 for {itemsize}-byte activations and 1-byte masks")
    lines += ["", f"The ledger's activations in the formula's terms ({format_bytes(in_formula)}) {match} the "
              f"formula's {depth} × s·b·h·({linear} + {quadratic}·a·s/h) = {format_bytes(formula_total)} "
              f"({in_formula:,} B against {formula_total:,} B; {papers}). Here a·s/h = {a * s / h:g}, so the a·s²·b "
              "terms "
              f"are {quadratic * a * s / h / (linear + quadratic * a * s / h):.0%} of them. Selective recomputation "
              f"keeps {format_bytes(selective_blocks)} in the blocks: it removes {measured_removed:.1%} of "
              f"their activations (the paper's units, 5as/h ÷ (34 + 5as/h): {removed:.1%})."
              + _beyond(outside, registered, in_formula // depth, config["optimizer"])
              + (_float32_parts(blocks[0], outside) if itemsize == 2 else "")]
    return lines


def _float32_parts(block: list[Any], outside: list[Any]) -> str:
    """What stays float32 in a 16-bit step, outside the formula."""
    statistics = next(r.ledger_bytes for r in block if r.label == megatron.LN_STATISTICS)
    probs = next(r.ledger_bytes for r in outside if r.label.startswith("loss:"))
    return (f" What stays float32: the layer norms' mean and 1/std ({format_bytes(statistics)} per layer, 4 B each) "
            f"and the loss's softmax of the logits ({format_bytes(probs)}: the loss reads the 16-bit logits in "
            "float32, as Megatron-LM's and transformers' losses do).")


def zero_lines(models: list[tuple[str, dict[str, Any], Any]]) -> list[str]:
    """ZeRO's model states per category, predicted, beside 2/2/12 bytes × Ψ and the paper's 120 GB for 7.5 B."""
    lines = ["Model states with Adam and float32 master weights, ZeRO's accounting (Rajbhandari et al. 2020: 2 Ψ "
             "16-bit parameters + 2 Ψ gradients + 12 Ψ optimizer state, the float32 master weights, momentum and "
             "variance), predicted:", "",
             "| model | Ψ (parameters) | parameters | gradients (largest live) | Adam state | total | ÷ Ψ |",
             "|---|--:|--:|--:|--:|--:|--:|"]
    for name, config, account in models:
        registered = account.registered_bytes
        psi = registered["parameter"] // 2
        states = (registered["parameter"], account.max_by_category["gradient"], registered["optimizer_state"])
        per = "/".join(f"{v / psi:g}" for v in states)
        lines.append(f"| {name} | {psi:,} | " + " | ".join(f"{v / 1e9:.2f} GB" for v in states)
                     + f" | **{sum(states) / 1e9:.2f} GB** | {per} |")
    name, config, account = models[-1]
    psi = account.registered_bytes["parameter"] // 2
    lines += ["", f"{name}: depth {config['depth']}, width {config['width']}, heads {config['heads']}, seq_len "
              f"{config['seq_len']}, vocab {config['vocab']} (GB = 10⁹ B). The paper's Table 1 gives {ZERO_PAPER_GB} "
              f"GB for 7.5 B parameters at 16 bytes each; 16 × Ψ here is {16 * psi / 1e9:.2f} GB for Ψ = "
              f"{psi / 1e9:.2f} B."]
    return lines


def _beyond(outside: list[Any], registered: dict[str, int], per_layer: int, optimizer: str) -> str:
    """What the formula does not count, in layers' worth of the formula's terms."""
    probs = next(r.ledger_bytes for r in outside if r.label.startswith("loss:"))
    parts = [f"the logits' softmax ({format_bytes(probs)}, {probs / per_layer:.1f} layers' worth)"]
    if registered["optimizer_state"]:
        state = registered["optimizer_state"]
        parts.append(f"{optimizer}'s state ({format_bytes(state)}, {state / per_layer:.1f} layers' worth)")
    return " Beyond the formula: " + " and ".join(parts) + "."


def all_lines() -> tuple[list[str], dict[str, float]]:
    """The README block's lines (float32 table, bfloat16 table, ZeRO's model states) and each prediction's seconds."""
    from memstudy.nn.models.registry import normalize

    configs, results, seconds = accounts(GPT2_SMALL)
    lines = table_lines(configs, results)
    configs16, results16, seconds16 = accounts(GPT2_SMALL_BF16)
    lines += ["", *table_lines(configs16, results16)]
    start = time.perf_counter()
    big = normalize(GPT_7_5B)
    big_account = _predicted(big)
    seconds.update({f"bfloat16 {k}": v for k, v in seconds16.items()}, **{"7.5 B": time.perf_counter() - start})
    lines += ["", *zero_lines([("GPT-2 small", configs16["train"], results16["train"]),
                               ("GPT, about 7.5 B", big, big_account)])]
    return lines, seconds


def main(argv: list[str]) -> int:
    if argv[1:]:
        print("usage: python -m tools.worked  (docs/attention.md's block: make readme)", file=sys.stderr)
        return 2
    lines, seconds = all_lines()
    print("\n".join(lines))
    print(f"\n(predicted in {', '.join(f'{k} {v:.2f} s' for k, v in seconds.items())})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
