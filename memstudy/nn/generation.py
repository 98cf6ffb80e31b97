"""Mode generate: greedy generation with a KV cache, as transformers' `generate(do_sample=False)` runs it.

The step is a prefill (one forward of the prompt, `prompt_len` tokens, filling the cache) and then one decode step
per further token (one forward of the token the last step chose, reading the cache and adding its keys and values),
under no_grad: `new_tokens` tokens take the prefill and new_tokens − 1 decode steps, transformers' count for
`max_new_tokens` (the last token chosen never enters the cache). Each step takes the argmax of the last position's
logits (`ops.Argmax`) and appends it to the sequences (`ops.Concatenate`, as transformers' `torch.cat([input_ids,
next_tokens])`). The ledger sees the phases: `prefill`, then `decode 1` ... `decode n−1` (`phase_scope`).

Fields (a family that runs mode generate declares them with `generation_fields()` and checks them with
`check_generation`; outside mode generate they are None):
- `prompt_len`: the prompt's tokens (default: seq_len − new_tokens, the whole context);
- `new_tokens`: tokens generated (default 8); prompt_len + new_tokens must fit the model's seq_len;
- `kv_cache`: `dynamic` (transformers' DynamicCache, the default: grown by concatenation) or `static` (StaticCache,
  prompt_len + new_tokens positions allocated per layer at its first update): `nn.kv_cache`;
- `prefill_logits`: `last` (the default, as transformers' generate asks the model for the last position's logits
  only, `logits_to_keep = 1`) or `all` (the logits of every prompt position, b · prompt_len · vocab, as a plain
  forward computes them).

What transformers' generate does beyond this: it copies the last position's logits to float32 before the argmax
(b · vocab · 4 bytes per step) and builds an attention-mask tensor; memstudy takes the argmax of the logits as they
are and masks inside the attention op.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import STATE, Tensor, apply, no_grad, phase_scope
from ..autograd import ops
from . import init
from .kv_cache import KV_CACHES, KVCache
from .models.registry import ConfigError, Field

GENERATE = "generate"
PREFILL = "prefill"
DECODE = "decode"  # decode step k's phase is "decode k"
PREFILL_LOGITS = ("last", "all")
DEFAULT_NEW_TOKENS = 8
DEFAULTS = {"kv_cache": "dynamic", "prefill_logits": "last", "new_tokens": DEFAULT_NEW_TOKENS}


def decode_phase(step: int) -> str:
    return f"{DECODE} {step}"


def is_decode_phase(phase: str) -> bool:
    return phase.startswith(DECODE + " ")


def generation_fields() -> tuple[Field, ...]:
    """The four fields of mode generate (None in every other mode)."""
    only = (GENERATE,)
    return (
        Field("prompt_len", int, None, "mode generate: prompt tokens the prefill reads (default: seq_len - new_tokens)",
              minimum=1, optional=True, modes=only),
        Field("new_tokens", int, None, f"mode generate: tokens generated greedily, the first by the prefill, each "
              f"other by one decode step (default {DEFAULT_NEW_TOKENS})", minimum=1, optional=True, modes=only),
        Field("kv_cache", str, None, "mode generate: dynamic = grown by concatenation each step (transformers' "
              "DynamicCache, the default); static = prompt_len + new_tokens positions allocated per layer "
              "(StaticCache)", choices=KV_CACHES, optional=True, modes=only),
        Field("prefill_logits", str, None, "mode generate: last = the prefill computes the last position's logits "
              "only (transformers' generate, the default); all = every prompt position's", choices=PREFILL_LOGITS,
              optional=True, modes=only),
    )


def check_generation(config: dict[str, Any]) -> None:
    """Mode generate's defaults filled in, and ConfigError (one line) when the generation does not fit seq_len."""
    if config["mode"] != GENERATE:
        return
    for name, default in DEFAULTS.items():
        if config.get(name) is None:
            config[name] = default
    seq_len, new = config["seq_len"], config["new_tokens"]
    if config.get("prompt_len") is None:
        if new >= seq_len:
            raise ConfigError(f"new_tokens {new} leaves no prompt within seq_len {seq_len}: give prompt_len, or a "
                              f"seq_len above new_tokens")
        config["prompt_len"] = seq_len - new
    if config["prompt_len"] + new > seq_len:
        raise ConfigError(f"prompt_len + new_tokens = {config['prompt_len']} + {new} = {config['prompt_len'] + new} "
                          f"is above seq_len {seq_len}: the generation must fit the model's context")


