"""One convolution's forward and backward at the CNN benchmark's three layers, per conv_algo, side by side.

`OPENBLAS_NUM_THREADS=1 python -m benchmarks.conv_layers`: for each layer (batch 32, float32, 3×3, padding 1), every
algorithm in interleaved blocks of ten steps for 11 rounds; prints each one's median time and its median per-round
ratio to per_example, and the cores other processes kept busy meanwhile (docs/cnn.md quotes a run).
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from memstudy.autograd import Tensor, apply, ops
from memstudy.measure.load import ForeignLoad

BATCH = 32
LAYERS = [(3, 16, 32), (16, 32, 16), (32, 64, 8)]  # (in channels, out channels, side): benchmarks.cnn's blocks
ALGOS = [("per_example", None), ("batched", None), ("batched", 8), ("batched", 2), ("batched", 1)]


def main(rounds: int = 11, steps: int = 10) -> None:
    rng = np.random.default_rng(0)
    load = ForeignLoad().start()
    for c, o, side in LAYERS:
        x = rng.standard_normal((BATCH, c, side, side)).astype(np.float32)
        weight = Tensor(rng.standard_normal((o, c, 3, 3)).astype(np.float32), requires_grad=True)
        grad = rng.standard_normal((BATCH, o, side, side)).astype(np.float32)
        need_x = c != 3  # the first block's input is the images: no gradient, as in the CNN

        def step(algo: str, block: int | None) -> None:
            weight.grad = None
            apply(ops.Conv2d, Tensor(x, requires_grad=need_x), weight, padding=1, algo=algo, block=block).backward(grad)

        medians: dict[tuple, list[float]] = {a: [] for a in ALGOS}
        for a in ALGOS:
            for _ in range(3):
                step(*a)
        for _ in range(rounds):
            for a in ALGOS:
                times = []
                for _ in range(steps):
                    start = time.perf_counter()
                    step(*a)
                    times.append(time.perf_counter() - start)
                medians[a].append(statistics.median(times))
        base = medians[ALGOS[0]]
        cells = []
        for a in ALGOS:
            ratio = statistics.median(v / b for v, b in zip(medians[a], base))
            name = a[0] + ("" if a[1] is None else f":{a[1]}")
            cells.append(f"{name} {statistics.median(medians[a]) * 1e3:.2f} ms (÷ per_example {ratio:.2f})")
        print(f"{c} -> {o} channels, {side}x{side}: " + "; ".join(cells))
    print(f"others' load {load.cores():.2f} cores")


if __name__ == "__main__":
    main()
