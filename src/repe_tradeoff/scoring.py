"""Log-likelihoods of continuations under a model steered at many norms in one forward pass.

The one computation every metric needs: for sequences ``prompt + continuation`` and norms
``r_1 … r_K``, the summed log-probability of each continuation, the log-probabilities of
chosen tokens right after the prompt, and how far steering moved the next-token logits.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from repe_tradeoff.models import find_layers, model_device
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
    share_prompts: bool = True


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


def _select_cache_rows(cache, layer: int, index: Tensor) -> None:
    """Keep cache rows ``index`` of one layer (transformers 5 and 4 layouts)."""
    if hasattr(cache, "layers"):
        cache.layers[layer].batch_select_indices(index)
    else:
        cache.key_cache[layer] = cache.key_cache[layer].index_select(0, index)
        cache.value_cache[layer] = cache.value_cache[layer].index_select(0, index)


def _summed_logprobs(model, hidden: Tensor, targets: Tensor, valid: Tensor, block: int = 512) -> Tensor:
    """Per row, Σ log p(target) over the valid positions. Logits are computed only there (never
    at padding), in blocks of positions, so (positions × vocabulary) never exists all at once."""
    rows, cols = valid.nonzero(as_tuple=True)
    h, t = hidden[rows, cols], targets[rows, cols]
    parts = []
    for hb, tb in zip(h.split(block), t.split(block)):
        logits = _logits(model, hb)
        parts.append(logits.gather(-1, tb.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1))
    total = torch.zeros(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    return total.index_add_(0, rows, torch.cat(parts)) if parts else total


def _cache_kwarg(module) -> str:
    """transformers ≥ 5.24 names the KV cache argument `cache`; earlier versions `past_key_values`."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def _steered(model, steering: Steering | None, row_norms: Tensor, prompt_end: int):
    if steering is None:
        return contextlib.nullcontext()
    return steer(model, steering.vector, row_norms, layers=steering.layers, positions=steering.positions,
                 operator=steering.operator, prompt_lengths=torch.full((len(row_norms),), prompt_end))


@torch.no_grad()
def score_shared(
    model,
    pad_id: int,
    prompts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    norms: Sequence[float],
    steering: Steering | None,
    probe_ids: Sequence[int] | None = None,
) -> Scores:
    """As :func:`score`, but each distinct prompt runs once per norm and its KV cache is shared
    by all of its continuations (a question's options, a prompt's two responses).

    Pass 1 runs the left-padded distinct prompts (rows fanned out across norms above the first
    steered layer); pass 2 runs only the continuation tokens on a copy of the cache selected per
    row. Explicit position ids keep absolute position embeddings exact under left padding.
    """
    device = model_device(model)
    grid = [float(r) for r in norms]
    with_zero = grid if 0.0 in grid else grid + [0.0]
    zero_col, n_norm = with_zero.index(0.0), len(with_zero)
    unique: dict[tuple[int, ...], int] = {}
    owner = [unique.setdefault(tuple(p), len(unique)) for p in prompts]
    plist = list(unique)
    n_u, n_seq = len(plist), len(prompts)
    wp = max(len(p) for p in plist)
    p_ids = torch.full((n_u, wp), pad_id, dtype=torch.long)
    p_mask = torch.zeros((n_u, wp), dtype=torch.long)
    for u, p in enumerate(plist):
        p_ids[u, wp - len(p):] = torch.tensor(p)
        p_mask[u, wp - len(p):] = 1
    p_pos = (p_mask.cumsum(1) - 1).clamp(min=0)
    first = steering is not None and steering.share_lower and min(steering.layers) > 0
    split = min(steering.layers) if first else 0  # blocks below `split` hold one cache row per prompt
    u_rows = torch.arange(n_u).repeat_interleave(n_norm)
    norms_u = torch.tensor(with_zero, dtype=torch.float32).repeat(n_u)
    base = model.base_model
    ids, mask, pos = (p_ids, p_mask, p_pos) if first else (p_ids[u_rows], p_mask[u_rows], p_pos[u_rows])
    with _steered(model, steering, norms_u, wp), (fan_out(model, u_rows.to(device), split) if first else contextlib.nullcontext()):
        out = base(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device), use_cache=True)
    hidden = out.last_hidden_state[:, -1, :]
    logits0 = _logits(model, hidden)  # (U·K, V) next-token logits after each prompt
    lp0 = torch.log_softmax(logits0, -1)
    shift_u = (logits0.view(n_u, n_norm, -1) - logits0.view(n_u, n_norm, -1)[:, zero_col : zero_col + 1]).norm(dim=-1)
    s_rows = torch.arange(n_seq).repeat_interleave(n_norm)  # row s·K + k
    own = torch.tensor(owner)
    src = own[s_rows] * n_norm + torch.arange(n_norm).repeat(n_seq)  # its prompt row in pass 1
    lens_c = [len(c) for c in continuations]
    first_tok = torch.tensor([c[0] if c else 0 for c in continuations])[s_rows].to(device)
    continuation = lp0.index_select(0, src.to(device)).gather(1, first_tok.unsqueeze(1)).squeeze(1)
    continuation = continuation * torch.tensor([lc > 0 for lc in lens_c])[s_rows].to(device)
    wc = max(lens_c) - 1
    if wc > 0:  # tokens after the first: pass 2 on the shared cache
        cache = getattr(out, "cache", None)
        if cache is None:
            cache = out.past_key_values
        for layer in range(len(find_layers(model))):
            _select_cache_rows(cache, layer, (own if first and layer < split else src).to(device))
        c_ids = torch.full((n_seq, wc), pad_id, dtype=torch.long)
        c_mask = torch.zeros((n_seq, wc), dtype=torch.long)
        for s, c in enumerate(continuations):
            if len(c) > 1:
                c_ids[s, : len(c) - 1] = torch.tensor(c[:-1])
                c_mask[s, : len(c) - 1] = 1
        prompt_len = p_mask.sum(1)[own]
        c_pos = prompt_len.view(-1, 1) + torch.arange(wc).view(1, -1)
        full_mask = torch.cat([p_mask[own], c_mask], 1)
        norms_s = torch.tensor(with_zero, dtype=torch.float32).repeat(n_seq)
        if first:
            ids2, mask2, pos2, ctx = c_ids, full_mask, c_pos, fan_out(model, s_rows.to(device), split)
        else:
            ids2, mask2, pos2, ctx = c_ids[s_rows], full_mask[s_rows], c_pos[s_rows], contextlib.nullcontext()
        with _steered(model, steering, norms_s, wp), ctx:
            out2 = base(input_ids=ids2.to(device), attention_mask=mask2.to(device), position_ids=pos2.to(device),
                        use_cache=True, **{_cache_kwarg(base): cache})
        h2 = out2.last_hidden_state
        targets = torch.zeros((n_seq, wc), dtype=torch.long)
        for s, c in enumerate(continuations):
            if len(c) > 1:
                targets[s, : len(c) - 1] = torch.tensor(c[1:])
        continuation = continuation + _summed_logprobs(
            model, h2, targets[s_rows].to(device), c_mask[s_rows].bool().to(device))
    keep = torch.tensor([with_zero.index(r) for r in grid])
    probes = None
    if probe_ids is not None:
        probes = lp0[:, torch.tensor(list(probe_ids), device=lp0.device)].view(n_u, n_norm, -1)[own][:, keep]
    return Scores(
        continuation=continuation.view(n_seq, n_norm)[:, keep].cpu(),
        probe_logprobs=None if probes is None else probes.cpu(),
        logit_shift=shift_u[own][:, keep].cpu(),
    )


