"""PyTorch's side of the benchmark, in its own process (never alternated with numpy in one process).

Run as `python -m benchmarks.torch_worker THREADS [HEAP]` (HEAP: warm, the default, or default; see
benchmarks.heap). It prints one JSON line: {"available": true, "torch":
version, "threads": n} once torch is imported and set to THREADS intra-op threads, or {"available": false,
"reason": ...} and exits. Then it answers one JSON command per stdin line with one JSON line:

  {"cmd": "setup", "key": K, **config}   build the MLP, SGD and a batch for config K; warm up
  {"cmd": "time", "key": K, "steps": n}  -> {"seconds": [...], "minor_faults": total so far}: n timed steps of K
  {"cmd": "saved", **config}             -> what autograd saves for one training step (bytes by term)
  {"cmd": "profile", "key": K, "steps": n} -> {"ops": [{"op", "seconds" per step, "calls" per step}, ...]}
  {"cmd": "quit"}

A timed step is what memstudy's timed step is: gradients set to None, forward, mean cross-entropy,
backward, SGD update (lr 0.01). The model is torch.nn.Linear + activation layers (the same shapes and
init distribution as memstudy.nn.MLP), or for `"model": "gpt"` benchmarks.torch_gpt's GPT (explicit attention,
nanoGPT's F.cross_entropy over the flattened positions). torch imports numpy, but nothing here calls it, so only torch's
thread pool works in this process.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any

from .heap import minor_faults, warm_up_heap

ACTIVATIONS = {"relu": "ReLU", "sigmoid": "Sigmoid", "tanh": "Tanh"}


def _build(torch: Any, config: dict[str, Any]):
    nn = torch.nn
    dtype = getattr(torch, config["dtype"])
    torch.manual_seed(config.get("seed", 0))
    widths = [config["in_features"]] + [config["width"]] * config["depth"]
    layers: list[Any] = []
    for i in range(config["depth"]):
        activation = getattr(nn, ACTIVATIONS[config["activation"]])()
        layers += [nn.Linear(widths[i], widths[i + 1], bias=config["bias"]), activation]
    layers.append(nn.Linear(config["width"], config["out_features"], bias=config["bias"]))
    model = nn.Sequential(*layers).to(dtype)
    x = torch.randn(config["batch_size"], config["in_features"], dtype=dtype)
    y = torch.randint(0, config["out_features"], (config["batch_size"],))
    return model, x, y


class Bench:
    def __init__(self, torch: Any, config: dict[str, Any]):
        self.torch = torch
        self.positions = config.get("model") == "gpt"  # (b, s, vocab) logits: positions flattened for the loss
        if self.positions:
            from .torch_gpt import build

            self.model, self.x, targets = build(config)
            self.y = targets.reshape(-1)  # contiguous, as nanoGPT's data loader hands them over
        else:
            self.model, self.x, self.y = _build(torch, config)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01)
        for _ in range(3):
            self.step()

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(self.x)
        if self.positions:
            logits = logits.view(-1, logits.shape[-1])
        loss = self.torch.nn.functional.cross_entropy(logits, self.y)
        loss.backward()
        self.optimizer.step()

    def profile(self, steps: int) -> list[dict[str, Any]]:
        """Self CPU time per op over `steps` steps (torch.profiler), largest first."""
        profiler = self.torch.profiler
        with profiler.profile(activities=[profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                self.step()
        ops = [{"op": e.key, "seconds": e.self_cpu_time_total / 1e6 / steps, "calls": e.count // steps}
               for e in prof.key_averages()]
        return sorted(ops, key=lambda o: -o["seconds"])

    def time(self, steps: int) -> list[float]:
        clock = time.perf_counter
        out = []
        for _ in range(steps):
            start = clock()
            self.step()
            out.append(clock() - start)
        return out


def saved_bytes(torch: Any, config: dict[str, Any]) -> dict[str, Any]:
    """Every storage autograd saves for one training step (forward + loss), each counted once, by term.

    Terms: `parameter` (a weight, e.g. Wᵀ saved by addmm to compute the input's gradient), `input` (the
    network input x, saved by the first Linear for its weight's gradient), `labels` (saved by nll_loss),
    `scalar` (0-d tensors such as nll_loss's total_weight: metadata memstudy keeps as a Python number),
    `hidden` (batch × width: each activation's output, which is also the next Linear's saved input) and
    `loss` (batch × classes: log_softmax's output, also nll_loss's saved input).
    """
    model, x, y = _build(torch, config)
    params = {p.untyped_storage().data_ptr(): p for p in model.parameters()}
    seen: dict[int, str] = {}
    terms = dict.fromkeys(("parameter", "input", "labels", "scalar", "hidden", "loss"), 0)
    counts = dict.fromkeys(terms, 0)
    pointer = lambda t: t.untyped_storage().data_ptr()  # noqa: E731

    def pack(tensor: Any) -> Any:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in seen:
            return tensor
        if key in params:
            term = "parameter"
        elif key == pointer(x):
            term = "input"
        elif key == pointer(y):
            term = "labels"
        elif tensor.dim() == 0 or storage.nbytes() <= tensor.element_size():
            term = "scalar"
        elif tuple(tensor.shape) == (config["batch_size"], config["out_features"]):
            term = "loss"
        else:
            term = "hidden"
        seen[key] = term
        terms[term] += storage.nbytes()
        counts[term] += 1
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    del loss
    return {"bytes": terms, "tensors": counts}


def main(argv: list[str]) -> int:
    threads = int(argv[1]) if len(argv) > 1 else 0
    heap = argv[2] if len(argv) > 2 else "warm"
    try:
        import torch
    except Exception as exc:  # not installed (CI), or broken
        print(json.dumps({"available": False, "reason": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 0
    if threads > 0:
        torch.set_num_threads(threads)
    if heap == "warm":  # the allocator state the memstudy process is put in too (benchmarks.heap)
        warm_up_heap(lambda nbytes: torch.empty(nbytes, dtype=torch.uint8))
    print(json.dumps({"available": True, "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "parallel_info": torch.__config__.parallel_info()}), flush=True)
    benches: dict[str, Bench] = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        cmd = request.pop("cmd")
        try:
            if cmd == "quit":
                break
            if cmd == "setup":
                key = request.pop("key")
                benches[key] = Bench(torch, request)
                reply: dict[str, Any] = {"ok": True, "minor_faults": minor_faults()}
            elif cmd == "time":
                reply = {"seconds": benches[request["key"]].time(int(request["steps"])),
                         "minor_faults": minor_faults()}
            elif cmd == "saved":
                reply = saved_bytes(torch, request)
            elif cmd == "profile":
                reply = {"ops": benches[request["key"]].profile(int(request["steps"]))}
            else:
                reply = {"error": f"unknown command {cmd!r}"}
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
