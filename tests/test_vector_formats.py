"""Vectors in other formats: each importer maps its source's layers onto ours (checked against the
source's own runtime, or plain torch hooks where the runtime is not a Python library), every
import format round-trips through a sweep, and the exports are written in the target's own
convention."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from repe_tradeoff.engine.steering import steer
from repe_tradeoff.vectors.export import export_commands, export_vector, write_llama_cpp
from repe_tradeoff.vectors.vector import SteeringVector, VectorError
from repe_tradeoff.workflows.sweep import SweepPlan, run_config, run_sweep
from tests.helpers import ByteTok, save_tiny_model, sweep_tasks, tiny_model

IDS = torch.tensor([[5, 17, 42, 9, 77, 3]])
R = 2.5


def _direction(seed: int = 3, length: float = 3.0) -> torch.Tensor:
    d = torch.randn(32, generator=torch.Generator().manual_seed(seed))
    return d / d.norm() * length  # not a unit vector: its length must survive the import


def _blocks(model):
    return model.model.layers


def _hooked_logits(model, layer: int, delta: torch.Tensor) -> torch.Tensor:
    """Plain torch: add ``delta`` to the output of decoder block ``layer``."""
    def hook(module, args, output):
        if isinstance(output, tuple):
            return (output[0] + delta, *output[1:])
        return output + delta

    handle = _blocks(model)[layer].register_forward_hook(hook)
    try:
        with torch.no_grad():
            return model(IDS).logits
    finally:
        handle.remove()


def _ours(model, vector: SteeringVector, r: float) -> torch.Tensor:
    with torch.no_grad(), steer(model, vector, r):
        return model(IDS).logits


def _assert_layer(model, vector: SteeringVector, layer: int, d: torch.Tensor, reference: torch.Tensor, r: float):
    """Our steering of the imported vector equals the source runtime's, and an off-by-one would not."""
    assert vector.layers == [layer]
    got = _ours(model, vector, r)
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-5)
    for wrong in (layer - 1, layer + 1):
        off = _hooked_logits(model, wrong, r * d)
        assert float((off - reference).abs().max()) > 1e-3, f"layer {wrong} is indistinguishable from {layer}"


# --------------------------------------------------------------------------- layer mapping per format
def _write_gguf(path: Path, directions: dict[int, torch.Tensor], arch: str = "controlvector") -> Path:
    """What repeng's ``export_gguf`` writes (the file llama.cpp's control-vector loader reads)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_string(f"{arch}.model_hint", "llama")
    writer.add_uint32(f"{arch}.layer_count", len(directions))
    for layer, d in directions.items():
        writer.add_tensor(f"direction.{layer}", d.numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _llama_cpp_reference(model, path: Path, strength: float) -> torch.Tensor:
    """llama.cpp's semantics, ported line by line from common_control_vector_load_one and
    llama_adapter_cvec: ``direction.N`` lands at buffer offset (N − 1)·n_embd, and the buffer's
    slice for layer il ≥ 1 is added to the output of block il."""
    import gguf

    reader = gguf.GGUFReader(path)
    n_embd = model.config.hidden_size
    data = np.zeros(0, dtype=np.float32)
    for tensor in reader.tensors:
        layer_idx = int(tensor.name.split(".", 1)[1])
        assert tensor.name.startswith("direction.") and layer_idx > 0
        data = np.pad(data, (0, max(0, n_embd * layer_idx - len(data))))
        data[n_embd * (layer_idx - 1): n_embd * layer_idx] += np.asarray(tensor.data) * strength
    handles = []
    for il in range(1, len(_blocks(model))):
        off = n_embd * (il - 1)
        if off + n_embd <= len(data):
            delta = torch.from_numpy(data[off: off + n_embd].copy())
            handles.append(_blocks(model)[il].register_forward_hook(
                lambda m, a, out, delta=delta: (out[0] + delta, *out[1:]) if isinstance(out, tuple) else out + delta))
    try:
        with torch.no_grad():
            return model(IDS).logits
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("layer", [1, 2])
def test_llama_cpp_gguf_layer_mapping(tmp_path, layer):
    model, d = tiny_model("llama"), _direction()
    path = _write_gguf(tmp_path / "cv.gguf", {layer: d})
    vector = SteeringVector.load(path)
    _assert_layer(model, vector, layer, d, _llama_cpp_reference(model, path, R), R)
    assert vector.metadata["source"]["format"] == "llama.cpp"
    assert vector.metadata["source"]["model_hint"] == "llama"
    assert vector.metadata["source"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert vector.metadata["source"]["direction_norms"] == {str(layer): pytest.approx(3.0, rel=1e-6)}


def test_lm_eval_pt_layer_mapping(tmp_path):
    """lm-eval's own `steer` hooks (hook points resolved under model.base_model) are the reference."""
    hf_steered = pytest.importorskip("lm_eval.models.hf_steered")
    model, d, layer, coefficient = tiny_model("llama"), _direction(), 2, 1.5
    payload = {f"layers.{layer}": {"steering_vector": d.reshape(1, -1), "steering_coefficient": coefficient,
                                   "action": "add", "bias": None}}
    torch.save(payload, tmp_path / "steer.pt")
    vector = SteeringVector.load(tmp_path / "steer.pt")
    add = hf_steered.SteeredModel.add
    hooks = {f"layers.{layer}": lambda acts: add(acts, vector=d * coefficient, head_index=None)}
    with torch.no_grad(), hf_steered.steer(model, hooks):
        reference = model(IDS).logits
    assert vector.metadata["source"]["norm"] == coefficient  # r = the coefficient reproduces the file
    _assert_layer(model, vector, layer, d, reference, coefficient)