def score(
    model,
    pad_id: int,
    prompts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    norms: Sequence[float],
    steering: Steering | None,
    probe_ids: Sequence[int] | None = None,
) -> Scores:
    """Score every ``prompts[s] + continuations[s]`` at every norm.

    With ``steering.share_prompts`` (the default) each distinct prompt is computed once per norm
    (:func:`score_shared`); otherwise every sequence runs whole (:func:`score_flat`). Both give
    the same numbers.
    """
    shared = steering is None or steering.share_prompts
    return (score_shared if shared else score_flat)(model, pad_id, prompts, continuations, norms, steering, probe_ids)


@torch.no_grad()
def score_flat(
    model,
    pad_id: int,
    prompts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    norms: Sequence[float],
    steering: Steering | None,
    probe_ids: Sequence[int] | None = None,
) -> Scores:
    """Score every whole ``prompts[s] + continuations[s]`` at every norm, in one batched forward.

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
    logits0 = _logits(model, picked[:, 0, :])  # (R, V) next-token logits after the prompt
    targets = torch.zeros((n_seq, span), dtype=torch.long)
    valid = torch.zeros((n_seq, span), dtype=torch.bool)
    for s, c in enumerate(continuations):
        targets[s, : len(c)] = torch.tensor(list(c), dtype=torch.long)
        valid[s, : len(c)] = True
    targets, valid = targets[rows].to(logits0.device), valid[rows].to(logits0.device)
    lp0 = torch.log_softmax(logits0, -1)  # reused for the first continuation token and the probes
    continuation = lp0.gather(1, targets[:, :1]).squeeze(1) * valid[:, 0]
    continuation = continuation + _summed_logprobs(model, picked[:, 1:], targets[:, 1:], valid[:, 1:])
    continuation = continuation.view(n_seq, n_norm)
    probes = None
    if probe_ids is not None:
        first = lp0.view(n_seq, n_norm, -1)
        probes = first[:, :, torch.tensor(list(probe_ids), device=first.device)]
    logits0 = logits0.view(n_seq, n_norm, -1)
    shift = (logits0 - logits0[:, zero_col : zero_col + 1, :]).norm(dim=-1)
    keep = torch.tensor([with_zero.index(r) for r in grid])
    return Scores(
        continuation=continuation[:, keep].cpu(),
        probe_logprobs=None if probes is None else probes[:, keep].cpu(),
        logit_shift=shift[:, keep].cpu(),
    )
