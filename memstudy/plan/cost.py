"""The plan's cost model: a step's estimated seconds on one rank, from what its graph computes and moves.

    step_seconds = (3 · forward_flops + recomputed_flops) / device_flops / (1 − bubble)
                   + communication_bytes / link_bytes_per_second

- forward_flops: the FLOPs of every op the rank's forward ran (autograd/flops.py: 2·m·n·k per matrix product,
  one per output element otherwise), counted by the ledger; backward taken as twice the forward (the 6·N·tokens
  rule of Kaplan et al. 2020, "Scaling Laws for Neural Language Models", §2.1), so a step costs 3 forwards;
- recomputed_flops: the FLOPs of the ops a checkpoint strategy ran again in backward, counted the same way from
  the recompute phase of the same graph (selective recomputes the attention core, every:1 and sqrt whole layers);
- bubble: the pipeline's idle fraction under 1F1B, (p − 1)/(m + p − 1) for p stages and m microbatches
  (Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU Clusters", §2.2.1); 0 without
  pipeline stages;
- communication_bytes: the bytes the rank's collectives move in the step (0 on one device), not overlapped with
  compute (an upper bound on their cost).

device_flops defaults to 312 TFLOP/s (NVIDIA A100's dense bfloat16 tensor-core peak, its datasheet) and
link_bytes_per_second to 300 GB/s within a node (A100 NVLink: 600 GB/s total, 300 GB/s each way) and 25 GB/s
between nodes (200 Gb/s InfiniBand HDR), the slower one when the plan's devices span nodes. They set the exchange
rate between FLOPs and bytes; the model prices neither precision (a 32-bit matmul is not slower here) nor overlap,
and it ranks, it does not promise seconds.
"""
from __future__ import annotations

from dataclasses import dataclass

from .evaluate import RankResult

DEVICE_FLOPS = 312e12  # NVIDIA A100 datasheet: bfloat16 tensor-core peak, dense
INTRA_NODE_BYTES_PER_SECOND = 300e9  # A100 NVLink 3: 600 GB/s bidirectional
INTER_NODE_BYTES_PER_SECOND = 25e9  # InfiniBand HDR, 200 Gb/s per adapter
BACKWARD_PER_FORWARD = 2.0  # backward ≈ 2 forwards (Kaplan et al. 2020: 6N FLOPs per token = 2N forward + 4N back)


@dataclass(frozen=True)
class CostModel:
    device_flops: float = DEVICE_FLOPS
    link_bytes_per_second: float = INTRA_NODE_BYTES_PER_SECOND

    @classmethod
    def for_machines(cls, devices: int, devices_per_node: int | None,
                     device_flops: float = DEVICE_FLOPS) -> "CostModel":
        """The intra-node link when every device is in one node (or no node size is given), else the inter-node."""
        spans_nodes = devices_per_node is not None and devices > devices_per_node
        return cls(device_flops, INTER_NODE_BYTES_PER_SECOND if spans_nodes else INTRA_NODE_BYTES_PER_SECOND)


def bubble_fraction(pipeline_stages: int, microbatches: int) -> float:
    """1F1B's idle fraction (p − 1)/(m + p − 1); 0 for one stage."""
    p, m = pipeline_stages, max(microbatches, 1)
    return 0.0 if p <= 1 else (p - 1) / (m + p - 1)


@dataclass(frozen=True)
class Cost:
    """One configuration's cost terms and the estimate they make (module docstring)."""

    compute_flops: float  # 3 · forward FLOPs
    recomputed_flops: int
    communication_bytes: int
    bubble: float
    step_seconds: float


def step_cost(result: RankResult, pipeline_stages: int, microbatches: int, model: CostModel) -> Cost:
    compute = (1 + BACKWARD_PER_FORWARD) * result.forward_flops
    bubble = bubble_fraction(pipeline_stages, microbatches)
    seconds = (compute + result.recomputed_flops) / model.device_flops / (1 - bubble) \
        + result.communication_bytes / model.link_bytes_per_second
    return Cost(compute, result.recomputed_flops, result.communication_bytes, bubble, seconds)


__all__ = ["BACKWARD_PER_FORWARD", "Cost", "CostModel", "DEVICE_FLOPS", "INTER_NODE_BYTES_PER_SECOND",
           "INTRA_NODE_BYTES_PER_SECOND", "bubble_fraction", "step_cost"]