def test_steering_vectors_object_layer_mapping():
    sv = pytest.importorskip("steering_vectors")
    model, d, layer = tiny_model("llama"), _direction(), 2
    theirs = sv.SteeringVector({layer: d.clone()}, "decoder_block")
    with torch.no_grad(), theirs.apply(model, multiplier=R):
        reference = model(IDS).logits
    vector = SteeringVector.from_steering_vectors(theirs)
    _assert_layer(model, vector, layer, d, reference, R)
    with pytest.raises(VectorError, match="decoder_block"):
        SteeringVector.from_steering_vectors(sv.SteeringVector({layer: d}, "mlp"))


def _repeng():
    np.float_ = np.float64  # repeng 0.4.0 annotates with np.float_, which NumPy 2 removed
    return pytest.importorskip("repeng")


def test_repeng_object_and_its_gguf_layer_mapping(tmp_path):
    """repeng's ControlModel (it wraps model.layers[N]) is the reference; its export_gguf file
    imports to the same vector."""
    repeng = _repeng()
    d, layer = _direction(), 2
    cv = repeng.ControlVector(model_type="llama", directions={layer: d.numpy().copy()})
    wrapped = repeng.ControlModel(tiny_model("llama"), [layer])  # mutates its model: a copy of its own
    wrapped.set_control(cv, R)
    with torch.no_grad():
        reference = wrapped(IDS).logits
    model = tiny_model("llama")
    vector = SteeringVector.from_repeng(cv)
    _assert_layer(model, vector, layer, d, reference, R)
    cv.export_gguf(str(tmp_path / "repeng.gguf"))
    from_file = SteeringVector.load(tmp_path / "repeng.gguf")
    assert from_file.sha256() == vector.sha256() and from_file.metadata["source"]["model_hint"] == "llama"


def test_repeng_shaped_object_without_repeng():
    """The object shape alone (``model_type``, ``directions``) is enough: repeng is not imported."""
    class ControlVector:
        def __init__(self, model_type, directions):
            self.model_type, self.directions = model_type, directions

    model, d = tiny_model("llama"), _direction()
    vector = SteeringVector.from_repeng(ControlVector("llama", {1: d.numpy()}))
    _assert_layer(model, vector, 1, d, _hooked_logits(model, 1, R * d), R)


