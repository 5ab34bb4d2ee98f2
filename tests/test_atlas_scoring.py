"""The atlas' forward: per-row layer masks, rows joining at their lowest layer, and the probe of
many layer sets at once, each against separate ordinary runs."""

from __future__ import annotations

import pytest
import torch

from repe_tradeoff.engine.layer_sets import Entry, PointLayout, score_entries
from repe_tradeoff.engine.scoring import score
from repe_tradeoff.engine.steering import Steering, SteeringError, fan_out_staged, steer
from repe_tradeoff.vectors.vector import SteeringVector
from tests.helpers import ARCHS, random_vector, tiny_model


def _logits(model, ids):
    return model(input_ids=ids).logits


@pytest.mark.parametrize("arch", ARCHS)
def test_per_row_layer_masks_equal_separate_single_layer_runs(arch):
    model, vector = tiny_model(arch), random_vector((0, 1, 2, 3), seed=3, unit=False)
    ids = torch.randint(0, 256, (1, 7), generator=torch.Generator().manual_seed(0)).repeat(4, 1)
    rows = [(1, 2.0), (3, -1.5), (0, 0.7), (2, 4.0)]  # (layer, norm) of each row
    mask = torch.tensor([[layer == j for j in range(4)] for layer, _ in rows])
    norms = torch.tensor([r for _, r in rows])
    with torch.no_grad(), steer(model, vector, norms, layers=[0, 1, 2, 3], layer_mask=mask):
        together = _logits(model, ids)
    for i, (layer, r) in enumerate(rows):
        with torch.no_grad(), steer(model, vector, r, layers=[layer]):
            alone = _logits(model, ids[i : i + 1])
        torch.testing.assert_close(together[i], alone[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_rows_joining_at_their_lowest_layer_equal_full_runs(arch):
    model, vector = tiny_model(arch), random_vector((0, 1, 2, 3), seed=3, unit=False)
    ids = torch.randint(0, 256, (2, 6), generator=torch.Generator().manual_seed(1))
    # rows 0-1: the inputs (unsteered); then row 2 steers layers 1-2 from block 1, rows 3-4 layer 3
    index, starts = torch.tensor([0, 1, 1, 0, 1]), torch.tensor([0, 0, 1, 3, 3])
    mask = torch.tensor([[False] * 4, [False] * 4, [False, True, True, False], [False, False, False, True],
                         [False, False, False, True]])
    norms = torch.tensor([0.0, 0.0, 1.5, -2.0, 3.0])
    with torch.no_grad(), steer(model, vector, norms, layers=[0, 1, 2, 3], layer_mask=mask), \
            fan_out_staged(model, index, starts):
        staged = _logits(model, ids)
    assert staged.shape[0] == 5
    with torch.no_grad():
        torch.testing.assert_close(staged[:2], _logits(model, ids), atol=1e-5, rtol=1e-5)
        for row, layers in ((2, [1, 2]), (3, [3]), (4, [3])):
            with steer(model, vector, float(norms[row]), layers=layers):
                full = _logits(model, ids[index[row] : index[row] + 1])
            torch.testing.assert_close(staged[row], full[0], atol=1e-5, rtol=1e-5)


def test_staged_rows_must_start_with_the_inputs():
    model = tiny_model("llama")
    ids = torch.randint(0, 256, (2, 5))
    with pytest.raises(SteeringError, match="first rows must be the input rows"), torch.no_grad(), \
            fan_out_staged(model, torch.tensor([1, 0, 0]), torch.tensor([0, 0, 2])):
        model(input_ids=ids)
    with pytest.raises(SteeringError, match="non-decreasing"), \
            fan_out_staged(model, torch.tensor([0, 1, 0]), torch.tensor([0, 2, 1])):
        pass


def _sequences(seed=2, prefix=()):
    g = torch.Generator().manual_seed(seed)
    prompts, continuations = [], []
    for length in (5, 8, 6):
        prompt = list(prefix) + torch.randint(1, 256, (length,), generator=g).tolist()
        for n in (1, 3):  # a prompt's continuations share its cache; one-token ones need no pass 2
            prompts.append(prompt)
            continuations.append(torch.randint(1, 256, (n,), generator=g).tolist())
    return prompts, continuations


@pytest.mark.parametrize("prefix", [(), tuple(range(40, 49))], ids=["own", "common-prefix"])
@pytest.mark.parametrize("arch", ARCHS)
def test_each_entrys_probe_equals_a_sweep_of_a_vector_steering_that_set(arch, prefix):
    """Against whole sequences, one forward each (no shared prompt or prefix)."""
    model, vector = tiny_model(arch), random_vector((0, 1, 2, 3), seed=3, unit=False)
    entries = (Entry((0,), 0.5), Entry((1, 2), 0.8), Entry((1,), 1.2), Entry((2, 3), 0.3), Entry((3,), 2.0))
    layout = PointLayout(entries)
    prompts, continuations = _sequences(prefix=prefix)
    probes = [3, 7, 9]
    got = score_entries(model, 0, prompts, continuations, vector, layout, probe_ids=probes)
    assert got.continuation.shape == (len(prompts), layout.size)
    for e, entry in enumerate(entries):
        band = SteeringVector({layer: vector[layer] for layer in entry.layers})
        want = score(model, 0, prompts, continuations, [0.0, entry.h, -entry.h],
                     Steering(band, entry.layers, share_prompts=False), probes)
        cols = [0, 1 + 2 * e, 2 + 2 * e]
        torch.testing.assert_close(got.continuation[:, cols], want.continuation, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got.probe_logprobs[:, cols], want.probe_logprobs, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got.logit_shift[:, cols], want.logit_shift, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_chunks_common_prefix_run_once_serves_every_pass(arch):
    """The runner computes the prefix once per chunk and each pass (here one prompt each, and the
    entries split in two groups) copies it: the scores equal whole sequences run one by one."""
    from repe_tradeoff.engine.layer_sets import AtlasRunner
    from repe_tradeoff.engine.scoring import TaskSequences
    from tests.helpers import ByteTok

    model, vector = tiny_model(arch), random_vector((0, 1, 2, 3), seed=3, unit=False)
    entries = (Entry((0,), 0.5), Entry((1, 2), 0.8), Entry((2, 3), 0.3), Entry((3,), 2.0))
    layout = PointLayout(entries)
    prompts, continuations = _sequences(seed=5, prefix=tuple(range(60, 72)))
    seqs = TaskSequences(prompts, continuations, [3, 7], owners=[i // 2 for i in range(len(prompts))])
    runner = AtlasRunner(model, ByteTok(), vector, layout, rows_per_pass=2)  # one prompt a pass, split layout
    got = runner.score(seqs, list(range(len(prompts))))
    for e, entry in enumerate(entries):
        band = SteeringVector({layer: vector[layer] for layer in entry.layers})
        want = score(model, 0, prompts, continuations, [0.0, entry.h, -entry.h],
                     Steering(band, entry.layers, share_prompts=False), [3, 7])
        cols = [0, 1 + 2 * e, 2 + 2 * e]
        torch.testing.assert_close(got.continuation[:, cols], want.continuation, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got.logit_shift[:, cols], want.logit_shift, atol=1e-4, rtol=1e-4)
