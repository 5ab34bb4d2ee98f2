"""Log-likelihoods of continuations under a model steered at many norms in one forward pass.

The one computation every metric needs: for sequences ``prompt + continuation`` and norms
``r_1 … r_K``, the summed log-probability of each continuation, the log-probabilities of
chosen tokens right after the prompt, and how far steering moved the next-token logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from repe_tradeoff.models import model_device
from repe_tradeoff.steering import fan_out, steer
from repe_tradeoff.vectors import SteeringVector


@dataclass(frozen=True)
class Steering:
    """How a sweep steers: which vector, where, and how."""

    vector: SteeringVector
    layers: tuple[int, ...]
    positions: str = "all"
    operator: str = "add"
    share_lower: bool = True


@dataclass
class Scores:
    """Per sequence × norm. ``probe_logprobs`` is over the full vocabulary at the prompt's end."""

    continuation: Tensor  # (S, K) summed log-likelihood of the continuation
    probe_logprobs: Tensor | None  # (S, K, P) log-probs of the probe tokens after the prompt
    logit_shift: Tensor  # (S, K) ‖z_r − z_0‖ of the next-token logits after the prompt


def _logits(model, hidden: Tensor) -> Tensor:
    logits = model.get_output_embeddings()(hidden).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


@torch.no_grad()
def score(
    model,
    pad_id: int,
    prompts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    norms: Sequence[float],
    steering: Steering | None,
    probe_ids: Sequence[int] | None = None,
) -> Scores:
    """Score every ``prompts[s] + continuations[s]`` at every norm, in one batched forward.

    Rows are sequence-major (row ``s·K' + k``). Norm 0 is always evaluated as the reference for
    ``logit_shift`` (and dropped from the output if not asked for). Continuations may be empty
    (only the probes after the prompt are then read). Sequences are right-padded, so positions
    and absolute position embeddings match the unpadded sequences exactly.
    """
    device = model_device(model)
    grid = [float(r) for r in norms]
    with_zero = grid if 0.0 in grid else grid + [0.0]
    zero_col = with_zero.index(0.0)
    n_seq, n_norm = len(prompts), len(with_zero)
    lens_p = [len(p) for p in prompts]
    lens_c = [len(c) for c in continuations]
    width = max(lp + lc for lp, lc in zip(lens_p, lens_c))
    ids = torch.full((n_seq, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n_seq, width), dtype=torch.long)
    for s, (p, c) in enumerate(zip(prompts, continuations)):
        seq = list(p) + list(c)
        ids[s, : len(seq)] = torch.tensor(seq)
        mask[s, : len(seq)] = 1
    rows = torch.arange(n_seq).repeat_interleave(n_norm)
    row_norms = torch.tensor(with_zero, dtype=torch.float32).repeat(n_seq)
    base = model.base_model
    if steering is None:
        out = base(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
        hidden = out.last_hidden_state.index_select(0, rows.to(device))
    else:
        share = steering.share_lower and min(steering.layers) > 0
        prompt_lengths = torch.tensor(lens_p).repeat_interleave(n_norm)
        with steer(
            model,
            steering.vector,
            row_norms,
            layers=steering.layers,
            positions=steering.positions,
            operator=steering.operator,
            prompt_lengths=prompt_lengths,
        ):
            if share:
                with fan_out(model, rows.to(device), min(steering.layers)):
                    out = base(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
            else:
                out = base(
                    input_ids=ids[rows].to(device), attention_mask=mask[rows].to(device), use_cache=False
                )
        hidden = out.last_hidden_state
    # Positions whose next-token distribution matters: the prompt's last token, then each
    # continuation token but the last.
    span = max(1, max(lens_c))
    offsets = torch.arange(span)
    starts = torch.tensor(lens_p).repeat_interleave(n_norm) - 1
    pos = (starts.view(-1, 1) + offsets.view(1, -1)).clamp(max=width - 1)
    picked = hidden.gather(1, pos.to(hidden.device).unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    logits = _logits(model, picked)  # (R, span, V), float32
    logprobs = torch.log_softmax(logits, dim=-1)
    targets = torch.zeros((n_seq, span), dtype=torch.long)
    valid = torch.zeros((n_seq, span), dtype=torch.bool)
    for s, c in enumerate(continuations):
        targets[s, : len(c)] = torch.tensor(list(c), dtype=torch.long)
        valid[s, : len(c)] = True
    targets, valid = targets[rows].to(logprobs.device), valid[rows].to(logprobs.device)
    token_lp = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * valid
    continuation = token_lp.sum(-1).view(n_seq, n_norm)
    first = logprobs[:, 0, :].view(n_seq, n_norm, -1)
    probes = None
    if probe_ids is not None:
        probes = first[:, :, torch.tensor(list(probe_ids), device=first.device)]
    logits0 = logits[:, 0, :].view(n_seq, n_norm, -1)
    shift = (logits0 - logits0[:, zero_col : zero_col + 1, :]).norm(dim=-1)
    keep = torch.tensor([with_zero.index(r) for r in grid])
    return Scores(
        continuation=continuation[:, keep].cpu(),
        probe_logprobs=None if probes is None else probes[:, keep].cpu(),
        logit_shift=shift[:, keep].cpu(),
    )