@pytest.mark.parametrize("kind", ["safetensors", "pt", "npy", "npz", "pt-matrix"])
def test_plain_tensor_files_layer_mapping(tmp_path, kind):
    from safetensors.torch import save_file

    model, d, layer = tiny_model("llama"), _direction(), 2
    if kind == "safetensors":
        path = tmp_path / "v.safetensors"
        save_file({f"model.layers.{layer}": d}, path)
    elif kind == "pt":
        path = tmp_path / "v.pt"
        torch.save({layer: d}, path)
    elif kind == "npy":
        path = tmp_path / "v.npy"
        np.save(path, d.numpy()[None, :])
    elif kind == "npz":
        path = tmp_path / "v.npz"
        np.savez(path, **{f"layer_{layer}": d.numpy()})
    else:
        path = tmp_path / "m.pt"
        torch.save(torch.stack([torch.zeros(32) + 1e-3, d]), path)  # rows for layers 1 and 2
    spec = f"{path}@{layer}" if kind == "npy" else f"{path}@1-2" if kind == "pt-matrix" else path
    vector = SteeringVector.load(spec)
    if kind == "pt-matrix":
        vector = vector.select([layer])
    _assert_layer(model, vector, layer, d, _hooked_logits(model, layer, R * d), R)
    assert vector.metadata["source"]["format"] == "tensors"


# --------------------------------------------------------------------------- round trips through a sweep
def _points(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "points.jsonl").read_text().splitlines()]
    return {(p["task"], p["metric"], p["norm"]): p["mean"] for p in rows}


def _small_tasks():
    alignment, helpfulness = sweep_tasks()
    alignment.items, helpfulness.questions = alignment.items[:2], helpfulness.questions[:3]
    return [alignment, helpfulness]


def _sweep(vector: SteeringVector, out: Path) -> Path:
    model = tiny_model("llama")
    plan = SweepPlan(norms=[-2.0, 0.0, 3.0], tasks=_small_tasks(), layers=[1, 2], chunk_size=8, batch_size=32)
    config = run_config(plan, vector, model_name="tiny", model_revision=None, dtype="float32")
    return run_sweep(model, ByteTok(), vector, plan, out, config=config)


def _save_as(original: SteeringVector, fmt: str, tmp_path: Path) -> str:
    from safetensors.torch import save_file

    dirs = original.directions
    if fmt == "llama.cpp":
        return str(write_llama_cpp(original, tmp_path / "v.gguf", 1.0, "llama"))
    if fmt == "lm-eval":
        return str(original.to_lm_eval(tmp_path / "v.pt", tiny_model("llama"), 1.0))
    if fmt == "safetensors":
        save_file({f"layers.{k}": v for k, v in dirs.items()}, tmp_path / "v.safetensors")
        return str(tmp_path / "v.safetensors")
    if fmt == "pt":
        torch.save({k: v for k, v in dirs.items()}, tmp_path / "t.pt")
        return str(tmp_path / "t.pt")
    if fmt == "npy":
        np.save(tmp_path / "v.npy", torch.stack([dirs[1], dirs[2]]).numpy())
        return f"{tmp_path / 'v.npy'}@1-2"
    np.savez(tmp_path / "v.npz", **{str(k): v.numpy() for k, v in dirs.items()})
    return str(tmp_path / "v.npz")


@pytest.fixture(scope="module")
def original_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("original")
    g = torch.Generator().manual_seed(5)
    original = SteeringVector({layer: torch.randn(32, generator=g) for layer in (1, 2)}, {"method": "pca"})
    original = SteeringVector.load(original.save(tmp / "v.safetensors"))
    return original, _points(_sweep(original, tmp / "run"))


