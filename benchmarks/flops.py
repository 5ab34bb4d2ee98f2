"""Matmul FLOPs of scoring cloze sequences, counted analytically from a model's config, and
the machine's matmul rate measured with torch.

A matmul of (m × k) by (k × n) costs 2·m·k·n FLOPs. Per token and decoder block the linear
layers cost 2·(q + k + v + o + gate + up + down) weights; attention costs 2·2·heads·head_dim
per key it attends to (scores and weighted values); a logit row costs 2·hidden·vocab.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence


def _dims(config) -> dict:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    return {"h": config.hidden_size, "i": config.intermediate_size, "heads": heads,
            "kv": kv, "d": head_dim, "vocab": config.vocab_size, "blocks": config.num_hidden_layers}


def block_linear_flops(config) -> int:
    """Matmul FLOPs of one token through one decoder block's linear layers."""
    x = _dims(config)
    attn = x["h"] * x["heads"] * x["d"] * 2 + x["h"] * x["kv"] * x["d"] * 2  # q, o; k, v
    mlp = 3 * x["h"] * x["i"]  # gate, up, down
    return 2 * (attn + mlp)


def attention_flops(config, keys: int) -> int:
    """Matmul FLOPs of one token's attention in one block, attending to ``keys`` positions."""
    x = _dims(config)
    return 2 * 2 * x["heads"] * x["d"] * keys


def logit_flops(config) -> int:
    """Matmul FLOPs of one row of next-token logits."""
    x = _dims(config)
    return 2 * x["h"] * x["vocab"]


def needed_positions(prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]):
    """The positions scoring must run through the model, each once: every distinct prompt's
    tokens, and each continuation's tokens but its last (whose output nothing reads).

    Returns (list of the number of keys each position attends to, logit rows): one logit row
    after each distinct prompt (it scores every continuation's first token) and one per
    continuation token after the first.
    """
    keys: list[int] = []
    seen: set[tuple[int, ...]] = set()
    logit_rows = 0
    for p, c in zip(prompts, continuations):
        p = tuple(p)
        if p not in seen:
            seen.add(p)
            keys.extend(range(1, len(p) + 1))
            logit_rows += 1
        keys.extend(range(len(p) + 1, len(p) + len(c)))
        logit_rows += max(0, len(c) - 1)
    return keys, logit_rows


def unavoidable_flops(config, prompts, continuations, n_norms: int, first_steered: int) -> dict:
    """Matmul FLOPs that scoring ``prompts[s] + continuations[s]`` at ``n_norms`` norms cannot
    avoid: blocks below ``first_steered`` once per needed position, the blocks from it on once
    per position and norm, logits only at the scored positions, once per norm."""
    keys, logit_rows = needed_positions(prompts, continuations)
    lower = first_steered
    upper = _dims(config)["blocks"] - first_steered
    per_token = block_linear_flops(config)
    attn = sum(attention_flops(config, k) for k in keys)
    out = {
        "positions": len(keys),
        "logit_rows_per_norm": logit_rows,
        "lower_blocks": lower * (per_token * len(keys) + attn),
        "upper_blocks": upper * n_norms * (per_token * len(keys) + attn),
        "logits": n_norms * logit_rows * logit_flops(config),
        "attention_part": (lower + upper * n_norms) * attn,
    }
    out["total"] = out["lower_blocks"] + out["upper_blocks"] + out["logits"]
    return out


class LinearCounter:
    """Counts the matmul FLOPs every ``nn.Linear`` of a model executes (padding included), by
    module kind: ``blocks`` (inside the decoder blocks) and ``logits`` (the output embedding)."""

    def __init__(self, model):
        import torch

        from repe_tradeoff.models.loading import find_layers

        self.flops = defaultdict(int)
        self.calls = 0
        self.rows: list[int] = []
        head = model.get_output_embeddings()
        in_blocks = {id(m) for block in find_layers(model) for m in block.modules()}
        self._targets = [(m, "logits" if m is head else "blocks") for m in model.modules()
                         if isinstance(m, torch.nn.Linear) and (m is head or id(m) in in_blocks)]
        self._handles = []

    def _hook(self, kind):
        def count(module, args, output):
            rows = args[0].numel() // module.in_features
            self.flops[kind] += 2 * rows * module.in_features * module.out_features
            if kind == "blocks":
                self.rows.append(rows)
        return count

    def __enter__(self):
        self._handles = [m.register_forward_hook(self._hook(kind)) for m, kind in self._targets]
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()


def matmul_rate(n: int = 2048, reps: int = 5, dtype=None) -> dict:
    """FLOP/s of an (n × n) @ (n × n) torch.matmul at the current thread count: the best of
    ``reps`` timed calls (after one warm-up), and every call's rate."""
    import torch

    dtype = dtype or torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        rates.append(2 * n**3 / (time.perf_counter() - t0))
    return {"n": n, "best": max(rates), "rates": rates, "threads": torch.get_num_threads()}


def block_linear_rate(config, rows: int, reps: int = 5) -> dict:
    """FLOP/s of one decoder block's linear layers (random weights of the config's shapes) on
    ``rows`` token-rows at once: what matmuls of the model's own shapes reach on this machine."""
    import torch
    import torch.nn.functional as F

    x = _dims(config)
    shapes = [(x["heads"] * x["d"], x["h"]), (x["kv"] * x["d"], x["h"]), (x["kv"] * x["d"], x["h"]),
              (x["h"], x["heads"] * x["d"]), (x["i"], x["h"]), (x["i"], x["h"]), (x["h"], x["i"])]
    weights = [torch.randn(o, i) for o, i in shapes]
    inputs = [torch.randn(rows, i) for _, i in shapes]
    flops = sum(2 * rows * o * i for o, i in shapes)

    def once():
        for w, xin in zip(weights, inputs):
            F.linear(xin, w)

    once()
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        once()
        rates.append(flops / (time.perf_counter() - t0))
    return {"rows": rows, "best": max(rates), "rates": rates}
