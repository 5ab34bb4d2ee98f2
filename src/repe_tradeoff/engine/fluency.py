"""How far steering moves a model's next-token distributions on ordinary text.

:func:`next_token_kl` is the forward-only half of the fluency cost: for each passage and norm
r, the mean over the passage's positions of KL(P_0 ‖ P_r), where P_r is the next-token
distribution of the model steered at r. The passage is read as the model's own text (every
token counts as generated for the ``positions`` setting), so it is steered at every position.
The other half, the perplexity of steered continuations under the unsteered model, is
:meth:`repe_tradeoff.engine.batching.ChunkRunner.score_unsteered` on generated tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from repe_tradeoff.engine.scoring import _fanned_out, _Grid, _logits, _pad, _steered
from repe_tradeoff.engine.steering import Steering
from repe_tradeoff.models.loading import model_device

#: norms whose logits are held at once when a passage's distributions are compared
NORM_BLOCK = 4


def _mean_kl(logp_ref: Tensor, logp: Tensor) -> Tensor:
    """Mean over positions of KL(ref ‖ p) for ``logp_ref (T, V)`` and ``logp (K, T, V)``."""
    return (logp_ref.exp() * (logp_ref - logp)).sum(-1).mean(-1)


@torch.no_grad()
def next_token_kl(model, pad_id: int, passages: Sequence[Sequence[int]], norms: Sequence[float],
                  steering: Steering) -> Tensor:
    """``(P, K)``: per passage and norm, the mean over positions of KL(P_0 ‖ P_r) in nats.

    One batched forward holds every passage × norm (norm 0 added as the reference when the grid
    lacks it, computed in the same batch); logits are formed per passage, a few norms at a time,
    so (rows × positions × vocabulary) never exists at once.
    """
    grid = _Grid.of(norms)
    ids, mask = _pad([list(p) for p in passages], pad_id)
    lengths = mask.sum(1)
    rows = torch.arange(len(passages)).repeat_interleave(grid.size)
    shared = steering.share_lower and min(steering.layers) > 0
    inputs = (ids, mask) if shared else (ids[rows], mask[rows])
    device = model_device(model)
    with _steered(model, steering, grid.repeat(len(passages)), torch.zeros(len(rows), dtype=torch.long)), \
            _fanned_out(model, steering, rows):
        hidden = model.base_model(input_ids=inputs[0].to(device), attention_mask=inputs[1].to(device),
                                  use_cache=False).last_hidden_state
    hidden = hidden.view(len(passages), grid.size, ids.shape[1], -1)
    zero = grid.evaluated.index(grid.zero)  # 0.0, or a joint grid's tuple of zeros
    out = torch.empty(len(passages), grid.size)
    for p, n in enumerate(lengths.tolist()):
        ref = torch.log_softmax(_logits(model, hidden[p, zero, :n]), -1)
        for start in range(0, grid.size, NORM_BLOCK):
            block = torch.log_softmax(_logits(model, hidden[p, start : start + NORM_BLOCK, :n]), -1)
            out[p, start : start + NORM_BLOCK] = _mean_kl(ref, block).clamp(min=0.0).cpu()
    return out[:, grid.keep]
