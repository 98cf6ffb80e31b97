"""One rank's graph (issue 26): its shards, its collectives, its schedule, run under the ledger like any step.

- `collectives.py`: collectives as ops and buffer-level calls whose buffers the ledger files as `communication`,
  through a pluggable backend (a simulated rank for prediction; torch.distributed gloo for real multi-process runs);
- `rank.py`: which rank a row accounts for and what the row says about it;
- `zero.py`: ZeRO stages 1-3 on a workload (optimiser state, gradients, parameters sharded 1/N).
"""