@pytest.mark.parametrize("fmt", ["llama.cpp", "lm-eval", "safetensors", "pt", "npy", "npz"])
def test_every_import_format_round_trips_through_a_sweep(tmp_path, original_sweep, fmt):
    original, expected = original_sweep
    imported = SteeringVector.load(_save_as(original, fmt, tmp_path))
    assert imported.layers == original.layers
    run = _sweep(imported, tmp_path / "run")
    got = _points(run)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    source = json.loads((run / "config.json").read_text())["vector_source"]
    assert source["format"] == {"pt": "tensors", "npy": "tensors", "npz": "tensors",
                                "safetensors": "tensors"}.get(fmt, fmt)
    from repe_tradeoff.runs.schema.config import RunConfig

    RunConfig.model_validate_json((run / "config.json").read_text())


# --------------------------------------------------------------------------- exports
def test_llama_cpp_export_follows_its_convention(tmp_path):
    import gguf

    model = tiny_model("llama")
    v = SteeringVector({1: _direction(1, 1.0), 3: _direction(2, 1.0)}, {"method": "pca"})
    path = export_vector(v, "llama.cpp", tmp_path / "out.gguf", 4.0, model)
    reader = gguf.GGUFReader(path)
    field = reader.get_field("general.architecture")
    assert bytes(field.parts[-1]).decode() == "controlvector"
    assert bytes(reader.get_field("controlvector.model_hint").parts[-1]).decode() == "llama"
    assert int(reader.get_field("controlvector.layer_count").parts[-1][0]) == 2
    tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
    assert set(tensors) == {"direction.1", "direction.3"}
    assert all(a.dtype == np.float32 and a.ndim == 1 for a in tensors.values())
    np.testing.assert_allclose(tensors["direction.3"], 4.0 * v[3].numpy(), rtol=1e-6)
    # llama.cpp at strength 1 steers as we do at r = 4
    torch.testing.assert_close(_llama_cpp_reference(model, path, 1.0), _ours(model, v, 4.0), rtol=1e-5, atol=1e-5)
    with pytest.raises(VectorError, match="block 0"):
        export_vector(SteeringVector({0: _direction()}), "llama.cpp", tmp_path / "zero.gguf", 1.0, model)


def test_safetensors_export_steers_at_r_one(tmp_path):
    model = tiny_model("llama")
    v = SteeringVector({2: _direction(4, 1.0)})
    path = export_vector(v, "safetensors", tmp_path / "r.safetensors", 3.0, model)
    back = SteeringVector.load(path)
    assert back.metadata["exported_at_norm"] == 3.0
    torch.testing.assert_close(_ours(model, back, 1.0), _ours(model, v, 3.0), rtol=1e-5, atol=1e-5)


def test_export_commands_for_fit():
    config = {"vector_path": "runs/h/v.safetensors", "model": "default", "layers": [11, 12],
              "vector": {"layers": [11, 12, 13]}, "positions": "all", "operator": "add"}
    lines = export_commands("runs/h", config, 3.2812)
    assert lines[0] == "take r = 3.28 with you:"
    assert lines[1] == ("  repe-tradeoff export --format llama.cpp --vector runs/h/v.safetensors --norm 3.2812 "
                        "--layers 11,12 --out steer-r3.28.gguf")
    assert [line.split("--format ")[1].split()[0] for line in lines[1:]] == ["llama.cpp", "lm-eval", "safetensors"]
    assert export_commands("runs/h", {**config, "operator": "ablate"}, 3.0) == []


# --------------------------------------------------------------------------- errors that say what to do
def test_import_errors_name_the_problem_and_the_fix(tmp_path):
    with pytest.raises(VectorError, match=r"without layer indices.*@"):
        np.save(tmp_path / "m.npy", np.ones((3, 32), dtype=np.float32))
        SteeringVector.load(tmp_path / "m.npy")
    with pytest.raises(VectorError, match="3 rows but 2 layers"):
        SteeringVector.load(f"{tmp_path / 'm.npy'}@4-5")
    with pytest.raises(VectorError, match="pass it as --model"):
        SteeringVector.load(_write_gguf(tmp_path / "model.gguf", {1: _direction()}, arch="llama"))
    with pytest.raises(VectorError, match="direction.0"):
        SteeringVector.load(_write_gguf(tmp_path / "zero.gguf", {0: _direction()}))
    with pytest.raises(VectorError, match="clamp"):
        torch.save({"layers.1": {"steering_vector": torch.ones(1, 32), "steering_coefficient": 1.0,
                                 "action": "clamp", "bias": None}}, tmp_path / "clamp.pt")
        SteeringVector.load(tmp_path / "clamp.pt")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(VectorError, match="repe-tradeoff extract"):
        SteeringVector.load(tmp_path / "notes.txt")


