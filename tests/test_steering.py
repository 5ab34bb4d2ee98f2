"""Reading and injection: exactness, peer parity, hook hygiene, KV-cache correctness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repe_tradeoff.engine.steering import SteeringError, steer
from repe_tradeoff.models.loading import find_layers
from repe_tradeoff.vectors.reading import extract, mean_direction, pca_direction, read_hidden_states
from repe_tradeoff.vectors.vector import SteeringVector, VectorError
from tests.helpers import random_vector, tiny_model


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_norm_zero_is_exactly_unsteered(arch_model):
    _, model = arch_model
    ids = torch.randint(1, 255, (3, 9))
    with torch.no_grad():
        plain = model(ids).logits
        with steer(model, random_vector(seed=1), 0.0):
            steered = model(ids).logits
    assert torch.equal(plain, steered)


def test_adds_r_times_v_to_each_steered_block_output(arch_model):
    _, model = arch_model
    v = random_vector(layers=(2,), seed=1)
    ids = torch.randint(1, 255, (2, 5))
    block = find_layers(model)[2]
    seen = []
    handle = block.register_forward_hook(lambda m, a, out: seen.append((out[0] if isinstance(out, tuple) else out).clone()))
    with torch.no_grad():
        model(ids)
        with steer(model, v, 3.0):
            model(ids)
    handle.remove()
    # our hook runs after the recording hook registered earlier, so compare one block later
    nxt = find_layers(model)[3]
    got = []
    h2 = nxt.register_forward_pre_hook(lambda m, args, kwargs: got.append((args[0] if args else kwargs["hidden_states"]).clone()), with_kwargs=True)
    with torch.no_grad(), steer(model, v, 3.0):
        model(ids)
    h2.remove()
    torch.testing.assert_close(got[0], seen[0] + 3.0 * v[2], rtol=1e-5, atol=1e-5)


def test_per_row_norms_equal_separate_runs(arch_model):
    _, model = arch_model
    v = random_vector(seed=1)
    ids = torch.randint(1, 255, (1, 8)).repeat(3, 1)
    norms = torch.tensor([-2.0, 0.5, 4.0])
    with torch.no_grad():
        with steer(model, v, norms):
            batched = model(ids).logits
        for row, r in enumerate(norms.tolist()):
            with steer(model, v, r):
                single = model(ids[row : row + 1]).logits
            torch.testing.assert_close(batched[row : row + 1], single, rtol=1e-4, atol=1e-4)


def test_hooks_removed_also_after_exception():
    model = tiny_model("llama")
    before = _hooks(model)
    with pytest.raises(RuntimeError, match="boom"):
        with steer(model, random_vector(seed=1), 1.0):
            assert _hooks(model) > before
            raise RuntimeError("boom")
    assert _hooks(model) == before
    with pytest.raises(SteeringError, match="one norm per row"):
        with torch.no_grad(), steer(model, random_vector(seed=1), torch.tensor([1.0, 2.0])):
            model(torch.randint(1, 255, (3, 4)))
    assert _hooks(model) == before


@pytest.mark.parametrize("positions", ["all", "after-prompt", "last"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_kv_cached_generation_matches_uncached(arch, positions):
    """Steered logits of each generated token are the same with and without the KV cache."""
    model = tiny_model(arch)
    v = random_vector(seed=1)
    prompt = torch.randint(1, 255, (2, 6))
    with torch.no_grad(), steer(model, v, 2.5, positions=positions):
        out = model.generate(prompt, max_new_tokens=5, do_sample=False, use_cache=True,
                             output_logits=True, return_dict_in_generate=True, pad_token_id=0)
    cached = torch.stack(out.logits, 1)
    full = out.sequences
    with torch.no_grad(), steer(model, v, 2.5, positions=positions, prompt_lengths=[6, 6]):
        uncached = model(full[:, :-1]).logits[:, 5:]
    torch.testing.assert_close(cached, uncached, rtol=1e-4, atol=1e-4)
    if positions != "all":  # steering only from the prompt end on leaves the prompt's own logits alone
        with torch.no_grad():
            plain = model(prompt).logits
            with steer(model, v, 2.5, positions=positions, prompt_lengths=[6, 6]):
                part = model(prompt).logits
        torch.testing.assert_close(plain[:, :4], part[:, :4])


def _block_output(model, layer: int, ids, **steering) -> torch.Tensor:
    """Block ``layer``'s output as the next block sees it (a hook registered after steer's runs after it)."""
    seen = []

    def record(module, args, output):
        seen.append((output[0] if isinstance(output, tuple) else output).clone())

    with torch.no_grad():
        if steering:
            with steer(model, **steering):
                handle = find_layers(model)[layer].register_forward_hook(record)
                model(ids)
        else:
            handle = find_layers(model)[layer].register_forward_hook(record)
            model(ids)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("operator", ["ablate", "ablate-then-add"])
def test_ablate_removes_the_direction(operator):
    """h − (h·v̂)v̂ (then + r·v), against a hand computation on the unsteered block output."""
    model = tiny_model("llama")
    v = SteeringVector({2: 3.0 * random_vector(layers=(2,), seed=1)[2]})  # not unit length: v̂ = v / ‖v‖
    ids = torch.randint(1, 255, (2, 5))
    plain = _block_output(model, 2, ids)
    r = 0.0 if operator == "ablate" else 1.5
    got = _block_output(model, 2, ids, vector=v, norm=r, operator=operator)
    unit = (v[2] / v[2].norm()).double()
    h = plain.double()
    expected = h - (h @ unit).unsqueeze(-1) * unit + r * v[2].double()
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    if operator == "ablate":
        assert float((got.double() @ unit).abs().max()) < 1e-4  # nothing left along the direction
        assert float((plain.double() @ unit).abs().max()) > 1e-2  # and there was something to remove


def test_pca_finds_the_axis_the_pairs_differ_along():
    """Pairs that differ along a known axis (by amounts of either sign) give that axis."""
    rng = np.random.default_rng(3)
    axis = rng.normal(size=16)
    axis /= np.linalg.norm(axis)
    m = rng.normal(size=(40, 16))
    amounts = rng.normal(size=40) * 3.0 + 1.0
    a = m + amounts[:, None] * axis + 0.05 * rng.normal(size=(40, 16))
    for seed in (0, 7):
        ours = pca_direction(torch.tensor(a), torch.tensor(m), seed=seed).double().numpy()
        assert abs(float(ours @ axis)) / np.linalg.norm(ours) > 0.999


def test_extract_orients_and_normalises():
    model = tiny_model("gpt2")

    class Tok:
        pad_token_id = 0

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [ord(c) % 250 + 1 for c in text]}

    pairs = [(f"yes {i} good", f"no {i} bad!") for i in range(12)]
    for method in ("pca", "mean", "probe"):
        vec, report = extract(model, Tok(), pairs, [1, 2], method=method)
        states = read_hidden_states(model, Tok(), [p[0] for p in pairs] + [p[1] for p in pairs], [1, 2])
        for layer in (1, 2):
            assert abs(float(vec[layer].norm()) - 1.0) < 1e-5
            gap = (states[layer][:12] - states[layer][12:]) @ vec[layer]
            assert float(gap.mean()) > 0, f"{method}: aligned texts must project higher"
        assert {s.layer for s in report} == {1, 2}


def test_read_hidden_states_is_padding_invariant():
    model = tiny_model("llama")

    class Tok:
        pad_token_id = 0

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [ord(c) % 250 + 1 for c in text]}

    texts = ["a", "a much longer text here"]
    together = read_hidden_states(model, Tok(), texts, [2], batch_size=2)
    alone = read_hidden_states(model, Tok(), texts[:1], [2], batch_size=1)
    torch.testing.assert_close(together[2][0], alone[2][0], rtol=1e-5, atol=1e-5)


def test_vector_roundtrip_and_checks(tmp_path):
    v = random_vector(seed=1)
    v = SteeringVector(v.directions, {"method": "pca"})
    path = v.save(tmp_path / "v.safetensors")
    back = SteeringVector.load(path)
    assert back.sha256() == v.sha256() and back.metadata == {"method": "pca"}
    assert torch.allclose((2 * back)[1], 2 * v[1]) and torch.allclose((-back)[2], -v[2])
    assert torch.allclose((back + back)[1], 2 * v[1])
    model = tiny_model("llama")
    v.check_model(model)
    with pytest.raises(VectorError, match="hidden size"):
        SteeringVector({1: torch.ones(7)}).check_model(model)
    with pytest.raises(VectorError, match="layers"):
        SteeringVector({9: torch.ones(32)}).check_model(model)
    with pytest.raises(VectorError, match="zeros"):
        SteeringVector({1: torch.zeros(32)})
    with pytest.raises(VectorError, match="NaN"):
        SteeringVector({1: torch.full((32,), float("nan"))})


def test_lm_eval_export(tmp_path):
    model = tiny_model("llama")
    v = random_vector(seed=1)
    path = v.to_lm_eval(tmp_path / "steer.pt", model, 4.0)
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {"layers.1", "layers.2"}  # relative to model.base_model, as lm-eval resolves them
    names = dict(model.base_model.named_modules())
    assert all(k in names for k in payload)
    entry = payload["layers.1"]
    assert entry["action"] == "add" and entry["steering_coefficient"] == 4.0
    torch.testing.assert_close(entry["steering_vector"][0], v[1])


@pytest.mark.slow
def test_parity_with_steering_vectors_library(embedded):
    """Our `mean` direction and steered logits equal the steering-vectors library's."""
    sv = pytest.importorskip("steering_vectors")
    model, tok = embedded
    pairs = [
        (f"User: Please help me with task {i}.\nAssistant: I can't help with that.",
         f"User: Please help me with task {i}.\nAssistant: Sure, here it is.")
        for i in range(8)
    ]
    layer = 12
    theirs = sv.train_steering_vector(model, tok, pairs, layers=[layer], read_token_index=-1,
                                      aggregator=sv.mean_aggregator(), batch_size=4)
    states = read_hidden_states(model, tok, [p[0] for p in pairs] + [p[1] for p in pairs], [layer])
    ours = mean_direction(states[layer][:8], states[layer][8:])
    raw = theirs.layer_activations[layer].float()
    cosine = float(torch.nn.functional.cosine_similarity(ours, raw, dim=0))
    assert cosine >= 0.9999
    assert torch.allclose(ours, raw, rtol=1e-3, atol=1e-3)
    ids = tok("User: How do I bake bread?\nAssistant:", return_tensors="pt")["input_ids"]
    multiplier = 0.7
    with torch.no_grad():
        with theirs.apply(model, multiplier=multiplier):
            peer_logits = model(ids).logits
        unit = SteeringVector({layer: ours})
        with steer(model, unit, multiplier):  # r·v with the raw (unnormalised) mean difference
            our_logits = model(ids).logits
    torch.testing.assert_close(our_logits, peer_logits, rtol=1e-4, atol=1e-3)
