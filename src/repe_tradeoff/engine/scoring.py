"""Log-likelihoods of continuations under a model steered at many norms in one forward pass.

The one computation every metric needs: for sequences ``prompt + continuation`` and norms
``r_1 … r_K``, the summed log-probability of each continuation, the log-probabilities of
chosen tokens right after the prompt, and how far steering moved the next-token logits.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from repe_tradeoff.engine.steering import Steering, fan_out, steer
from repe_tradeoff.models.loading import find_layers, model_device


@dataclass
class TaskSequences:
    """Token sequences to score: ``prompts[s] + continuations[s]``, owned by item ``owners[s]``."""

    prompts: list[list[int]]
    continuations: list[list[int]]
    probe_ids: list[int] | None = None  # tokens whose log-probs are read right after each prompt
    owners: list[int] = field(default_factory=list)


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


def _steered(model, steering: Steering | None, row_norms: Tensor, prompt_lengths: Tensor):
    if steering is None:
        return contextlib.nullcontext()
    if row_norms.ndim == 2:  # (rows, vectors) of a joint grid: steer takes one row of norms per vector
        row_norms = row_norms.T.contiguous()
    return steer(model, steering.vector, row_norms, layers=steering.layers, positions=steering.positions,
                 operator=steering.operator, prompt_lengths=prompt_lengths)


def _fanned_out(model, steering: Steering | None, index: Tensor):
    """Blocks below the first steered one run once per input row, then rows are copied by ``index``."""
    if not _shares_lower(steering):
        return contextlib.nullcontext()
    return fan_out(model, index.to(model_device(model)), min(steering.layers))


def _shares_lower(steering: Steering | None) -> bool:
    return steering is not None and steering.share_lower and min(steering.layers) > 0


@dataclass(frozen=True)
class _Grid:
    """The norms asked for, and those evaluated: norm 0 is added when missing, as the reference of
    ``logit_shift``, and dropped again from the output."""

    asked: list
    evaluated: list

    @classmethod
    def of(cls, norms: Sequence) -> _Grid:
        asked = [tuple(map(float, r)) if isinstance(r, (tuple, list)) else float(r) for r in norms]
        zero = grid_origin(asked)
        return cls(asked, asked if zero in asked else asked + [zero])

    @property
    def zero(self):
        return grid_origin(self.evaluated)

    @property
    def size(self) -> int:
        return len(self.evaluated)

    @property
    def keep(self) -> Tensor:
        return torch.tensor([self.evaluated.index(r) for r in self.asked])

    def repeat(self, times: int) -> Tensor:
        """Each row's norm (``(rows,)``, or ``(rows, vectors)`` for a joint grid) for ``times``
        sequences × the evaluated norms (sequence-major)."""
        norms = torch.tensor(self.evaluated, dtype=torch.float32)
        return norms.repeat(times, *([1] * (norms.ndim - 1)))


def grid_origin(norms: Sequence):
    """The unsteered point of a grid: 0.0, or a tuple of zeros for a joint grid of tuples."""
    first = norms[0] if len(norms) else 0.0
    return tuple(0.0 for _ in first) if isinstance(first, (tuple, list)) else 0.0


def _pad(seqs: Sequence[Sequence[int]], pad_id: int, *, left: bool = False, width: int | None = None):
    """(ids, mask) of the sequences padded to ``width`` (default: the longest) on one side."""
    width = max(len(x) for x in seqs) if width is None else width
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, x in enumerate(seqs):
        if x:
            cols = slice(width - len(x), width) if left else slice(0, len(x))
            ids[i, cols] = torch.tensor(list(x))
            mask[i, cols] = 1
    return ids, mask


def _first_token_logprobs(next_logprobs: Tensor, prompt_row: Tensor, continuations, grid: _Grid) -> Tensor:
    """log p(first continuation token | prompt) per sequence × norm (0 for an empty continuation).

    ``next_logprobs`` holds one row per prompt × norm; ``prompt_row[s]`` is sequence s's prompt."""
    device = next_logprobs.device
    n_seq = len(continuations)
    seq_rows = torch.arange(n_seq).repeat_interleave(grid.size)
    source = prompt_row[seq_rows] * grid.size + torch.arange(grid.size).repeat(n_seq)
    first = torch.tensor([c[0] if c else 0 for c in continuations])[seq_rows].to(device)
    present = torch.tensor([len(c) > 0 for c in continuations])[seq_rows].to(device)
    return next_logprobs[source.to(device), first] * present  # one element per row, no row copies


