"""docs/parallel.md's ZeRO blocks, from the predictor: `python -m tools.zero_tables` prints them.

- Table 1 of ZeRO (Rajbhandari et al. 2020): model states per device for Ψ = 7.5 B, 128 B and 1 T parameters and
  N = 1 … 1024 data-parallel ranks, each stage; the paper's figures are its formulas at its Ψ ((2 + 2 + K)·Ψ,
  4Ψ + KΨ/N, 2Ψ + (2 + K)Ψ/N, (4 + K)Ψ/N with K = 12, GB = 10⁹ B), memstudy's are one rank's registered parameters,
  optimiser state and largest live gradients, predicted for a GPT the predictor builds at about that size (its
  exact Ψ stated).
- DeepSpeed's estimators (`estimate_zero2_model_states_mem_needs`, `estimate_zero3_model_states_mem_needs`, without
  offload, at DEEPSPEED_COMMIT) beside memstudy's per-rank prediction for three configurations, each difference
  itemised.
"""
from __future__ import annotations

import sys
from typing import Any

from memstudy.findings.parallel import zero_states_bytes as paper_states_bytes  # ZeRO's Table 1, in one place

# deepspeed/runtime/zero/stage_1_and_2.py and stage3.py at this commit of github.com/deepspeedai/DeepSpeed
DEEPSPEED_COMMIT = "edaa7221267243c7be7fb49c5d5f5c4fb97b4641"
PAPER_PSI = (("7.5 B", 7.5e9), ("128 B", 128e9), ("1 T", 1e12))
RANKS = (1, 4, 16, 64, 256, 1024)
STAGES = ("baseline", "P_os", "P_os+g", "P_os+g+p")
# GPT-2-shaped models (nanoGPT's GPT, vocab 50257) of about ZeRO's three sizes; short sequences: model states only
GPT_BASE = {"model": "gpt", "seq_len": 8, "vocab": 50257, "batch_size": 1, "dtype": "bfloat16",
            "master_weights": True, "optimizer": "adam", "dropout": 0.0}
GPT_SIZES = (("7.5 B", {"depth": 36, "width": 4096, "heads": 32}),
             ("128 B", {"depth": 102, "width": 10240, "heads": 80}),
             ("1 T", {"depth": 128, "width": 25600, "heads": 160}))


def predicted_states(config: dict[str, Any]) -> dict[str, int]:
    """One rank's model states, predicted: parameters, largest live gradients, optimiser state (bytes), and Ψ."""
    from memstudy.measure.predict import predict

    p = predict(config)
    return {"parameter": p["parameter_bytes"], "gradient": p["gradient_bytes"],
            "optimizer_state": p["optimizer_state_bytes"], "psi": p["parameter_count"]}


def psi_of(shape: dict[str, Any]) -> int:
    return predicted_states({**GPT_BASE, **shape})["psi"]


def table_1_lines() -> list[str]:
    lines = ["Model states per device, GB (10⁹ B), bfloat16 parameters and gradients with float32 master weights and "
             "Adam (ZeRO's mixed precision). *paper*: ZeRO's Table 1 formulas at its Ψ; *memstudy*: rank 0's "
             "registered parameters + optimiser state + largest live gradients, predicted for the GPT below "
             "(`--data-parallel N --zero S`).", ""]
    for (name, psi), (_, shape) in zip(PAPER_PSI, GPT_SIZES):
        config = {**GPT_BASE, **shape}
        ours_psi = psi_of(shape)
        lines += [f"**Ψ = {name}**: memstudy's GPT of depth {shape['depth']}, width {shape['width']}, heads "
                  f"{shape['heads']}, vocab {GPT_BASE['vocab']}: Ψ = {ours_psi:,}.", "",
                  "| N | " + " | ".join(f"{s} paper | {s} memstudy" for s in STAGES) + " |",
                  "|--:|" + "--:|--:|" * len(STAGES)]
        for n in RANKS:
            cells = []
            for stage in range(4):
                ours = predicted_states({**config, "data_parallel": n, "zero": stage})
                total = ours["parameter"] + ours["gradient"] + ours["optimizer_state"]
                cells += [_gb(paper_states_bytes(psi, n, stage)), _gb(total)]
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("memstudy's stage 3 keeps parameters of fewer than 10⁵ elements (the layer norms' and biases) whole "
                 "on every rank, as DeepSpeed's `stage3_param_persistence_threshold` does, and pads each parameter to "
                 "N equal parts: both put it a little above 16Ψ/N at large N.")
    return lines


def _gb(value_bytes: float) -> str:
    """GB (10⁹ B) as the paper prints them: 2,048, 120, 31.4, 1.88, 0.47."""
    gb = value_bytes / 1e9
    return f"{gb:,.0f}" if gb >= 100 else f"{gb:.1f}" if gb >= 10 else f"{gb:.3g}"


def deepspeed_zero2_bytes(psi: int, n: int) -> int:
    """estimate_zero2_model_states_mem_needs, cpu_offload=False: 2Ψ + 18Ψ/N (the docs' pre-2024 4Ψ + 16Ψ/N)."""
    return 2 * psi + int(18 * psi / n)


