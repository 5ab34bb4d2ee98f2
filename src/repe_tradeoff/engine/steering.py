"""Inject ``r · v`` into decoder blocks with forward hooks that are always removed.

Two context managers, both leaving the model's weights and structure untouched:

* :func:`steer` adds the steering vector (or several, each with its own norms) to each steered
  block's output, with a scalar norm or one norm per batch row, on chosen token positions,
  correct under KV-cached generation.
* :func:`fan_out` runs the blocks below the first steered block once per sequence and copies
  rows at that block's input, so many norms share the computation that does not depend on r.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from repe_tradeoff.errors import RepeTradeoffError
from repe_tradeoff.models.loading import find_layers, layer_path
from repe_tradeoff.vectors.vector import SteeringVector

Positions = Literal["all", "after-prompt", "last"]
Operator = Literal["add", "ablate", "ablate-then-add"]
POSITIONS: tuple[str, ...] = ("all", "after-prompt", "last")


class SteeringError(RepeTradeoffError):
    """Steering arguments that do not fit together; the message says what to do."""


@dataclass(frozen=True)
class Steering:
    """How a sweep steers: which vector (or vectors, steered jointly), where, and how.

    With several vectors a grid point is a tuple of norms, one per vector."""

    vector: SteeringVector | tuple[SteeringVector, ...]
    layers: tuple[int, ...]
    positions: str = "all"
    operator: str = "add"
    share_lower: bool = True
    share_prompts: bool = True


def _hidden(output):
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output, hidden):
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def _blocks_parent(model: nn.Module) -> nn.Module:
    parent = layer_path(model).rpartition(".")[0]
    return model.get_submodule(parent) if parent else model


def add(hidden: Tensor, r: Tensor, direction: Tensor, unit: Tensor) -> Tensor:
    """The change ``r · v`` (broadcast, never materialised at full size)."""
    return r * direction


def ablate(hidden: Tensor, r: Tensor, direction: Tensor, unit: Tensor) -> Tensor:
    """The change ``−(h·v̂)v̂`` that projects the direction out; ``r`` is unused."""
    return -(hidden @ unit).unsqueeze(-1) * unit


def ablate_then_add(hidden: Tensor, r: Tensor, direction: Tensor, unit: Tensor) -> Tensor:
    return ablate(hidden, r, direction, unit) + add(hidden, r, direction, unit)


#: operator name → the change it makes to a float32 hidden state ``(batch, seq, hidden)``, given
#: the norms ``r`` (scalar or ``(batch, 1, 1)``), the direction ``v`` and its unit ``v̂``.
OPERATOR_FUNCTIONS = {"add": add, "ablate": ablate, "ablate-then-add": ablate_then_add}
OPERATORS: tuple[str, ...] = tuple(OPERATOR_FUNCTIONS)


class _Positions:
    """Which token positions a forward steers, from absolute indices (the KV cache's offset + i)."""

    def __init__(self, positions: str, lengths: Tensor | None):
        self.positions, self.lengths = positions, lengths
        self.offset, self.prompt_len = 0, None

    def track(self, module, args, kwargs) -> None:
        """Pre-hook of the block stack: note where this forward's first token stands."""
        cache = next((kwargs[k] for k in ("past_key_values", "cache", "past_key_value") if kwargs.get(k) is not None), None)
        offset = 0
        if kwargs.get("cache_position") is not None:
            offset = int(kwargs["cache_position"].reshape(-1)[0])
        elif cache is not None and hasattr(cache, "get_seq_length"):
            offset = int(cache.get_seq_length())
        self.offset = offset
        if offset == 0:
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is None:
                ids = kwargs.get("inputs_embeds")
            self.prompt_len = ids.shape[1] if ids is not None else None

    def mask(self, hidden: Tensor, lengths: Tensor | None) -> Tensor | None:
        """(batch or 1, seq, 1) booleans, or None when every position is steered."""
        if self.positions == "all":
            return None
        absolute = self.offset + torch.arange(hidden.shape[1], device=hidden.device)
        if lengths is not None:
            start = lengths.view(-1, 1)
        elif self.prompt_len is not None:
            start = self.prompt_len
        else:
            raise SteeringError(f"positions={self.positions!r} needs prompt_lengths")
        if self.positions == "last":
            start = start - 1
        return (absolute.view(1, -1) >= start).unsqueeze(-1)


class _OnDevice:
    """Norms, prompt lengths and directions copied once per device: a copy from host memory in
    every hook call would make the host wait for the GPU at every steered block.

    ``norms`` has one entry per vector (``(m,)`` scalars, or ``(m, batch)`` per row)."""

    def __init__(self, vectors: Sequence[SteeringVector], norms: Tensor, lengths: Tensor | None,
                 layer_mask: dict[int, Tensor] | None = None):
        self.vectors, self.norms, self.lengths = list(vectors), norms, lengths
        self.layer_mask = layer_mask
        self._moved: dict = {}
        self._directions: dict = {}
        self._masks: dict = {}

    def rows(self, layer: int, device) -> Tensor | None:
        """``(rows,)`` booleans: which rows are steered at ``layer`` (None: every row)."""
        if self.layer_mask is None:
            return None
        if (layer, device) not in self._masks:
            self._masks[layer, device] = self.layer_mask[layer].to(device)
        return self._masks[layer, device]

    def inputs(self, device) -> tuple[Tensor, Tensor | None]:
        if device not in self._moved:
            self._moved[device] = (self.norms.to(device), None if self.lengths is None else self.lengths.to(device))
        return self._moved[device]

    def directions(self, layer: int, device) -> list[tuple[Tensor, Tensor]]:
        """``(v, v̂)`` of every vector at ``layer``."""
        if (layer, device) not in self._directions:
            pairs = []
            for vector in self.vectors:
                d = vector[layer].to(device=device, dtype=torch.float32)
                pairs.append((d, d / d.norm()))
            self._directions[layer, device] = pairs
        return self._directions[layer, device]


def _row_norms(r: Tensor, batch: int) -> Tensor:
    if r.ndim == 0:
        return r
    if r.shape[0] != batch:
        raise SteeringError(f"{r.shape[0]} norms for a batch of {batch} rows: give one norm per row")
    return r.view(-1, 1, 1)


def _steering_hook(layer: int, change, where: _Positions, on: _OnDevice):
    """The forward hook of one block: output + Σ_vectors change(output), on the chosen positions."""

    def hook(module, args, output):
        hidden = _hidden(output)
        r, lengths = on.inputs(hidden.device)
        rows = on.rows(layer, hidden.device)
        if rows is not None:  # per-row layers; under a staged fan-out, later rows have not joined yet
            n = hidden.shape[0]
            rows = rows[:n]
            if not bool(rows.any()):
                return output
            r = r[:, :n] if r.ndim == 2 else r
            lengths = None if lengths is None else lengths[:n]
        h32 = hidden.to(torch.float32)
        delta = None
        for i, (direction, unit) in enumerate(on.directions(layer, hidden.device)):
            part = change(h32, _row_norms(r[i], hidden.shape[0]), direction, unit)
            delta = part if delta is None else delta + part  # each vector's change, from the same h
        mask = where.mask(hidden, lengths)
        if mask is not None:
            delta = delta * mask
        if rows is not None:
            delta = delta * rows.view(-1, 1, 1)
        return _replace_hidden(output, (h32 + delta).to(hidden.dtype))

    return hook


def _check_steer_args(vectors: Sequence[SteeringVector], layers: list[int], positions: str, operator: str,
                      norms: Tensor):
    if positions not in POSITIONS:
        raise SteeringError(f"positions {positions!r} is not one of {', '.join(POSITIONS)}")
    if operator not in OPERATOR_FUNCTIONS:
        raise SteeringError(f"operator {operator!r} is not one of {', '.join(OPERATORS)}")
    for i, vector in enumerate(vectors):
        missing = [layer for layer in layers if layer not in vector.directions]
        if missing:
            which = "the vector" if len(vectors) == 1 else f"vector {i + 1}"
            raise SteeringError(f"{which} has no direction for layers {missing}; it has {vector.layers}")
    if norms.ndim > 2 or norms.shape[0] != len(vectors):
        raise SteeringError("norm must be a number or one number per batch row")
    if not torch.isfinite(norms).all():
        raise SteeringError("norm must be finite")


def _vector_norms(vectors: list[SteeringVector], norm) -> Tensor:
    """``(m,)`` or ``(m, batch)``: each vector's norm, a scalar or one per row."""
    if len(vectors) == 1:
        return torch.as_tensor(norm, dtype=torch.float32).unsqueeze(0)
    if isinstance(norm, (int, float)) or (isinstance(norm, Tensor) and norm.ndim == 0):
        raise SteeringError(f"{len(vectors)} vectors need {len(vectors)} norms: give one norm (or one per row) "
                            "for each vector")
    parts = list(norm)
    if len(parts) != len(vectors):
        raise SteeringError(f"{len(parts)} norms for {len(vectors)} vectors: give one norm (or one per row) "
                            "for each vector")
    tensors = [torch.as_tensor(p, dtype=torch.float32) for p in parts]
    if len({t.shape for t in tensors}) != 1:
        widths = max((t.shape[0] for t in tensors if t.ndim), default=1)
        tensors = [t.expand(widths) if t.ndim == 0 else t for t in tensors]  # a scalar beside per-row norms
    try:
        return torch.stack(tensors)
    except RuntimeError:
        raise SteeringError("every vector's per-row norms must have the same number of rows") from None


def _layer_masks(layer_mask: Tensor | None, layers: list[int]) -> dict[int, Tensor] | None:
    """``{layer: (rows,) booleans}`` of a per-row layer mask."""
    if layer_mask is None:
        return None
    mask = torch.as_tensor(layer_mask).bool()
    if mask.ndim != 2 or mask.shape[1] != len(layers):
        raise SteeringError(f"layer_mask has shape {tuple(mask.shape)}: give (rows, {len(layers)}), one column "
                            "per steered layer")
    return {layer: mask[:, j].contiguous() for j, layer in enumerate(layers)}


@contextmanager
def steer(
    model: nn.Module,
    vector: SteeringVector | Sequence[SteeringVector],
    norm: float | Sequence[float] | Tensor = 1.0,
    *,
    layers: Sequence[int] | None = None,
    positions: Positions = "all",
    operator: Operator = "add",
    prompt_lengths: Sequence[int] | Tensor | None = None,
    layer_mask: Tensor | None = None,
) -> Iterator[None]:
    """Steer ``model`` inside the ``with`` block.

    ``norm`` is the per-layer L2 norm ``r`` of the added vector ``r · v_l / ‖v_l‖ · ‖v_l‖`` — for
    a unit direction simply ``r · v_l``; a 1-D tensor gives each batch row its own norm.

    Several vectors (a list) steer jointly: ``norm`` then holds one entry per vector, each a
    number or one number per row, and each block's output gets ``Σ_j r_j · v_j`` (every
    operator's change is computed from the same unsteered output and summed). ``layers``
    defaults to the first vector's; every vector needs a direction there.

    ``positions``: ``all`` (every token, prompt and generated — the paper's setting),
    ``after-prompt`` (tokens at index ≥ ``prompt_lengths[row]``, i.e. generated ones), or
    ``last`` (from the prompt's last token on). Indices are absolute, so steering is the same
    with and without a KV cache. Without ``prompt_lengths``, the prompt is the first forward's input.

    ``operator``: ``add``; ``ablate`` (project the direction out, ``h − (h·v̂)v̂``; ``norm`` unused);
    ``ablate-then-add`` (see :data:`OPERATOR_FUNCTIONS`).

    ``layer_mask`` (``(rows, len(layers))`` booleans) lets the rows of one forward steer different
    layers: row i is steered at ``layers[j]`` only where ``layer_mask[i, j]``. A block that sees
    fewer rows than the mask has (under :func:`fan_out_staged`) steers the first ones.
    """
    blocks = find_layers(model)
    vectors = [vector] if isinstance(vector, SteeringVector) else list(vector)
    if not vectors:
        raise SteeringError("no steering vector given")
    for v in vectors:
        v.check_model(model)
    layers = list(vectors[0].layers if layers is None else layers)
    norms = _vector_norms(vectors, norm)
    _check_steer_args(vectors, layers, positions, operator, norms)
    lengths = None if prompt_lengths is None else torch.as_tensor(prompt_lengths, dtype=torch.long)
    where, on = _Positions(positions, lengths), _OnDevice(vectors, norms, lengths, _layer_masks(layer_mask, layers))
    for layer in layers:  # copied before the forward starts, while the GPU has no queued work
        param = next(blocks[layer].parameters(), None)
        if param is not None and param.device.type != "meta":
            on.directions(layer, param.device)
            on.inputs(param.device)
    handles = []
    try:
        handles.append(_blocks_parent(model).register_forward_pre_hook(where.track, with_kwargs=True))
        for layer in layers:
            handles.append(blocks[layer].register_forward_hook(
                _steering_hook(layer, OPERATOR_FUNCTIONS[operator], where, on)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def fan_out(model: nn.Module, index: Tensor, at_layer: int) -> Iterator[None]:
    """Copy batch rows by ``index`` at the input of block ``at_layer`` (output rows = ``len(index)``).

    Blocks below ``at_layer`` run once per input row; blocks from ``at_layer`` on see the expanded
    batch. Every tensor argument of a block whose first dimension is the input batch size
    (attention masks, rotary embeddings, position ids) is expanded the same way. Use without a
    KV cache (scoring), where it is exact.
    """
    blocks = find_layers(model)
    if not 0 <= at_layer < len(blocks):
        raise SteeringError(f"fan_out layer {at_layer} is outside 0-{len(blocks) - 1}")
    state: dict = {"n_in": None}
    memo: dict[int, object] = {}

    def expand(value, n_in: int):
        if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == n_in:
            key = id(value)
            if key not in memo:
                memo[key] = value.index_select(0, index.to(value.device))
            return memo[key]
        if isinstance(value, tuple):
            return tuple(expand(v, n_in) for v in value)
        return value

    def record_batch(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        state["n_in"] = ids.shape[0]
        memo.clear()

    def pre_hook(module, args, kwargs):
        n_in = state["n_in"]
        if n_in is None or n_in == len(index) and bool((index == torch.arange(n_in, device=index.device)).all()):
            return None
        if args:
            args = (expand(args[0], n_in), *(expand(a, n_in) for a in args[1:]))
        else:
            kwargs["hidden_states"] = expand(kwargs["hidden_states"], n_in)
        kwargs = {k: expand(v, n_in) for k, v in kwargs.items()}
        return args, kwargs

    handles = []
    try:
        handles.append(_blocks_parent(model).register_forward_pre_hook(record_batch, with_kwargs=True))
        for block in blocks[at_layer:]:
            handles.append(block.register_forward_pre_hook(pre_hook, with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def fan_out_staged(model: nn.Module, index: Tensor, starts: Tensor) -> Iterator[None]:
    """Let rows join the batch at different blocks: row i is a copy of input row ``index[i]`` at
    the input of block ``starts[i]`` (output rows = ``len(index)``).

    Rows must be ordered by ``starts``, and the first rows are the input rows themselves
    (``index[:n] = 0…n−1``, ``starts[:n] = 0``) and stay unsteered: a joining row copies them, so
    a row that steers only from block l on never runs the blocks below l. Tensor arguments of a
    block whose first dimension is the input batch size are expanded to the rows present. Use
    without a KV cache, or with one whose rows at each block are the rows present there.
    """
    blocks = find_layers(model)
    index, starts = torch.as_tensor(index, dtype=torch.long), torch.as_tensor(starts, dtype=torch.long)
    if len(index) != len(starts) or bool((starts[1:] < starts[:-1]).any()):
        raise SteeringError("fan_out_staged needs one start block per row, in non-decreasing order")
    if len(starts) and not 0 <= int(starts[-1]) < len(blocks):
        raise SteeringError(f"a start block {int(starts[-1])} is outside 0-{len(blocks) - 1}")
    present = [int((starts <= b).sum()) for b in range(len(blocks))]  # rows present at block b
    state: dict = {"n_in": None}
    memo: dict = {}

    def expand(value, n_in: int, n: int):
        if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == n_in and n != n_in:
            key = (id(value), n)
            if key not in memo:
                memo[key] = value.index_select(0, index[:n].to(value.device))
            return memo[key]
        if isinstance(value, tuple):
            return tuple(expand(v, n_in, n) for v in value)
        return value

    def record_batch(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        n_in = ids.shape[0]
        if len(index) < n_in or not bool((index[:n_in] == torch.arange(n_in)).all()) or bool(starts[:n_in].any()):
            raise SteeringError("fan_out_staged: the first rows must be the input rows themselves, from block 0")
        state["n_in"] = n_in
        memo.clear()

    def make(block: int):
        def pre_hook(module, args, kwargs):
            n_in, n = state["n_in"], present[block]
            hidden = args[0] if args else kwargs["hidden_states"]
            have = hidden.shape[0]
            if n > have:  # rows joining here: copies of their input rows' (unsteered) states
                hidden = torch.cat([hidden, hidden.index_select(0, index[have:n].to(hidden.device))])
            if args:
                args = (hidden, *(expand(a, n_in, n) for a in args[1:]))
            else:
                kwargs["hidden_states"] = hidden
            kwargs = {k: (v if k == "hidden_states" else expand(v, n_in, n)) for k, v in kwargs.items()}
            return args, kwargs

        return pre_hook

    handles = []
    try:
        handles.append(_blocks_parent(model).register_forward_pre_hook(record_batch, with_kwargs=True))
        for b, block in enumerate(blocks):
            handles.append(block.register_forward_pre_hook(make(b), with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()
