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
from typing import Literal

import torch
from torch import Tensor, nn

from repe_tradeoff.models import find_layers, layer_path
from repe_tradeoff.vectors import SteeringVector

Positions = Literal["all", "after-prompt", "last"]
Operator = Literal["add", "ablate", "ablate-then-add"]
POSITIONS: tuple[str, ...] = ("all", "after-prompt", "last")


class SteeringError(ValueError):
    """Steering arguments that do not fit together; the message says what to do."""


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

    def __init__(self, vectors: Sequence[SteeringVector], norms: Tensor, lengths: Tensor | None):
        self.vectors, self.norms, self.lengths = list(vectors), norms, lengths
        self._moved: dict = {}
        self._directions: dict = {}

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
        h32 = hidden.to(torch.float32)
        delta = None
        for i, (direction, unit) in enumerate(on.directions(layer, hidden.device)):
            part = change(h32, _row_norms(r[i], hidden.shape[0]), direction, unit)
            delta = part if delta is None else delta + part  # each vector's change, from the same h
        mask = where.mask(hidden, lengths)
        if mask is not None:
            delta = delta * mask
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
    where, on = _Positions(positions, lengths), _OnDevice(vectors, norms, lengths)
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
