"""`python -m benchmarks.predict_cost`: what predicting a huge step costs (seconds, traced MB).

The predictor runs the engine on shape-only arrays, so its cost must not grow with the arrays' sizes: a
depth-96, width-12288, batch-2048 float32 MLP step with Adam (a 232 GB step) is predicted in well under a second
and a few MB of Python objects. Nor with the depth: repeated blocks are predicted once (nn.repeat), so an MLP of
10⁵ layers, GPT-2 small, a GPT of 80 layers at GPT-3's width (12288, 96 heads, 2048 tokens) and Llama-3-70B
(experiments/configs, 80 layers, 4096 tokens) cost about what a few blocks do (`DEEP`; one row each, and the depth-1000 MLP with every block run too, for what memoisation saves).
Timed in-process after one small warm-up prediction (imports, numpy's dtype caches); the traced peak is
tracemalloc's over one more prediction.
"""
from __future__ import annotations

import gc
import statistics
import time
import tracemalloc
from pathlib import Path
from typing import Any

from memstudy.measure.predict import predict
from memstudy.nn.models.hf_config import hf_config_fields

HUGE = dict(depth=96, width=12288, batch_size=2048, dtype="float32", optimizer="adam")
LLAMA_70B = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "llama-3-70b.json"
LLAMA_8B = LLAMA_70B.parent / "llama-3-8b.json"
LLAMA_8B_STEP = dict(seq_len=4096, batch_size=1, dtype="bfloat16", master_weights=True, optimizer="adam")
LORA_QV = dict(lora_rank=16, lora_targets="q_proj,v_proj")
GPT2_SMALL = dict(model="gpt", depth=12, width=768, heads=12, seq_len=1024, vocab=50257, batch_size=8,
                  optimizer="adam")
# figure -> (configuration, memoised, target seconds or None): issue 21 item 4 (any depth in <= 2 s) and issue 28
# item 5 (GPT-2 small <= 0.1 s, an 80-layer model <= 2 s)
DEEP = {
    "predict_mlp_depth1000_seconds": (dict(depth=1000, width=256, batch_size=64), True, 2.0),
    "predict_mlp_depth1000_every_block_seconds": (dict(depth=1000, width=256, batch_size=64), False, None),
    "predict_mlp_depth100000_seconds": (dict(depth=100000, width=256, batch_size=64), True, 2.0),
    "predict_gpt2_small_seconds": (GPT2_SMALL, True, 0.1),
    "predict_gpt80_seconds": (dict(model="gpt", depth=80, width=12288, heads=96, seq_len=2048, vocab=50257,
                                   batch_size=1, optimizer="adam"), True, 2.0),
    "predict_llama70b_seconds": ({**hf_config_fields(LLAMA_70B)[1], "model": "llama", "seq_len": 4096, "batch_size": 1,
                                  "optimizer": "adam"}, True, 2.0),
    # issue 24 item 7: docs/llama.md's worked example, each variant predicted in under 3 s
    **{f"predict_llama8b_{key}_seconds": ({**hf_config_fields(LLAMA_8B)[1], "model": "llama", **LLAMA_8B_STEP,
                                           **change}, True, 3.0)
       for key, change in (("full", {}), ("lora16", LORA_QV), ("lora16_selective", {**LORA_QV, "checkpoint": "selective"}),
                           ("lora16_every1", {**LORA_QV, "checkpoint": "every:1"}))},
}


# figure -> (`memstudy predict` arguments, target seconds or None): the same models from the command line, a fresh
# process each (interpreter start, imports, the config file read, the table printed): what a user waits for
CLI = {
    "predict_cli_llama70b_seconds": (["--hf-config", str(LLAMA_70B), "--seq-len", "4096", "--batch", "1",
                                      "--optimizer", "adam"], 2.0),
    "predict_cli_gpt2_small_seconds": (["--hf-config", str(LLAMA_70B.parent / "gpt2.json"), "--seq-len", "1024",
                                        "--batch", "8", "--optimizer", "adam"], None),
}


def cli_seconds(args: list[str], samples: int = 3) -> dict[str, Any]:
    """Wall seconds of `python -m memstudy predict ARGS` in a fresh process (median, min, max of `samples`, after
    one unmeasured run that warms the page cache); `error` is '' or the failure's last line."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "memstudy", "predict", *args]
    seconds, error = [], ""
    for sample in range(samples + 1):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            error = (done.stderr.strip().splitlines() or [f"exited {done.returncode}"])[-1]
            break
        if sample:
            seconds.append(time.perf_counter() - start)
    if not seconds:
        return {"seconds": None, "error": error or "no run", "samples": 0}
    return {"seconds": statistics.median(seconds), "seconds_min": min(seconds), "seconds_max": max(seconds),
            "samples": len(seconds), "error": error}


def measure(config: dict[str, Any] = HUGE, samples: int = 3, memoise: bool = True,
            traced: bool = True) -> dict[str, Any]:
    """Seconds per prediction (median, min, max of `samples`), the traced peak bytes (with `traced`), and the
    prediction; `memoise`: repeated blocks predicted once (False: every block run)."""
    predict(dict(config, depth=2))  # warm-up: imports and dtype-resolution caches
    seconds = []
    for _ in range(samples):
        gc.collect()
        start = time.perf_counter()
        prediction = predict(config, memoise=memoise)
        seconds.append(time.perf_counter() - start)
    if not traced:
        return {"seconds": statistics.median(seconds), "seconds_min": min(seconds), "seconds_max": max(seconds),
                "samples": samples, "prediction": prediction}
    tracemalloc.start()
    try:
        predict(config, memoise=memoise)
        traced_peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return {"seconds": statistics.median(seconds), "seconds_min": min(seconds), "seconds_max": max(seconds),
            "samples": samples, "traced_peak_bytes": traced_peak_bytes, "prediction": prediction}


def main() -> int:
    result = measure()
    peak_gb = result["prediction"]["predicted_peak_bytes"] / 1e9
    print(f"predict depth 96, width 12288, batch 2048, float32, adam (predicted peak {peak_gb:.1f} GB): "
          f"{result['seconds']:.3f} s (median of {result['samples']}), "
          f"traced {result['traced_peak_bytes'] / 2 ** 20:.2f} MB")
    for figure, (config, memoise, goal) in DEEP.items():
        result = measure(config, 3, memoise, traced=False)
        print(f"{figure}: {result['seconds']:.3f} s (median of 3; target {goal} s)")
    for figure, (args, goal) in CLI.items():
        result = cli_seconds(args)
        shown = "failed: " + result["error"] if result["seconds"] is None else f"{result['seconds']:.3f} s"
        print(f"{figure}: {shown} (median of {result['samples']}, a fresh process each; target {goal} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