# --------------------------------------------------------------------------- the command line
def _cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    import sys

    from repe_tradeoff.cli import main

    monkeypatch.setattr(sys, "argv", ["repe-tradeoff", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as stop:
        code = stop.code or 0
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_export_command(tmp_path, monkeypatch, capsys):
    import gguf


    model_dir = save_tiny_model(tmp_path / "tiny")
    rows = torch.stack([_direction(7, 1.0), _direction(8, 1.0)])
    np.save(tmp_path / "v.npy", rows.numpy())
    vector = f"{tmp_path / 'v.npy'}@2-3"
    code, out = _cli(monkeypatch, capsys, "export", "--format", "llama.cpp", "--vector", vector, "--norm", 2,
                     "--out", tmp_path / "o.gguf", "--model", model_dir)
    assert code == 0 and "--control-vector" in out
    tensors = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(tmp_path / "o.gguf").tensors}
    np.testing.assert_allclose(tensors["direction.3"], 2 * rows[1].numpy(), rtol=1e-6)
    code, _ = _cli(monkeypatch, capsys, "export", "--format", "lm-eval", "--vector", vector, "--norm", 2,
                   "--out", tmp_path / "o.pt", "--model", model_dir, "--layers", "3")
    payload = torch.load(tmp_path / "o.pt", weights_only=True)
    assert code == 0 and set(payload) == {"layers.3"} and payload["layers.3"]["steering_coefficient"] == 2.0
    code, _ = _cli(monkeypatch, capsys, "export-lm-eval", "--vector", vector, "--norm", 2,
                   "--out", tmp_path / "alias.pt", "--model", model_dir)
    assert code == 0 and set(torch.load(tmp_path / "alias.pt", weights_only=True)) == {"layers.2", "layers.3"}
    code, out = _cli(monkeypatch, capsys, "export", "--format", "onnx", "--vector", vector, "--norm", 2,
                     "--out", tmp_path / "x", "--model", model_dir)
    assert code == 2 and "llama.cpp, lm-eval, safetensors" in out
    code, out = _cli(monkeypatch, capsys, "export", "--format", "llama.cpp", "--vector", tmp_path / "v.npy",
                     "--norm", 2, "--out", tmp_path / "x.gguf", "--model", model_dir)
    assert code == 1 and "v.npy@" in out and "Traceback" not in out


def test_fit_prints_the_export_commands_under_the_recommendation(tmp_path):
    """On the authors' curves (a run folder with a vector beside it), the answer's lines end with
    one export command per target at the recommended norm."""
    from repe_tradeoff.reporting.answer import answer_lines
    from repe_tradeoff.theory import fit_run, import_paper_curves

    paper = Path(__file__).resolve().parent / "fixtures" / "paper-curves"
    run = import_paper_curves(paper / "international_law_Llama-2-13b-chat_harmfulness.json",
                              paper / "behavior_harmful_Llama-2-13b-chat_harmfulness.json", tmp_path / "run")
    SteeringVector({1: _direction()}).save(run / "vector.safetensors")
    fits = fit_run(run, n_boot=5)
    norm = fits["recommendation"]["norm"]
    lines = answer_lines(run)
    start = lines.index(f"take r = {norm:.3g} with you:")
    assert lines[0].startswith("recommendation:") and start > 0
    assert lines[start + 1] == (f"  repe-tradeoff export --format llama.cpp --vector {run / 'vector.safetensors'} "
                                f"--norm {norm:.6g} --model Llama-2-13b-chat --out steer-r{norm:.3g}.gguf")
