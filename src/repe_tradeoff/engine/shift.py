r"""The representation shift of a fine-tuned model: the fine-tuning analogue of the steering norm r.

For prompt ``q`` and layer ``l``, ``δ_l(q) = h_ft,l(q) − h_base,l(q)`` at the last prompt token
(``h_l`` is the output of decoder block ``l``). Steering adds the same ``r·v̂_l`` to every prompt;
fine-tuning's δ varies with the prompt and is not one direction, so a checkpoint is summarised by

* ``shift_norm``: the mean of ``‖δ_l(q)‖`` over prompts and layers (the abscissa of the laws);
* ``shift_along``: the mean of ``⟨δ_l(q), v̂_l⟩``, its component along the steering vector read
  from the same pairs (signed: positive is towards the aligned side);
* ``shift_rest``: the mean of ``sqrt(‖δ‖² − ⟨δ, v̂⟩²)``, the part orthogonal to the vector;
* ``shift_relative``: ``shift_norm`` over the mean ``‖h_base,l(q)‖`` (as steering's relative norm);
* ``logit_shift``: the mean of ``‖U·δ_final(q)‖ = ‖logits_ft(q) − logits_base(q)‖`` (A1's quantity).

Every prompt runs alone (no padding), so the numbers do not depend on batching.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from repe_tradeoff.models.loading import find_layers, model_device
from repe_tradeoff.vectors.vector import SteeringVector

SHIFT_METRICS = ("shift_norm", "shift_along", "shift_rest", "shift_relative", "logit_shift")


@dataclass
class States:
    """Per prompt: the last prompt token's block outputs ``{layer: (n, hidden)}`` and logits ``(n, vocab)``."""

    hidden: dict[int, torch.Tensor]
    logits: torch.Tensor


@torch.no_grad()
def read_states(model, prompts: Sequence[list[int]], layers: Sequence[int]) -> States:
    """The block outputs at ``layers`` and the logits at the last token of each prompt, in float32."""
    blocks = find_layers(model)
    device = model_device(model)
    store: dict[int, torch.Tensor] = {}

    def make(layer: int):
        def hook(module, args, output):
            store[layer] = (output[0] if isinstance(output, tuple) else output)[0, -1].detach().float().cpu()

        return hook

    hidden: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    logits = []
    handles = [blocks[layer].register_forward_hook(make(layer)) for layer in layers]
    try:
        for ids in prompts:
            out = model(input_ids=torch.tensor([ids], device=device), use_cache=False)
            logits.append(out.logits[0, -1].detach().float().cpu())
            for layer in layers:
                hidden[layer].append(store[layer])
    finally:
        for handle in handles:
            handle.remove()
    return States({layer: torch.stack(v) for layer, v in hidden.items()}, torch.stack(logits))


def shift_metrics(base: States, tuned: States, vector: SteeringVector | None) -> dict[str, float]:
    """The shift of ``tuned`` from ``base`` (same prompts, same layers), as in the module notes."""
    norms, along, rest, residual = [], [], [], []
    for layer, h0 in base.hidden.items():
        delta = (tuned.hidden[layer] - h0).double()
        size = delta.norm(dim=-1)
        norms.append(size)
        residual.append(h0.double().norm(dim=-1))
        if vector is not None and layer in vector.layers:
            unit = vector.directions[layer].double()
            unit = unit / unit.norm()
            proj = delta @ unit
            along.append(proj)
            rest.append((size**2 - proj**2).clamp_min(0).sqrt())
    shift = torch.stack(norms).mean()
    out = {
        "shift_norm": float(shift),
        "shift_relative": float(shift / torch.stack(residual).mean()),
        "logit_shift": float((tuned.logits - base.logits).double().norm(dim=-1).mean()),
    }
    if along:
        out["shift_along"] = float(torch.stack(along).mean())
        out["shift_rest"] = float(torch.stack(rest).mean())
    return out


def per_prompt_logit_shift(base: States, tuned: States) -> list[float]:
    """``‖U·δ_final(q)‖`` per prompt (the items of A1's curve)."""
    return [float(x) for x in (tuned.logits - base.logits).double().norm(dim=-1)]
