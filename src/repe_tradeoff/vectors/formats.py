"""Steering vectors made elsewhere, read by content and mapped onto this project's layer numbering.

Ours: layer ``i`` is the output of decoder block ``i``, counted from 0. Every reader below says
how its source numbers layers (see docs/vector-formats.md):

* ``llama.cpp`` control-vector GGUF (repeng's ``export_gguf`` too): tensor ``direction.N`` is
  added to the output of block ``N`` (llama.cpp's ``il``; ``direction.0`` is refused by
  llama.cpp, which cannot steer block 0), so ``direction.N`` → layer ``N``;
* ``lm-eval`` steer ``.pt``: hook point ``<blocks>.N`` (e.g. ``layers.12``) is the output of
  block ``N`` → layer ``N``; ``steering_vector · steering_coefficient`` is what it adds;
* ``tensors``: a safetensors, ``.pt``, ``.npy`` or ``.npz`` file of one tensor per layer (keys
  ``N``, ``layer.N``, ``layers.N``, ``model.layers.N``, …: the trailing number is the layer), or
  one ``(layers, hidden)`` matrix (or one ``(hidden,)`` vector) whose layers are given
  (``FILE@11-18``);
* ``steering-vectors`` ``SteeringVector`` objects (``layer_activations[N]`` hooks the output of
  block ``N`` when ``layer_type`` is ``decoder_block``) and repeng ``ControlVector`` objects
  (``directions[N]`` is added to the output of ``model.layers[N]``): layer ``N`` → layer ``N``.

Directions keep their lengths (``r`` still multiplies what is stored); the source's format,
the file's SHA-256, the mapping and the lengths of non-unit directions go into
``metadata["source"]``.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from repe_tradeoff.errors import VectorError

SAFETENSORS, GGUF, TORCH, NUMPY, NUMPY_ZIP = "safetensors", "gguf", "torch", "npy", "npz"
#: the GGUF key under which an exported control vector carries this project's metadata
GGUF_METADATA_KEY = "repe_tradeoff.metadata"
_TRAILING_INDEX = re.compile(r"^(?:(?P<prefix>.*?)[._])?(?P<index>-?\d+)$")


# --------------------------------------------------------------------------- detection
def detect_container(path: Path) -> str:
    """What kind of file ``path`` is, from its first bytes (the extension is only a hint)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"GGUF":
        return GGUF
    if head[:6] == b"\x93NUMPY":
        return NUMPY
    if head[:4] == b"PK\x03\x04":  # a zip: torch.save's format, or numpy's .npz
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if names and all(n.endswith(".npy") for n in names):
            return NUMPY_ZIP
        return TORCH
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: an 8-byte header length, then JSON
        return SAFETENSORS
    if head[:1] == b"\x80":  # torch.save's legacy (non-zip) format
        return TORCH
    raise VectorError(
        f"{str(path)!r} is not a steering vector file this library reads (safetensors, a llama.cpp "
        "control-vector .gguf, an lm-eval steer .pt, .pt, .npy or .npz; see docs/vector-formats.md), "
        "or make one with `repe-tradeoff extract`"
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def is_own_safetensors(path: Path) -> bool:
    """A safetensors file written by :meth:`SteeringVector.save` (only ``layer.N`` tensors)."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            keys = list(f.keys())
    except Exception:  # noqa: BLE001  (a damaged file: let SteeringVector.load say so)
        return True
    return bool(keys) and all(re.fullmatch(r"layer\.-?\d+", k) for k in keys)


# --------------------------------------------------------------------------- layer specs
def parse_layer_list(spec: str) -> list[int]:
    """``11-18`` or ``3,5,7`` (or both, comma-separated) as block indices counted from 0."""
    out: list[int] = []
    for part in (p.strip() for p in spec.split(",")):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise VectorError(f"layer list {spec!r}: {part!r} is not N or N-M (block indices from 0, e.g. 11-18)")
        lo, hi = int(m[1]), int(m[2] or m[1])
        if hi < lo:
            raise VectorError(f"layer range {part!r} runs backwards: write it as low-high")
        out += range(lo, hi + 1)
    if len(set(out)) != len(out):
        raise VectorError(f"layer list {spec!r} names a layer twice")
    return out


def split_layer_suffix(path: str | Path) -> tuple[Path, list[int] | None]:
    """``m.npy@11-18`` → (``m.npy``, [11, …, 18]); a path that exists as given has no suffix."""
    text = str(path)
    if Path(text).exists() or "@" not in text:
        return Path(text), None
    file, _, spec = text.rpartition("@")
    return Path(file), parse_layer_list(spec)


# --------------------------------------------------------------------------- building the vector
def _as_tensor(value: Any, where: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "fiu":
            raise VectorError(f"{where} holds {value.dtype} values, not numbers")
        value = torch.from_numpy(np.array(value, dtype=np.float32))
    if not isinstance(value, torch.Tensor):
        raise VectorError(f"{where} is a {type(value).__name__}, not a tensor or array")
    return value.detach().to(torch.float32).cpu().clone()


class Imported(NamedTuple):
    """What a reader found: directions per block, metadata (with ``source``), and where, for messages."""

    directions: dict[int, torch.Tensor]
    metadata: dict
    where: str


def _direction_norms(directions: dict[int, torch.Tensor]) -> dict[str, float] | None:
    norms = {str(k): float(v.double().norm()) for k, v in sorted(directions.items())}
    return norms if any(abs(n - 1.0) > 1e-4 for n in norms.values()) else None


def build(directions: dict[int, torch.Tensor], fmt: str, mapping: str, *, path: Path | None = None,
          metadata: dict | None = None, **details: Any) -> Imported:
    """The directions with their provenance in ``metadata["source"]``, for a SteeringVector."""
    bad = sorted(k for k in directions if k < 0)
    if bad:
        raise VectorError(f"the {fmt} vector has negative layer indices {bad}; give block indices counted "
                          "from 0 (negative ones count from the end only once a model is known)")
    source: dict[str, Any] = {"format": fmt, "layer_mapping": mapping}
    if path is not None:
        source.update(file=str(path), sha256=file_sha256(path))
    norms = _direction_norms(directions)
    if norms:
        source["direction_norms"] = norms
    source.update({k: v for k, v in details.items() if v is not None})
    meta = {**(metadata or {}), "source": source}
    where = f"{str(path)!r}" if path is not None else f"the {fmt} vector"
    return Imported(dict(sorted(directions.items())), meta, where)


# --------------------------------------------------------------------------- files
def read_vector_file(path: Path, layers: list[int] | None = None) -> Imported:
    """Any supported vector file that is not this project's own safetensors."""
    kind = detect_container(path)
    if kind == GGUF:
        if layers is not None:
            raise VectorError(f"{str(path)!r} names its layers (direction.N); drop the @{layers} suffix")
        return read_gguf(path)
    if kind == SAFETENSORS:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors: Any = load_file(path)
        except (SafetensorError, OSError, ValueError) as err:
            raise VectorError(f"{str(path)!r} is not a readable safetensors file ({err})") from None
        return from_tensors(tensors, path, layers)
    if kind in (NUMPY, NUMPY_ZIP):
        try:
            loaded = np.load(path, allow_pickle=False)  # never unpickle objects
            data = {k: loaded[k] for k in loaded.files} if kind == NUMPY_ZIP else loaded
        except ValueError as err:
            raise VectorError(f"{str(path)!r} holds Python objects ({err}); save plain float arrays") from None
        return from_tensors(data, path, layers)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle code
    except Exception as err:  # noqa: BLE001  (torch raises UnpicklingError, RuntimeError, …)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise VectorError(f"{str(path)!r} could not be read as plain tensors ({first}); "
                          "save only tensors, numbers and strings in it (no custom classes)") from None
    if isinstance(payload, dict) and payload and all(isinstance(v, dict) and "steering_vector" in v
                                                     for v in payload.values()):
        if layers is not None:
            raise VectorError(f"{str(path)!r} names its hook points; drop the @ layer suffix")
        return from_lm_eval(payload, path)
    return from_tensors(payload, path, layers)


