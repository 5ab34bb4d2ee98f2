"""Take the answer with you: a vector at norm r written in another runtime's own convention.

* ``llama.cpp``: a control-vector GGUF (architecture ``controlvector``, the keys repeng writes:
  ``controlvector.model_hint`` and ``controlvector.layer_count``), one float32 tensor
  ``direction.N = r·v_N`` per steered layer. llama.cpp adds ``direction.N`` to the output of
  block ``N`` (its ``il``), which is our layer ``N``; it has no slot for block 0 and steers every
  token position. Load it with ``llama-cli -m MODEL.gguf --control-vector FILE``.
* ``lm-eval``: the ``.pt`` of lm-evaluation-harness's ``steered`` model (coefficient r, vector v).
* ``safetensors``: this project's own format holding ``r·v`` (steer it at r = 1).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import uuid
from pathlib import Path

import numpy as np
import torch

from repe_tradeoff.vectors.formats import GGUF_METADATA_KEY
from repe_tradeoff.vectors.vector import SteeringVector, VectorError

FORMATS: dict[str, str] = {"llama.cpp": ".gguf", "lm-eval": ".pt", "safetensors": ".safetensors"}


def write_llama_cpp(vector: SteeringVector, path: str | Path, norm: float, model_hint: str) -> Path:
    """``direction.N = norm · v_N`` (float32), with repeng's ``controlvector.*`` keys, atomically."""
    from gguf import GGUFWriter

    if 0 in vector.directions:
        raise VectorError("llama.cpp cannot steer the output of block 0 (its control vectors start at "
                          "direction.1); export the vector without layer 0 (--layers)")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    arch = "controlvector"
    writer = GGUFWriter(str(tmp), arch)
    writer.add_string(f"{arch}.model_hint", model_hint)
    writer.add_uint32(f"{arch}.layer_count", len(vector.layers))
    # llama.cpp ignores keys it does not know; this one lets an import restore the provenance
    writer.add_string(GGUF_METADATA_KEY, json.dumps({**vector.metadata, "exported_at_norm": float(norm)},
                                                    sort_keys=True))
    for layer in vector.layers:
        data = (vector[layer].double() * float(norm)).to(torch.float32).numpy()
        writer.add_tensor(f"direction.{layer}", np.ascontiguousarray(data, dtype=np.float32))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_scaled_safetensors(vector: SteeringVector, path: str | Path, norm: float) -> Path:
    """Our own format holding ``norm · v``: steering it at r = 1 is steering ``v`` at r = norm."""
    scaled = SteeringVector({k: (v.double() * float(norm)).to(torch.float32) for k, v in vector.directions.items()},
                            {**vector.metadata, "exported_at_norm": float(norm)})
    return scaled.save(path)


def export_vector(vector: SteeringVector, fmt: str, path: str | Path, norm: float, model) -> Path:
    """Write ``norm · vector`` for the runtime ``fmt`` (one of FORMATS); ``model`` is the loaded
    model it is meant for (checked, and named in the file)."""
    if fmt not in FORMATS:
        raise VectorError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}")
    if not math.isfinite(norm):
        raise VectorError(f"the norm {norm} is not a finite number: export a norm the run measured, e.g. r* of `fit`")
    path = Path(path)
    if path.is_dir():
        raise VectorError(f"{str(path)!r} is a folder; give a file name, e.g. {str(path / ('steer' + FORMATS[fmt]))!r}")
    vector.check_model(model)
    if fmt == "lm-eval":
        return vector.to_lm_eval(path, model, norm)
    if fmt == "llama.cpp":
        return write_llama_cpp(vector, path, norm, getattr(model.config, "model_type", "unknown"))
    return write_scaled_safetensors(vector, path, norm)


def export_commands(run_dir: str | Path, config: dict, norm: float) -> list[str]:
    """The one command per target that exports the run's vector at ``norm`` (printed by ``fit``)."""
    run_dir = Path(run_dir)
    vector = config.get("vector_path")
    if not vector and (run_dir / "vector.safetensors").is_file():
        vector = str(run_dir / "vector.safetensors")
    if not vector or config.get("operator", "add") != "add":
        return []
    info = config.get("vector") or {}
    args = ["--vector", str(vector), "--norm", f"{norm:.6g}"]
    if config.get("model") and config["model"] != "default":
        args += ["--model", str(config["model"])]
    layers = config.get("layers") or []
    if layers and info.get("layers") and sorted(layers) != sorted(info["layers"]):
        args += ["--layers", ",".join(str(x) for x in layers)]
    stem = f"steer-r{norm:.3g}"
    lines = [f"take r = {norm:.3g} with you:"]
    for fmt, ext in FORMATS.items():
        lines.append("  " + shlex.join(["repe-tradeoff", "export", "--format", fmt, *args, "--out", stem + ext]))
    if config.get("positions", "all") != "all":
        lines.append(f"  (the run steered positions {config['positions']!r}; llama.cpp and lm-eval steer every token)")
    return lines
