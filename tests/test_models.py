"""Model loading, layer discovery and layer specs."""

from __future__ import annotations

import pytest
import torch

from repe_tradeoff.models.loading import (
    ModelError,
    find_final_norm,
    find_layers,
    layer_path,
    load_model,
    middle_layers,
    parse_layers,
    unembedding,
)

EXPECTED_PATHS = {
    "llama": "model.layers",
    "qwen2": "model.layers",
    "gpt2": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
    "opt": "model.decoder.layers",
}


def test_layer_discovery(arch_model):
    arch, model = arch_model
    assert layer_path(model) == EXPECTED_PATHS[arch]
    assert len(find_layers(model)) == 4
    norm = find_final_norm(model)
    assert norm is not None and "Norm" in type(norm).__name__
    assert unembedding(model).shape == (256, 32)


def test_final_norm_and_unembedding_reproduce_logits(arch_model):
    """The final norm's output times U is the model's logits (what the theory's U·δ needs)."""
    _, model = arch_model
    ids = torch.randint(1, 255, (2, 7))
    captured = {}
    handle = find_final_norm(model).register_forward_hook(lambda m, a, out: captured.setdefault("h", out))
    with torch.no_grad():
        logits = model(ids).logits
    handle.remove()
    h = captured["h"]
    if h.shape[-1] != unembedding(model).shape[1]:  # OPT may project after the norm
        pytest.skip("this configuration projects after the final norm")
    torch.testing.assert_close(h @ unembedding(model).T, logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("8-11", [8, 9, 10, 11]),
        ("8,10,12", [8, 10, 12]),
        ("-5", [25]),
        ("-3--1", [27, 28, 29]),
        ("2,8-9,-1", [2, 8, 9, 29]),
        ("middle", list(range(11, 19))),
        ([3, 1], [1, 3]),
        (4, [4]),
    ],
)
def test_parse_layers(spec, expected):
    assert parse_layers(spec, 30) == expected


@pytest.mark.parametrize("spec", ["30", "-31", "5-2", "a", "", "3-x"])
def test_parse_layers_rejects(spec):
    with pytest.raises(ValueError, match="layer"):
        parse_layers(spec, 30)


def test_middle_band_small_models():
    assert middle_layers(4) == [1, 2]
    assert middle_layers(1) == [0]
    assert middle_layers(40) == list(range(16, 24))


def test_folder_and_errors(tmp_path):
    from tests.helpers import tiny_model

    model = tiny_model("llama")
    with pytest.raises(ModelError, match="does not exist"):
        load_model(str(tmp_path / "missing"))
    with pytest.raises(ModelError, match="no config.json"):
        load_model(str(tmp_path))
    with pytest.raises(ModelError, match="does not exist"):
        load_model(str(tmp_path / "x.gguf"))
    with pytest.raises(ModelError, match="offline|Could not load"):
        load_model("nobody-has/this-model-xyz")
    assert model is not None


@pytest.mark.parametrize("dtype", ["float8", "fp32", "", 32])
def test_unknown_dtype_is_refused_before_loading(dtype):
    """Checked first: a spec that could not load either must not hide the dtype's message."""
    with pytest.raises(ModelError, match=r"dtype .* is not one of float32, bfloat16, float16"):
        load_model("nobody-has/this-model-xyz", dtype=dtype)


def test_torch_dtypes_are_accepted(tmp_path):
    from tests.helpers import save_tiny_model

    folder = save_tiny_model(tmp_path / "tiny")
    assert load_model(str(folder), dtype=torch.bfloat16).model.dtype == torch.bfloat16
    assert load_model(str(folder), dtype="float16").model.dtype == torch.float16


@pytest.mark.slow
def test_embedded_model_uses_cache(embedded, monkeypatch):
    """The embedded default goes through the GGUF cache; a second load does not convert again."""
    from repe_tradeoff.models import gguf_cache
    from repe_tradeoff.models import loading as models

    assert len(find_layers(embedded.model)) == 30
    assert layer_path(embedded.model) == "model.layers"
    folder = models.default_model_dir()
    assert folder.parent == gguf_cache.cache_dir() / "gguf"
    assert (folder / "model.safetensors").is_file()

    def no_conversion(*args, **kwargs):
        raise AssertionError("the GGUF file was converted again instead of using the cache")

    calls = []
    original = models._from_pretrained

    def spy(source, *args, **kwargs):
        calls.append(source)
        return original(source, *args, **kwargs)

    monkeypatch.setattr(gguf_cache, "convert_gguf", no_conversion)
    monkeypatch.setattr(models, "_from_pretrained", spy)
    again = load_model("default")
    assert calls == [str(folder)]
    assert again.revision == embedded.revision and again.revision.startswith("sha256:")
    assert again.tokenizer.pad_token is not None
    assert not again.model.training