def token_batch_bytes(config: dict[str, Any]) -> int:
    """The bytes of a token model's batch (its `state_bytes`' input): one int64 (b, seq_len + 1) draw that inputs and
    targets are views of, or in mode generate the (b, prompt_len) prompt."""
    length = config["prompt_len"] if config["mode"] == GENERATE else config["seq_len"] + 1
    return 8 * config["batch_size"] * length


def prompt_tokens(config: dict[str, Any]) -> np.ndarray:
    """(b, prompt_len) token ids in [0, vocab), drawn through nn.init (shape-only under the predictor)."""
    rng = np.random.default_rng(config["seed"] + 1)
    return init.integers(rng, 0, config["vocab"], (config["batch_size"], config["prompt_len"]))


def keep_logits(hidden: Any, logits: str) -> Any:
    """The final hidden states whose logits a forward computes: every position's (`all`), or the last one's, a (b, 1,
    h) view (`last`: transformers' `slice_logits_to_keep(hidden_states, 1)`)."""
    if logits == "all":
        return hidden
    if logits != "last":
        raise ValueError(f"logits must be one of {', '.join(PREFILL_LOGITS)}, got {logits!r}")
    s = hidden.shape[1]
    return apply(ops.Slice, hidden, axis=1, start=s - 1, stop=s)


def check_cache(cache: Any, tokens: int) -> int:
    """The position of a forward's first token (0 without a cache); ValueError (one line) when the cache is used
    where a graph is recorded (it is filled under no_grad) or `tokens` more positions do not fit it."""
    if cache is None:
        return 0
    if STATE.grad_enabled:
        raise ValueError("a KV cache is read and filled under no_grad (generation), not where a graph is recorded")
    cache.check_room(tokens)
    return cache.length


def last_token(logits: Tensor) -> Tensor:
    """The greedy choice at the last position: argmax over the vocabulary of (b, q, V) logits → (b, 1) ids."""
    q = logits.shape[1]
    return apply(ops.Argmax, apply(ops.Slice, logits, axis=1, start=q - 1, stop=q), axis=-1)


def generate(model: Any, prompt: Any, new_tokens: int, kv_cache: str = "dynamic",
             prefill_logits: str = "last") -> tuple[Tensor, KVCache]:
    """Greedy generation of `new_tokens` tokens after `prompt` ((b, p) ids): (the sequences, (b, p + new_tokens)
    ids, and the cache). `model(idx, cache=, logits=)` runs one forward that reads and fills the cache, its logits
    for every position (`all`) or the last one only (`last`). Runs under no_grad."""
    if isinstance(new_tokens, bool) or not isinstance(new_tokens, (int, np.integer)) or new_tokens < 1:
        raise ValueError(f"new_tokens must be a positive integer, got {new_tokens!r}")
    if prefill_logits not in PREFILL_LOGITS:
        raise ValueError(f"prefill_logits must be one of {', '.join(PREFILL_LOGITS)}, got {prefill_logits!r}")
    prompt = prompt if isinstance(prompt, Tensor) else Tensor(prompt)
    if len(prompt.shape) != 2 or prompt.shape[1] < 1:
        raise ValueError(f"the prompt must be a (batch, prompt_len) array of token ids, got shape {prompt.shape}")
    cache = KVCache(model.depth, kv_cache, prompt.shape[1] + int(new_tokens))
    sequences = token = prompt
    with no_grad():
        for step in range(int(new_tokens)):  # step 0 is the prefill
            with phase_scope(decode_phase(step) if step else PREFILL):
                token = last_token(model(token, cache=cache, logits="last" if step else prefill_logits))
                sequences = apply(ops.Concatenate, sequences, token, axis=1)
                if step == new_tokens - 1:
                    token = None  # the last choice dies inside the last phase, with the step's other buffers
    return sequences, cache


__all__ = ["DECODE", "DEFAULTS", "GENERATE", "PREFILL", "PREFILL_LOGITS", "check_cache", "check_generation",
           "decode_phase", "generate", "generation_fields", "is_decode_phase", "keep_logits", "last_token",
           "prompt_tokens", "token_batch_bytes"]