def read_gguf(path: Path) -> Imported:
    """A llama.cpp control vector: ``direction.N`` (float32, 1-D) is added to block N's output."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except Exception as err:  # noqa: BLE001
        raise VectorError(f"{str(path)!r} is not a readable GGUF file ({err})") from None
    arch = _gguf_string(reader, "general.architecture")
    if arch not in (None, "controlvector"):
        raise VectorError(f"{str(path)!r} is a GGUF {arch!r} model, not a control vector: pass it as --model")
    directions: dict[int, torch.Tensor] = {}
    for tensor in reader.tensors:
        m = re.fullmatch(r"direction\.(\d+)", tensor.name)
        if not m:
            raise VectorError(f"{str(path)!r} holds tensor {tensor.name!r}; a control vector holds only direction.N")
        layer = int(m[1])
        if layer == 0:
            raise VectorError(f"{str(path)!r} has direction.0, which llama.cpp refuses (it cannot steer "
                              "block 0's output); drop that tensor")
        data = np.asarray(tensor.data)
        if data.dtype != np.float32 or data.ndim != 1:
            raise VectorError(f"{str(path)!r}: {tensor.name} is {data.dtype} of shape {data.shape}; "
                              "llama.cpp reads float32 1-D directions only")
        directions[layer] = directions.get(layer, torch.zeros(len(data))) + torch.from_numpy(data.copy())
    if not directions:
        raise VectorError(f"{str(path)!r} holds no direction.N tensors")
    ours = _gguf_string(reader, GGUF_METADATA_KEY)
    try:
        metadata = json.loads(ours) if ours else {}
    except ValueError:
        metadata = {}
    metadata = metadata if isinstance(metadata, dict) else {}
    metadata.pop("source", None)  # the provenance is this file's, recorded below
    return build(directions, "llama.cpp", "direction.N → layer N (the output of block N)", path=path,
                 metadata=metadata, model_hint=_gguf_string(reader, "controlvector.model_hint"))


def _gguf_string(reader, key: str) -> str | None:
    field = reader.get_field(key)
    if field is None or not field.parts:
        return None
    return bytes(field.parts[-1]).decode("utf-8", errors="replace")


def from_lm_eval(payload: dict, path: Path | None = None) -> Imported:
    """lm-eval's ``steered`` format: ``{hookpoint: {steering_vector, steering_coefficient, action, bias}}``.

    The directions are the ``steering_vector`` entries; when every hook point has the same
    coefficient c, steering at r = c reproduces the file (recorded as ``norm``), else each
    direction is multiplied by its own coefficient and r = 1 reproduces it."""
    where = f"{str(path)!r}" if path is not None else "the lm-eval steer config"
    vectors: dict[int, torch.Tensor] = {}
    coefficients: dict[int, float] = {}
    prefixes = set()
    for hookpoint, entry in payload.items():
        action = entry.get("action", "add")
        if action != "add":
            raise VectorError(f"{where}: hook point {hookpoint!r} uses action {action!r}; only `add` is steering "
                              "by a vector (clamping is not)")
        if entry.get("bias") is not None or entry.get("head_index") is not None:
            raise VectorError(f"{where}: hook point {hookpoint!r} has a bias or head_index; only whole-block "
                              "additions can be imported")
        m = _TRAILING_INDEX.match(str(hookpoint))
        if not m:
            raise VectorError(f"{where}: hook point {hookpoint!r} is not a decoder block (e.g. layers.12); "
                              "this library steers block outputs only")
        layer = int(m["index"])
        prefixes.add(m["prefix"] or "")
        vectors[layer] = _as_tensor(entry["steering_vector"], f"{where} {hookpoint!r}").reshape(-1)
        coefficients[layer] = float(entry.get("steering_coefficient", 1.0))
    if len(prefixes) > 1:
        raise VectorError(f"{where}: hook points under several module lists {sorted(prefixes)}; "
                          "a steering vector steers one stack of decoder blocks")
    distinct = set(coefficients.values())
    if len(distinct) == 1:
        norm, directions = distinct.pop(), vectors
    else:
        norm, directions = 1.0, {k: v * coefficients[k] for k, v in vectors.items()}
    return build(directions, "lm-eval", "hook point <blocks>.N → layer N (the output of block N)", path=path,
                 norm=norm, hook_prefix=prefixes.pop())


def from_tensors(data: Any, path: Path | None, layers: list[int] | None) -> Imported:
    """One tensor per layer (a mapping whose keys end in the layer index), or a matrix / vector
    whose layers are given."""
    where = f"{str(path)!r}" if path is not None else "the tensors"
    how = "key N / layer.N / …N → layer N (the output of block N)"
    if isinstance(data, dict) and len(data) == 1 and layers is not None:
        data = next(iter(data.values()))  # one matrix under some name, its layers given
    if isinstance(data, (torch.Tensor, np.ndarray)):
        tensor = _as_tensor(data, where)
        rows = tensor.reshape(1, -1) if tensor.dim() == 1 else tensor
        if tensor.dim() not in (1, 2):
            raise VectorError(f"{where} holds a tensor of shape {tuple(tensor.shape)}; give (layers, hidden) or (hidden,)")
        if layers is None:
            suffix = "11-18" if rows.shape[0] == 8 else f"0-{rows.shape[0] - 1}"
            raise VectorError(f"{where} holds a {tuple(tensor.shape)} tensor without layer indices: say which "
                              f"blocks its rows steer, e.g. --vector {path}@{suffix}")
        if len(layers) != rows.shape[0]:
            raise VectorError(f"{where} has {rows.shape[0]} rows but {len(layers)} layers were given ({layers})")
        return build(dict(zip(layers, rows)), "tensors", "row i → the i-th given layer", path=path)
    if not isinstance(data, dict) or not data:
        raise VectorError(f"{where} holds {type(data).__name__}, not tensors keyed by layer")
    if layers is not None:
        raise VectorError(f"{where} names its layers by key; drop the @ layer suffix")
    directions: dict[int, torch.Tensor] = {}
    for key, value in data.items():
        m = _TRAILING_INDEX.match(str(key))
        if not m:
            raise VectorError(f"{where}: key {key!r} does not end in a layer index (use N, layer.N or layers.N)")
        layer = int(m["index"])
        if layer in directions:
            raise VectorError(f"{where}: two keys name layer {layer}")
        tensor = _as_tensor(value, f"{where} {key!r}")
        if tensor.dim() == 2 and tensor.shape[0] == 1:
            tensor = tensor[0]  # a (1, hidden) row, as lm-eval and others store them
        if tensor.dim() != 1:
            raise VectorError(f"{where}: {key!r} has shape {tuple(tensor.shape)}, not (hidden,)")
        directions[layer] = tensor
    return build(directions, "tensors", how, path=path)


# --------------------------------------------------------------------------- objects of other libraries
def from_steering_vectors(obj: Any) -> Imported:
    """A steering-vectors ``SteeringVector`` (not imported: read by its attributes)."""
    layer_type = getattr(obj, "layer_type", "decoder_block")
    activations = getattr(obj, "layer_activations", None)
    if not isinstance(activations, dict):
        raise VectorError(f"{type(obj).__name__} is not a steering-vectors SteeringVector (no layer_activations)")
    if layer_type != "decoder_block":
        raise VectorError(f"the steering-vectors vector hooks {layer_type!r} modules; only decoder_block "
                          "vectors (a block's output) can be imported")
    directions = {int(k): _as_tensor(v, f"layer {k}").reshape(-1) for k, v in activations.items()}
    return build(directions, "steering-vectors", "layer_activations[N] → layer N (the output of block N)",
                 library_type=f"{type(obj).__module__}.{type(obj).__qualname__}")


def from_repeng(obj: Any) -> Imported:
    """A repeng ``ControlVector(model_type, directions)`` (not imported: read by its attributes)."""
    directions_in = getattr(obj, "directions", None)
    if not isinstance(directions_in, dict):
        raise VectorError(f"{type(obj).__name__} is not a repeng ControlVector (no directions mapping)")
    directions = {int(k): _as_tensor(np.asarray(v), f"layer {k}").reshape(-1) for k, v in directions_in.items()}
    return build(directions, "repeng", "directions[N] → layer N (the output of model.layers[N])",
                 model_hint=getattr(obj, "model_type", None))
