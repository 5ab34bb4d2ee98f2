"""Representation reading: hidden states of contrastive pairs → one behavior direction per layer."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from repe_tradeoff._version import __version__
from repe_tradeoff.data.schemas import content_hash
from repe_tradeoff.errors import RepeTradeoffError
from repe_tradeoff.models.loading import find_layers, model_device
from repe_tradeoff.vectors.vector import SteeringVector

ReadPosition = Literal["last", "mean"]
Method = Callable[[Tensor, Tensor], Tensor]


class ReadingError(RepeTradeoffError):
    """Pairs or settings from which no direction can be read."""


class _Read(Exception):
    """Raised after the topmost requested block: the blocks above it would be computed for nothing."""


@contextmanager
def _capture(model, layers: Sequence[int]):
    """Record the outputs of the requested decoder blocks (and no others); the forward pass
    stops after the topmost of them."""
    blocks = find_layers(model)
    store: dict[int, Tensor] = {}
    top = max(layers, default=None)

    def make(layer):
        def hook(module, args, output):
            store[layer] = (output[0] if isinstance(output, tuple) else output).detach()
            if layer == top:
                raise _Read

        return hook

    handles = [blocks[layer].register_forward_hook(make(layer)) for layer in layers]
    try:
        yield store
    except _Read:
        pass
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def read_hidden_states(
    model,
    tokenizer,
    texts: Sequence[str],
    layers: Sequence[int],
    *,
    position: ReadPosition = "last",
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
) -> dict[int, Tensor]:
    """Hidden states ``{layer: (n_texts, hidden)}`` in float32, read at the last token or the mean.

    Texts are right-padded in batches and the read position is taken per row, so padding never
    changes a result. Only the requested blocks are hooked.
    """
    if position not in ("last", "mean"):
        raise ReadingError(f"read position {position!r} is not one of last, mean")
    device = model_device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: dict[int, list[Tensor]] = {layer: [] for layer in layers}
    for start in range(0, len(texts), batch_size):
        chunk = [tokenizer(t, add_special_tokens=True)["input_ids"] for t in texts[start : start + batch_size]]
        width = max(len(c) for c in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, c in enumerate(chunk):
            ids[i, : len(c)] = torch.tensor(c)
            mask[i, : len(c)] = 1
        with _capture(model, layers) as store:
            model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
        lengths = mask.sum(1)
        for layer in layers:
            h = store[layer].float().cpu()
            if position == "last":
                out[layer].append(h[torch.arange(len(chunk)), lengths - 1])
            else:
                m = mask.unsqueeze(-1).float()
                out[layer].append((h * m).sum(1) / m.sum(1))
        if progress:
            progress(len(chunk))
    return {layer: torch.cat(parts) for layer, parts in out.items()}


def pca_direction(aligned: Tensor, misaligned: Tensor, seed: int = 0) -> Tensor:
    """First principal component of the paired differences (RepE's reader).

    As in RepE, each pair's difference enters with a random sign (seeded) before centring, so
    the component is the axis along which pairs differ, not their mean offset.
    """
    diffs = (aligned - misaligned).double()
    signs = torch.from_numpy(np.random.default_rng(seed).choice([-1.0, 1.0], size=len(diffs)))
    diffs = diffs * signs.unsqueeze(1)
    diffs = diffs - diffs.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(diffs, full_matrices=False)
    return vh[0].float()


def mean_direction(aligned: Tensor, misaligned: Tensor) -> Tensor:
    """Difference of means (Contrastive Activation Addition)."""
    return (aligned.mean(0) - misaligned.mean(0)).float()


def probe_direction(aligned: Tensor, misaligned: Tensor) -> Tensor:
    """Weight vector of a logistic-regression probe separating aligned from misaligned states."""
    from sklearn.linear_model import LogisticRegression

    x = torch.cat([aligned, misaligned]).double().numpy()
    y = np.r_[np.ones(len(aligned)), np.zeros(len(misaligned))]
    scale = x.std(0) + 1e-8  # standardise for the solver, then map back to hidden-state space
    probe = LogisticRegression(C=1.0, max_iter=2000).fit(x / scale, y)
    return torch.from_numpy(probe.coef_[0] / scale).float()


METHODS: dict[str, Method] = {"pca": pca_direction, "mean": mean_direction, "probe": probe_direction}


def orient(direction: Tensor, aligned: Tensor, misaligned: Tensor) -> Tensor:
    """Unit-normalise, with the sign that makes aligned states project higher."""
    unit = direction / direction.norm()
    return unit if float(((aligned - misaligned) @ unit).mean()) >= 0 else -unit


@dataclass(frozen=True)
class Separation:
    """How well a layer's direction separates held-out pairs."""

    layer: int
    accuracy: float  # fraction of pairs whose (aligned − misaligned) projects positively
    gap: float  # mean projection gap
    effect_size: float  # gap / std of the paired projection differences
    residual_norm: float  # mean ‖h‖ at this layer (for relative norms)


def separation(layer: int, direction: Tensor, aligned: Tensor, misaligned: Tensor) -> Separation:
    diff = (aligned - misaligned) @ direction
    std = float(diff.std()) if len(diff) > 1 else float("nan")
    norm = float(torch.cat([aligned, misaligned]).norm(dim=1).mean())
    return Separation(layer, float((diff > 0).float().mean()), float(diff.mean()), float(diff.mean()) / std, norm)


def dataset_hash(pairs: Sequence[tuple[str, str]]) -> str:
    """The pairs' content hash, computed as every dataset hash of the package is."""
    return content_hash({"pairs": [list(p) for p in pairs]})


def extract(
    model,
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    layers: Sequence[int],
    *,
    method: str = "pca",
    position: ReadPosition = "last",
    batch_size: int = 16,
    holdout: float = 0.2,
    metadata: dict | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[SteeringVector, list[Separation]]:
    """Read a steering vector from contrastive ``(aligned, misaligned)`` pairs.

    The returned separations are measured on a held-out fifth of the pairs (directions fitted on
    the rest); the vector itself is fitted on all pairs.
    """
    if method not in METHODS:
        raise ReadingError(f"method {method!r} is not one of {', '.join(METHODS)}")
    if len(pairs) < 2:
        raise ReadingError(f"{len(pairs)} contrastive pair(s): at least 2 are needed, 20 or more for a stable direction")
    texts = [p[0] for p in pairs] + [p[1] for p in pairs]
    states = read_hidden_states(
        model, tokenizer, texts, layers, position=position, batch_size=batch_size, progress=progress
    )
    n = len(pairs)
    n_test = int(round(n * holdout)) if n >= 10 else 0
    order = np.random.default_rng(0).permutation(n)
    test, train = order[:n_test], order[n_test:]
    fit = METHODS[method]
    directions, report = {}, []
    for layer in layers:
        a, m = states[layer][:n], states[layer][n:]
        directions[layer] = orient(fit(a, m), a, m)
        if n_test:
            held = orient(fit(a[train], m[train]), a[train], m[train])
            report.append(separation(layer, held, a[test], m[test]))
        else:
            report.append(separation(layer, directions[layer], a, m))
    meta = {
        "hidden_size": model.config.hidden_size,
        "n_layers": len(find_layers(model)),
        "layers": list(layers),
        "method": method,
        "read_position": position,
        "n_pairs": n,
        "dataset_sha256": dataset_hash(pairs),
        "residual_norms": {str(s.layer): s.residual_norm for s in report},
        "separation": {str(s.layer): {"accuracy": s.accuracy, "effect_size": s.effect_size} for s in report},
        "library_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **(metadata or {}),
    }
    return SteeringVector(directions, meta), report
