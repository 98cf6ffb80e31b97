"""`python -m benchmarks.predict_cost`: what predicting a huge step costs (seconds, traced MB).

The predictor runs the engine on shape-only arrays, so its cost must not grow with the arrays' sizes: a
depth-96, width-12288, batch-2048 float32 MLP step with Adam (a 232 GB step) is predicted in well under a second
and a few MB of Python objects. Timed in-process after one small warm-up prediction (imports, numpy's dtype
caches); the traced peak is tracemalloc's over one more prediction.
"""
from __future__ import annotations

import gc
import statistics
import time
import tracemalloc
from typing import Any

from memstudy.memory.predict import predict

HUGE = dict(depth=96, width=12288, batch_size=2048, dtype="float32", optimizer="adam")


def measure(config: dict[str, Any] = HUGE, samples: int = 3) -> dict[str, Any]:
    """Seconds per prediction (median, min, max of `samples`), the traced peak bytes, and the prediction."""
    predict(dict(config, depth=2))  # warm-up: imports and dtype-resolution caches
    seconds = []
    for _ in range(samples):
        gc.collect()
        start = time.perf_counter()
        prediction = predict(config)
        seconds.append(time.perf_counter() - start)
    tracemalloc.start()
    try:
        predict(config)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