def _scores(grid: _Grid, prompt_row: Tensor, continuation: Tensor, next_logits: Tensor, next_logprobs: Tensor,
            probe_ids: Sequence[int] | None) -> Scores:
    """The output of both scorers, from per-prompt next-token logits (prompts × evaluated norms, V)
    and per-sequence continuation sums (sequences × evaluated norms)."""
    n_prompts = next_logits.shape[0] // grid.size
    logits = next_logits.view(n_prompts, grid.size, -1)
    zero = grid.evaluated.index(grid.zero)
    shift = (logits - logits[:, zero : zero + 1]).norm(dim=-1)
    keep = grid.keep
    probes = None
    if probe_ids is not None:
        columns = torch.tensor(list(probe_ids), device=next_logprobs.device)
        probes = next_logprobs[:, columns].view(n_prompts, grid.size, -1)[prompt_row][:, keep].cpu()
    return Scores(
        continuation=continuation.view(-1, grid.size)[:, keep].cpu(),
        probe_logprobs=probes,
        logit_shift=shift[prompt_row][:, keep].cpu(),
    )


#: a common prefix shorter than this is not run separately (the extra forward call costs more)
MIN_SHARED_PREFIX = 8


def shared_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all ``prompts`` share and :func:`score_shared` runs once (0: none).

    At least one token of each prompt is left after it, to read the next-token distribution at."""
    if len(prompts) < 2:
        return 0
    first, n = prompts[0], min(len(p) for p in prompts) - 1
    cut = next((i for i in range(n) if any(p[i] != first[i] for p in prompts)), n)
    return cut if cut >= MIN_SHARED_PREFIX else 0


def after_prefix(prompts: Sequence[Sequence[int]], cut: int, pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """The prompts' tokens after their first ``cut`` (left-padded), the attention mask over the
    whole prompts (the prefix, then padding, then each prompt's own tokens) and those tokens'
    position ids."""
    ids, own = _pad([p[cut:] for p in prompts], pad_id, left=True)
    mask = torch.cat([torch.ones(len(prompts), cut, dtype=torch.long), own], 1)
    return ids, mask, (mask.cumsum(1) - 1).clamp(min=0)[:, cut:]


def cache_of(out):
    """The KV cache a forward returned (transformers ≥ 5.24 calls it ``cache``)."""
    cache = getattr(out, "cache", None)
    return out.past_key_values if cache is None else cache


def prefix_cache(model, prefix: Sequence[int], copies: int, contexts: Sequence, rows_at):
    """The KV cache of the prompts' common prefix, run as ``copies`` input rows under ``contexts``
    (steering, fan-out); then each layer keeps the rows ``rows_at(layer)``, one per row of the
    pass that continues it (as that pass's rows stand at that layer)."""
    device = model_device(model)
    ids = torch.tensor([list(prefix)]).repeat(copies, 1)
    pos = torch.arange(len(prefix)).repeat(copies, 1)
    with contextlib.ExitStack() as stack:
        for context in contexts:
            stack.enter_context(context)
        out = model.base_model(input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device),
                               position_ids=pos.to(device), use_cache=True)
    cache = cache_of(out)
    for layer in range(len(find_layers(model))):
        _select_cache_rows(cache, layer, rows_at(layer).to(device))
    return cache


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
    steered layer), after their common prefix (:func:`shared_prefix`), which runs once per norm
    and is copied into every prompt's cache (the padding then sits between the two); pass 2 runs
    only the continuation tokens after the first, of the continuations that have them, on a copy
    of the cache selected per row. Explicit position ids keep absolute position embeddings exact
    under left padding.
    """
    device = model_device(model)
    grid = _Grid.of(norms)
    index: dict[tuple[int, ...], int] = {}
    prompt_of_seq = torch.tensor([index.setdefault(tuple(p), len(index)) for p in prompts])
    distinct = list(index)
    n_prompts = len(distinct)
    cut = shared_prefix(distinct)  # the tokens every prompt starts with (a chat template's system turn)
    prompt_ids, prompt_mask, prompt_pos = after_prefix(distinct, cut, pad_id)
    width = prompt_mask.shape[1]
    shared = _shares_lower(steering)
    split = min(steering.layers) if shared else 0  # blocks below `split` hold one cache row per prompt
    prompt_rows = torch.arange(n_prompts).repeat_interleave(grid.size)  # row u·K + k of pass 1
    inputs = (prompt_ids, prompt_mask, prompt_pos) if shared else (prompt_ids[prompt_rows], prompt_mask[prompt_rows], prompt_pos[prompt_rows])
    base = model.base_model
    prefix = {}
    if cut:  # the prefix once per norm (once below the split), copied to rows u·K + k (u below it)
        per_norm, per_prompt = torch.arange(grid.size).repeat(n_prompts), torch.zeros(n_prompts, dtype=torch.long)
        contexts = (_steered(model, steering, grid.repeat(1), torch.full((grid.size,), width)),
                    _fanned_out(model, steering, torch.zeros(grid.size, dtype=torch.long)))
        prefix[_cache_kwarg(base)] = prefix_cache(model, distinct[0][:cut], 1 if shared else grid.size, contexts,
                                                  lambda layer: per_prompt if layer < split else per_norm)
    ends = torch.full((len(prompt_rows),), width)
    with _steered(model, steering, grid.repeat(n_prompts), ends), _fanned_out(model, steering, prompt_rows):
        ids, mask, pos = (x.to(device) for x in inputs)
        out = base(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **prefix)
    next_logits = _logits(model, out.last_hidden_state[:, -1, :])  # (prompts·K, V) after each prompt
    next_logprobs = torch.log_softmax(next_logits, -1)
    continuation = _first_token_logprobs(next_logprobs, prompt_of_seq, continuations, grid)
    # pass 2 on the shared cache: only the sequences with tokens after the first (a one-token
    # option is scored from pass 1 alone)
    longer = [s for s, c in enumerate(continuations) if len(c) > 1]
    if longer:
        sub = torch.tensor(longer)
        own = prompt_of_seq[sub]  # each pass-2 sequence's prompt
        local = torch.arange(len(longer)).repeat_interleave(grid.size)  # row j·K + k: sequence longer[j] at norm k
        source = own[local] * grid.size + torch.arange(grid.size).repeat(len(longer))  # its row in pass 1
        cache = cache_of(out)
        for layer in range(len(find_layers(model))):
            _select_cache_rows(cache, layer, (own if shared and layer < split else source).to(device))
        inputs_c = [list(continuations[s][:-1]) for s in longer]  # each token predicts the next
        cont_ids, cont_mask = _pad(inputs_c, pad_id)
        cont_pos = prompt_mask.sum(1)[own].view(-1, 1) + torch.arange(cont_ids.shape[1]).view(1, -1)
        full_mask = torch.cat([prompt_mask[own], cont_mask], 1)
        targets, _ = _pad([list(continuations[s][1:]) for s in longer], 0, width=cont_ids.shape[1])
        if not shared:
            cont_ids, full_mask, cont_pos = cont_ids[local], full_mask[local], cont_pos[local]
        ends = torch.full((len(local),), width)
        with _steered(model, steering, grid.repeat(len(longer)), ends), _fanned_out(model, steering, local):
            out2 = base(input_ids=cont_ids.to(device), attention_mask=full_mask.to(device),
                        position_ids=cont_pos.to(device), use_cache=True, **{_cache_kwarg(base): cache})
        rest = _summed_logprobs(model, out2.last_hidden_state, targets[local].to(device),
                                cont_mask[local].bool().to(device))
        rows = (sub.view(-1, 1) * grid.size + torch.arange(grid.size).view(1, -1)).reshape(-1)
        continuation = continuation.index_add(0, rows.to(device), rest)
    return _scores(grid, prompt_of_seq, continuation, next_logits, next_logprobs, probe_ids)


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
    grid = _Grid.of(norms)
    n_seq = len(prompts)
    prompt_lens = torch.tensor([len(p) for p in prompts])
    ids, mask = _pad([list(p) + list(c) for p, c in zip(prompts, continuations)], pad_id)
    width = ids.shape[1]
    seq_rows = torch.arange(n_seq).repeat_interleave(grid.size)
    base = model.base_model
    if steering is None:
        out = base(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
        hidden = out.last_hidden_state.index_select(0, seq_rows.to(device))
    else:
        if not _shares_lower(steering):
            ids, mask = ids[seq_rows], mask[seq_rows]
        with _steered(model, steering, grid.repeat(n_seq), prompt_lens[seq_rows]), \
                _fanned_out(model, steering, seq_rows):
            hidden = base(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).last_hidden_state
    # Positions whose next-token distribution matters: the prompt's last token, then each
    # continuation token but the last.
    span = max(1, max(len(c) for c in continuations))
    pos = ((prompt_lens[seq_rows] - 1).view(-1, 1) + torch.arange(span).view(1, -1)).clamp(max=width - 1)
    picked = hidden.gather(1, pos.to(hidden.device).unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    next_logits = _logits(model, picked[:, 0, :])  # (S·K, V) after each prompt
    next_logprobs = torch.log_softmax(next_logits, -1)
    own_row = torch.arange(n_seq)  # every sequence is its own prompt row
    continuation = _first_token_logprobs(next_logprobs, own_row, continuations, grid)
    targets, valid = _pad([list(c) for c in continuations], 0, width=span)
    targets, valid = targets[seq_rows].to(device), valid[seq_rows].bool().to(device)
    continuation = continuation + _summed_logprobs(model, picked[:, 1:], targets[:, 1:], valid[:, 1:])
    return _scores(grid, own_row, continuation, next_logits, next_logprobs, probe_ids)
