"""Score sequences at the probe ±h of many layer sets at once, in one forward per batch.

Each *entry* of an atlas is a set of contiguous layers and its probe size ``h`` (in units of
each layer's residual norm: the atlas' vector holds ``ρ_l · v̂_l``). One batch evaluates the
*points* ``0`` (shared by every entry), then ``+h_e, −h_e`` of each entry ``e``: rows of one
forward steer different layers (a per-row layer mask), and a row joins the batch at its entry's
lowest layer as a copy of the unsteered row there (:func:`~repe_tradeoff.engine.steering.fan_out_staged`),
so the blocks below an entry run once, for the unsteered row. As in
:func:`repe_tradeoff.engine.scoring.score_shared`, a prompt runs once per point and its KV cache is
shared by its continuations.

Rows of a forward are point-major (row ``k · n + i`` is point k of input row i), so the rows
present at a block are always a prefix; :class:`~repe_tradeoff.engine.scoring.Scores` come back
sequence-major like the sweep's, with one column per point.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from repe_tradeoff.engine.batching import _concat
from repe_tradeoff.engine.scoring import (
    Scores,
    _cache_kwarg,
    _first_token_logprobs,
    _Grid,
    _logits,
    _pad,
    _scores,
    _select_cache_rows,
    _summed_logprobs,
    after_prefix,
    cache_of,
    prefix_cache,
    shared_prefix,
)
from repe_tradeoff.engine.steering import fan_out_staged, steer
from repe_tradeoff.models.loading import find_layers, model_device
from repe_tradeoff.vectors.vector import SteeringVector


@dataclass(frozen=True)
class Entry:
    """A set of contiguous layers and its probe size (a fraction of each layer's residual norm)."""

    layers: tuple[int, ...]
    h: float

    @property
    def start(self) -> int:
        return min(self.layers)

    @property
    def label(self) -> str:
        """``14`` or ``8-15``."""
        lo, hi = min(self.layers), max(self.layers)
        return str(lo) if lo == hi else f"{lo}-{hi}"

    @property
    def width(self) -> int:
        return len(self.layers)


@dataclass(frozen=True)
class PointLayout:
    """The points of one batch: 0, then ``+h, −h`` of each entry, entries ordered by lowest layer."""

    entries: tuple[Entry, ...]

    def __post_init__(self):
        starts = [e.start for e in self.entries]
        if starts != sorted(starts):
            raise ValueError("entries must be ordered by their lowest layer")

    @property
    def size(self) -> int:
        return 1 + 2 * len(self.entries)

    @property
    def layers(self) -> list[int]:
        return sorted({layer for e in self.entries for layer in e.layers})

    def starts(self) -> torch.Tensor:
        return torch.tensor([0] + [e.start for e in self.entries for _ in (1, -1)], dtype=torch.long)

    def norms(self) -> torch.Tensor:
        return torch.tensor([0.0] + [s * e.h for e in self.entries for s in (1.0, -1.0)])

    def mask(self) -> torch.Tensor:
        """(points, layers) booleans: which layers each point steers (none for point 0)."""
        layers = self.layers
        mask = torch.zeros((self.size, len(layers)), dtype=torch.bool)
        for i, e in enumerate(self.entries):
            for layer in e.layers:
                mask[1 + 2 * i : 3 + 2 * i, layers.index(layer)] = True
        return mask

    def point(self, k: int) -> tuple[int | None, float]:
        """(entry index or None for point 0, signed norm) of point ``k``."""
        if k == 0:
            return None, 0.0
        e = (k - 1) // 2
        return e, self.entries[e].h * (1.0 if k % 2 else -1.0)


def _point_major(layout: PointLayout, n: int):
    """Rows ``k · n + i``: the source input row, the start block, the norm and the layer mask."""
    size = layout.size
    return (torch.arange(n).repeat(size), layout.starts().repeat_interleave(n),
            layout.norms().repeat_interleave(n), layout.mask().repeat_interleave(n, 0))


def _row_major(n: int, size: int) -> torch.Tensor:
    """Index turning point-major rows ``k · n + i`` into row-major ``i · size + k``."""
    return (torch.arange(size).view(1, -1) * n + torch.arange(n).view(-1, 1)).reshape(-1)


def _point_contexts(model, vector: SteeringVector, layout: PointLayout, positions: str, norms, mask, ends,
                    source, starts):
    """The contexts of one forward over point-major rows: steering with per-row layers, staged fan-out."""
    return steer(model, vector, norms, layers=layout.layers, positions=positions, prompt_lengths=ends,
                 layer_mask=mask), fan_out_staged(model, source, starts)


def _present(layout: PointLayout, layer: int) -> int:
    """How many points have joined the batch at block ``layer`` (rows k · n + i with k below it)."""
    return int((layout.starts() <= layer).sum())


@torch.no_grad()
def prefix_points(model, vector: SteeringVector, layout: PointLayout, tokens: Sequence[int], positions: str = "all"):
    """The KV cache of ``tokens`` (a prefix every prompt starts with) at every point of ``layout``:
    one row per point present at each block, for :func:`score_entries` to copy per prompt."""
    src, starts, norms, mask = _point_major(layout, 1)
    ends = torch.full((layout.size,), len(tokens) + 1)  # every prefix position is a prompt position
    contexts = _point_contexts(model, vector, layout, positions, norms, mask, ends, src, starts)
    return prefix_cache(model, tokens, 1, contexts, lambda layer: torch.arange(_present(layout, layer)))


@torch.no_grad()
def score_entries(model, pad_id: int, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
                  vector: SteeringVector, layout: PointLayout, *, positions: str = "all",
                  probe_ids: Sequence[int] | None = None, prefix: tuple[Sequence[int], object] | None = None) -> Scores:
    """Score every ``prompts[s] + continuations[s]`` at every point of ``layout``.

    A prefix all prompts start with runs once per point, not once per prompt: ``prefix`` is
    ``(tokens, cache)`` of :func:`prefix_points` (copied, never changed), else the prompts' own
    :func:`~repe_tradeoff.engine.scoring.shared_prefix` is run here."""
    device = model_device(model)
    size, base = layout.size, model.base_model
    grid = _Grid.of([float(k) for k in range(size)])  # point k is "norm" k; point 0 is the origin
    index: dict[tuple[int, ...], int] = {}
    prompt_of_seq = torch.tensor([index.setdefault(tuple(p), len(index)) for p in prompts])
    n_prompts, n_seq = len(index), len(prompts)
    distinct = list(index)
    if prefix is None:
        cut = shared_prefix(distinct)
        cached = prefix_points(model, vector, layout, distinct[0][:cut], positions) if cut else None
    else:
        cut, cached = len(prefix[0]), copy.deepcopy(prefix[1])
    prompt_ids, prompt_mask, prompt_pos = after_prefix(distinct, cut, pad_id)
    width = prompt_mask.shape[1]
    source, starts, norms, mask = _point_major(layout, n_prompts)
    ends = torch.full((len(source),), width)

    def steered(norms, mask, ends, source, starts):
        return _point_contexts(model, vector, layout, positions, norms, mask, ends, source, starts)

    kwargs = {}
    if cached is not None:  # row k of the prefix becomes rows k · n + i, one per prompt
        for layer in range(len(find_layers(model))):
            rows = torch.arange(_present(layout, layer)).repeat_interleave(n_prompts)
            _select_cache_rows(cached, layer, rows.to(device))
        kwargs[_cache_kwarg(base)] = cached
    s_ctx, f_ctx = steered(norms, mask, ends, source, starts)
    with s_ctx, f_ctx:
        out = base(input_ids=prompt_ids.to(device), attention_mask=prompt_mask.to(device),
                   position_ids=prompt_pos.to(device), use_cache=True, **kwargs)
    last = out.last_hidden_state[:, -1, :][_row_major(n_prompts, size).to(device)]
    next_logits = _logits(model, last)  # (prompts · points, V), prompt-major as the sweep's
    next_logprobs = torch.log_softmax(next_logits, -1)
    continuation = _first_token_logprobs(next_logprobs, prompt_of_seq, continuations, grid)
    longer = [s for s, c in enumerate(continuations) if len(c) > 1]  # a one-token option needs no pass 2
    if longer:
        own = prompt_of_seq[torch.tensor(longer)]
        n_long = len(longer)
        cache = cache_of(out)
        for layer in range(len(find_layers(model))):
            present = _present(layout, layer)
            rows = (torch.arange(present).repeat_interleave(n_long) * n_prompts + own.repeat(present))
            _select_cache_rows(cache, layer, rows.to(device))
        cont_ids, cont_mask = _pad([list(continuations[s][:-1]) for s in longer], pad_id)
        cont_pos = prompt_mask.sum(1)[own].view(-1, 1) + torch.arange(cont_ids.shape[1]).view(1, -1)
        full_mask = torch.cat([prompt_mask[own], cont_mask], 1)
        targets, _ = _pad([list(continuations[s][1:]) for s in longer], 0, width=cont_ids.shape[1])
        source2, starts2, norms2, mask2 = _point_major(layout, n_long)
        s_ctx, f_ctx = steered(norms2, mask2, torch.full((len(source2),), width), source2, starts2)
        with s_ctx, f_ctx:
            out2 = base(input_ids=cont_ids.to(device), attention_mask=full_mask.to(device),
                        position_ids=cont_pos.to(device), use_cache=True, **{_cache_kwarg(base): cache})
        summed = _summed_logprobs(model, out2.last_hidden_state, targets[source2].to(device),
                                  cont_mask[source2].bool().to(device))
        rows = (torch.tensor(longer).view(-1, 1) * size + torch.arange(size).view(1, -1)).reshape(-1)
        continuation = continuation.index_add(0, rows.to(device), summed[_row_major(n_long, size).to(device)])
    return _scores(grid, prompt_of_seq, continuation, next_logits, next_logprobs, probe_ids)


@dataclass
class AtlasRunner:
    """What a likelihood task is given to score its items at every point of the layout (the
    interface of :class:`repe_tradeoff.engine.batching.ChunkRunner`): ``norms`` are the point numbers."""

    model: object
    tokenizer: object
    vector: SteeringVector
    layout: PointLayout
    rows_per_pass: int
    positions: str = "all"

    @property
    def norms(self) -> list[float]:
        return [float(k) for k in range(self.layout.size)]

    def score(self, seqs, rows: list[int]) -> Scores:
        """Scores of sequences ``rows``, a prompt's sequences in one pass, about ``rows_per_pass``
        rows (sequence × point) per pass. When a prompt's sequences at every point exceed
        ``SPLIT_FACTOR`` times the budget, the entries are split into groups scored in turn (each
        with its own r = 0 row), which bounds a pass's KV cache and activations on large layouts."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        order = sorted(rows, key=lambda r: (len(seqs.prompts[r]), seqs.owners[r], r))
        per_prompt = max(Counter(tuple(seqs.prompts[r]) for r in rows).values())
        layouts = split_layout(self.layout, max(1, SPLIT_FACTOR * self.rows_per_pass // per_prompt))
        per_pass = max(1, self.rows_per_pass // max(part.size for part in layouts))
        batches, current = [], []
        for r in order:  # never split the sequences of one prompt across passes
            if current and len(current) >= per_pass and seqs.prompts[r] != seqs.prompts[current[-1]]:
                batches.append(current)
                current = []
            current.append(r)
        if current:
            batches.append(current)
        cut = shared_prefix(list({tuple(seqs.prompts[r]) for r in rows}))  # run once for the whole chunk
        tokens = seqs.prompts[rows[0]][:cut]
        prefixes = [(tokens, prefix_points(self.model, self.vector, part, tokens, self.positions)) if cut else None
                    for part in layouts]
        parts = [_join_points([score_entries(self.model, pad, [seqs.prompts[r] for r in b],
                                             [seqs.continuations[r] for r in b], self.vector, part,
                                             positions=self.positions, probe_ids=seqs.probe_ids, prefix=prefix)
                               for part, prefix in zip(layouts, prefixes)])
                 for b in batches]
        joined = _concat(parts, 0)
        position = {r: i for i, r in enumerate(order)}
        back = torch.tensor([position[r] for r in rows])
        return Scores(joined.continuation[back],
                      None if joined.probe_logprobs is None else joined.probe_logprobs[back],
                      joined.logit_shift[back])


#: How far one prompt's rows may exceed the row budget before entries are split. Splitting at
#: 1× made short prompts 1.3–2.2× slower (cloze questions: more, smaller passes; two alternating
#: rounds in one process on the embedded model) for 9 % less peak memory on the full 161-point
#: layout (2.14 against 2.36 GiB).
SPLIT_FACTOR = 4


def split_layout(layout: PointLayout, max_points: int) -> list[PointLayout]:
    """The layout's entries in consecutive groups of at most ``max_points`` points each (the
    shared r = 0 point in every group; at least one entry per group)."""
    per_group = max(1, (max_points - 1) // 2)
    entries = layout.entries
    return [PointLayout(entries[k : k + per_group]) for k in range(0, len(entries), per_group)]


def _join_points(parts: Sequence[Scores]) -> Scores:
    """Scores of consecutive entry groups as one layout's columns (r = 0 from the first group)."""
    if len(parts) == 1:
        return parts[0]

    def join(name: str):
        values = [getattr(p, name) for p in parts]
        if values[0] is None:
            return None
        return torch.cat([values[0]] + [v[:, 1:] for v in values[1:]], 1)

    return Scores(join("continuation"), join("probe_logprobs"), join("logit_shift"))
