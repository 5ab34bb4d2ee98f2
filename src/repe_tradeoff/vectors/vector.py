"""SteeringVector: per-layer unit directions with their provenance, stored as safetensors."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from repe_tradeoff.errors import RepeTradeoffError
from repe_tradeoff.runs import atomic_write

FORMAT_VERSION = 1
_KEY = "layer."


class VectorError(RepeTradeoffError):
    """A vector file or vector that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class SteeringVector:
    """Directions ``{layer: (hidden,) tensor}``; positive norms move toward the aligned behavior.

    Directions are unit vectors when read from a model; ``scale`` and ``+`` keep their lengths
    so that arithmetic means what it says (``2 * v`` steers twice as hard at the same ``r``).
    """

    directions: dict[int, torch.Tensor]
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.directions:
            raise VectorError("a steering vector needs at least one layer")
        sizes = {d.shape for d in self.directions.values()}
        if len(sizes) != 1 or len(next(iter(sizes))) != 1:
            raise VectorError(f"every layer's direction must be one 1-D tensor of the same size, got {sizes}")
        for layer, d in self.directions.items():
            if not torch.isfinite(d).all():
                raise VectorError(f"layer {layer} of the vector has NaN or Inf values; re-extract it")
            if float(d.norm()) == 0.0:
                raise VectorError(f"layer {layer} of the vector is all zeros; re-extract it or drop that layer")

    @property
    def layers(self) -> list[int]:
        return sorted(self.directions)

    @property
    def hidden_size(self) -> int:
        return next(iter(self.directions.values())).shape[0]

    def __getitem__(self, layer: int) -> torch.Tensor:
        return self.directions[layer]

    def scale(self, factor: float) -> SteeringVector:
        return replace(self, directions={k: v * factor for k, v in self.directions.items()})

    def __mul__(self, factor: float) -> SteeringVector:
        return self.scale(factor)

    __rmul__ = __mul__

    def __neg__(self) -> SteeringVector:
        return self.scale(-1.0)

    def __add__(self, other: SteeringVector) -> SteeringVector:
        """Layer-wise sum; a layer present in only one vector is kept as it is."""
        if self.hidden_size != other.hidden_size:
            raise VectorError(f"cannot add vectors of hidden size {self.hidden_size} and {other.hidden_size}")
        merged = dict(self.directions)
        for layer, d in other.directions.items():
            merged[layer] = merged[layer] + d if layer in merged else d
        meta = {**self.metadata, "derived_from": [self.sha256(), other.sha256()]}
        return SteeringVector(merged, meta)

    def __sub__(self, other: SteeringVector) -> SteeringVector:
        return self + (-other)

    def normalized(self) -> SteeringVector:
        return replace(self, directions={k: v / v.norm() for k, v in self.directions.items()})

    def select(self, layers: list[int]) -> SteeringVector:
        missing = [layer for layer in layers if layer not in self.directions]
        if missing:
            raise VectorError(f"the vector has no direction for layers {missing}; it has {self.layers}")
        return replace(self, directions={k: self.directions[k] for k in layers})

    def sha256(self) -> str:
        h = hashlib.sha256()
        for layer in self.layers:
            h.update(str(layer).encode())
            h.update(self.directions[layer].to(torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()

    def check_model(self, model, source: str | None = None) -> None:
        """Refuse a vector whose hidden size or layer indices do not fit ``model``; ``source``
        (the vector's file) is named in the message."""
        from repe_tradeoff.models.loading import n_layers

        hidden, depth = model.config.hidden_size, n_layers(model)
        which = f"the vector {source!r}" if source else "the vector"
        if hidden != self.hidden_size:
            raise VectorError(
                f"{which} has hidden size {self.hidden_size} but the model has {hidden}: "
                f"it was read from another model ({self.metadata.get('model', 'unknown')}); re-extract it"
            )
        if max(self.layers) >= depth:
            raise VectorError(
                f"{which} steers layers up to {max(self.layers)} but the model has {depth} layers "
                f"(0-{depth - 1}); re-extract it for this model"
            )

    def save(self, path: str | Path) -> Path:
        """Write one float32 tensor per layer (``layer.12``) with the metadata in the header, atomically."""
        path = Path(path)
        if path.is_dir():
            raise VectorError(
                f"{str(path)!r} is a folder; give the vector a file name, e.g. {str(path / 'vector.safetensors')!r}"
            )
        tensors = {f"{_KEY}{k}": v.detach().to(torch.float32).contiguous().cpu() for k, v in self.directions.items()}
        meta = {"format_version": str(FORMAT_VERSION), "metadata": json.dumps(self.metadata, sort_keys=True)}
        atomic_write(path, safetensors_bytes(tensors, metadata=meta))
        return path

    @classmethod
    def load(cls, path: str | Path) -> SteeringVector:
        path = Path(path)
        if not path.is_file():
            raise VectorError(f"vector file {str(path)!r} does not exist; create one with `repe-tradeoff extract`")
        try:
            tensors = load_file(path)
            from safetensors import safe_open

            with safe_open(path, framework="pt") as f:
                header = f.metadata() or {}
        except (SafetensorError, OSError, ValueError) as err:
            raise VectorError(
                f"{str(path)!r} is not a safetensors steering vector ({err}); "
                "vectors are written by `repe-tradeoff extract`"
            ) from None
        try:
            version = int(header.get("format_version", "0") or 0)
        except ValueError:
            raise VectorError(
                f"{str(path)!r} has an unreadable vector format version {header['format_version']!r}; "
                "re-extract it with `repe-tradeoff extract`"
            ) from None
        if version > FORMAT_VERSION:
            raise VectorError(
                f"{str(path)!r} has vector format version {version}, newer than this library's "
                f"{FORMAT_VERSION}: upgrade repe-tradeoff"
            )
        bad = [k for k in tensors if not k.startswith(_KEY) or not k[len(_KEY):].lstrip("-").isdigit()]
        if bad or not tensors:
            raise VectorError(f"{str(path)!r} holds tensors {bad or 'none'}, not `layer.N` directions")
        directions = {int(k[len(_KEY):]): v.to(torch.float32) for k, v in tensors.items()}
        try:
            metadata = json.loads(header.get("metadata", "{}"))
        except ValueError:
            metadata = None
        if not isinstance(metadata, dict):
            raise VectorError(
                f"{str(path)!r} has a malformed metadata header (not a JSON object); "
                "re-extract it with `repe-tradeoff extract`"
            )
        try:
            return cls(directions, metadata)
        except VectorError as err:
            raise VectorError(f"{str(path)!r}: {err}") from None

    def to_lm_eval(self, path: str | Path, model, norm: float) -> Path:
        """Write the ``.pt`` that lm-evaluation-harness's ``steered`` model reads.

        One entry per hook point, ``{"steering_vector": (1, hidden), "steering_coefficient": r,
        "action": "add", "bias": None}``, hooked at the output of each decoder block. lm-eval
        names hook points relative to ``model.base_model`` (``layers.12``, not ``model.layers.12``).
        """
        from repe_tradeoff.models.loading import layer_path

        prefix = layer_path(model)
        base = getattr(model, "base_model_prefix", "")
        if base and prefix.startswith(base + "."):
            prefix = prefix[len(base) + 1 :]
        payload = {
            f"{prefix}.{layer}": {
                "steering_vector": self.directions[layer].to(torch.float32).reshape(1, -1).clone(),
                "steering_coefficient": float(norm),
                "action": "add",
                "bias": None,
            }
            for layer in self.layers
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        path = Path(path)
        atomic_write(path, buffer.getvalue())
        return path



# --------------------------------------------------------------------------- several vectors
def vector_name(vector: SteeringVector, path: str | Path | None = None) -> str:
    """The name a joint sweep records a vector's norms under: its metadata ``name``, else the
    file's stem, else the behavior it was read from."""
    name = vector.metadata.get("name")
    if not name and path is not None:
        name = Path(path).stem
    return str(name or vector.metadata.get("dataset") or "vector")


def layer_cosines(a: SteeringVector, b: SteeringVector) -> dict[int, float]:
    """cos(a_l, b_l) at every layer both vectors have."""
    return {layer: float(torch.nn.functional.cosine_similarity(a[layer].double(), b[layer].double(), dim=0))
            for layer in a.layers if layer in b.directions}


def orthogonalized(b: SteeringVector, a: SteeringVector) -> SteeringVector:
    """``b`` with ``a``'s direction projected out at every layer, rescaled to ``b``'s length there
    (so a norm r steers as hard as before): ``b_l − (b_l·â_l) â_l``."""
    directions = {}
    for layer in b.layers:
        d = b[layer].double()
        if layer in a.directions:
            unit = a[layer].double() / a[layer].double().norm()
            rest = d - (d @ unit) * unit
            if float(rest.norm()) <= 1e-6 * float(d.norm()):
                raise VectorError(f"layer {layer}: the vectors are parallel, so nothing is left of one "
                                  "orthogonal to the other; steer them without --orthogonalize")
            d = rest * (d.norm() / rest.norm())
        directions[layer] = d.to(torch.float32)
    return SteeringVector(directions, {**b.metadata, "orthogonalized_to": a.sha256()})