def deepspeed_zero3_bytes(psi: int, largest_layer: int, n: int) -> int:
    """estimate_zero3_model_states_mem_needs, cpu_offload=False: 4·largest layer + 18Ψ/N."""
    return 4 * largest_layer + int(18 * psi / n)


# three shared configurations: (label, config)
SHARED = (
    ("GPT 7.5 B, N = 64, ZeRO-2", {**GPT_BASE, **GPT_SIZES[0][1], "seq_len": 2048, "data_parallel": 64, "zero": 2}),
    ("GPT 7.5 B, N = 64, ZeRO-3", {**GPT_BASE, **GPT_SIZES[0][1], "seq_len": 2048, "data_parallel": 64, "zero": 3}),
    ("Llama-3-8B shape, N = 8, ZeRO-3", {"model": "llama", "depth": 32, "width": 4096, "heads": 32, "kv_heads": 8,
                                         "ffn": 14336, "vocab": 128256, "seq_len": 4096, "batch_size": 1,
                                         "dtype": "bfloat16", "master_weights": True, "optimizer": "adam",
                                         "data_parallel": 8, "zero": 3}),
)


def largest_module_parameters(config: dict[str, Any]) -> int:
    """The most parameters one module holds itself (DeepSpeed's `largest_layer_params`: over model.modules(),
    p.numel() for p in m.parameters(recurse=False)); the model built shape-only, every block alike."""
    from memstudy.autograd import meta
    from memstudy.config import get_family, normalize
    from memstudy.autograd.tensor import Tensor
    from memstudy.nn import repeat

    one = normalize({k: v for k, v in config.items() if k not in ("data_parallel", "zero")})
    with meta.meta_mode(), repeat.compressing():
        model = get_family(one["model"]).build(one)
        return max(sum(v.data.size for v in vars(m).values() if isinstance(v, Tensor) and v.is_leaf)
                   for _, m in model.named_modules())


def deepspeed_lines() -> list[str]:
    from memstudy.config import normalize
    from memstudy.measure.predict import predict

    lines = [f"DeepSpeed's estimators (deepspeed/runtime/zero at commit `{DEEPSPEED_COMMIT[:12]}`, no offload): "
             "ZeRO-2 `2Ψ + 18Ψ/N` (the 2 bytes of 16-bit parameters, then 2 + 4 + 4 + 8 for 16-bit and 32-bit "
             "gradients, 32-bit parameters and Adam's moments, sharded; the documentation still prints the "
             "pre-2024 `4Ψ + 16Ψ/N`), ZeRO-3 `4·largest layer + 18Ψ/N`; beside memstudy's per-rank prediction "
             "(GB = 10⁹ B).", "",
             "| configuration | Ψ | DeepSpeed (current) | DeepSpeed docs | memstudy model states | memstudy peak | "
             "what DeepSpeed's figure leaves out (memstudy's bytes at the peak) |",
             "|---|--:|--:|--:|--:|--:|---|"]
    for label, config in SHARED:
        n, stage = config["data_parallel"], config["zero"]
        p = predict(config)
        psi = predict({**config, "data_parallel": 1, "zero": 0, "seq_len": 8})["parameter_count"]
        states = p["parameter_bytes"] + p["gradient_bytes"] + p["optimizer_state_bytes"]
        if stage == 2:
            current, docs = deepspeed_zero2_bytes(psi, n), 4 * psi + 16 * psi // n
        else:
            largest = largest_module_parameters(config)
            current, docs = deepspeed_zero3_bytes(psi, largest, n), None
        split = p["predicted_peak_by_category"]
        missing = ", ".join(f"{name} {split[key] / 1e9:.2f}" for name, key in (
            ("activations", "activation"), ("gradients", "gradient"), ("gathered parameters and buckets",
                                                                       "communication"),
            ("temporaries", "temporary")) if split.get(key))
        normalize(config)
        lines.append(f"| {label} | {psi / 1e9:.3f} B | {current / 1e9:.2f} | "
                     f"{'—' if docs is None else f'{docs / 1e9:.2f}'} | {states / 1e9:.2f} | "
                     f"{p['predicted_peak_bytes'] / 1e9:.2f} | {missing} |")
    lines += ["", "Model states differ by what each counts: DeepSpeed's 18Ψ/N holds a 4-byte float32 gradient "
              "copy per parameter that memstudy's optimiser does not make (it reads the 16-bit gradient into a "
              "float32 chunk, `optim.py`), so memstudy's stage 2 is 2Ψ + 14Ψ/N, ZeRO's Table 1; DeepSpeed's "
              "ZeRO-3 adds four bytes per parameter of the largest module (its gathered 16-bit weights and "
              "gradients) where memstudy counts the gathered buffers that are live, as communication, at the peak. "
              "Neither estimator counts activations, the loss's logits or the collectives' buckets, which the last "
              "column lists from memstudy's prediction (seq_len as stated, batch 1)."]
    return lines


def all_lines() -> list[str]:
    return table_1_lines() + [""] + deepspeed_lines()


def main(argv: list[str]) -> int:
    if argv[1:]:
        print("usage: python -m tools.zero_tables  (docs/parallel.md's blocks: make readme)", file=sys.stderr)
        return 2
    print("\n".join(all_lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
