"""The benchmark's FLOP counter against hand counts, and its output-equality check."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from benchmarks import flops
from benchmarks.harness import OutputsDisagree, check_outputs, interleaved

# hidden 4, MLP 6, 2 query heads and 1 key/value head of size 2, vocabulary 10, 3 blocks
TINY = SimpleNamespace(hidden_size=4, intermediate_size=6, num_attention_heads=2,
                       num_key_value_heads=1, head_dim=2, vocab_size=10, num_hidden_layers=3)


def test_unavoidable_flops_match_a_hand_count() -> None:
    # two options share prompt A = [1, 2, 3]; prompt B = [7] has one three-token option
    prompts = [[1, 2, 3], [1, 2, 3], [7]]
    continuations = [[4, 5], [6], [8, 9, 9]]
    got = flops.unavoidable_flops(TINY, prompts, continuations, n_norms=2, first_steered=1)
    # weights per block: q 4·4 + k 4·2 + v 4·2 + o 4·4 = 48, gate/up/down 3·4·6 = 72 → 2·120 per token
    per_token = 240
    # positions run: A's 3 tokens (attending to 1, 2, 3 keys), option [4, 5]'s first token (4 keys),
    # option [6] none (its last token's output is never read), B's token (1 key), option
    # [8, 9, 9]'s first two (2 and 3 keys): 7 positions, 16 keys
    positions, keys = 7, 1 + 2 + 3 + 4 + 1 + 2 + 3
    attention = keys * 2 * 2 * 2 * 2  # scores and values: 2 FLOPs × 2 matmuls × 2 heads × size 2
    # logit rows per norm: after A (scores both options' first tokens), [4, 5]'s second token,
    # after B, and [8, 9, 9]'s second and third tokens
    logit_rows = 5
    assert got["positions"] == positions and got["logit_rows_per_norm"] == logit_rows
    assert got["lower_blocks"] == 1 * (per_token * positions + attention)  # block 0, once
    assert got["upper_blocks"] == 2 * 2 * (per_token * positions + attention)  # blocks 1–2, per norm
    assert got["logits"] == 2 * logit_rows * (2 * 4 * 10)
    assert got["total"] == 1936 + 7744 + 800


def test_linear_counter_counts_a_real_forward() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=10, hidden_size=4, intermediate_size=6, num_hidden_layers=3,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=2,
                         max_position_embeddings=16)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with flops.LinearCounter(model) as counter, torch.no_grad():
        model(torch.tensor([[1, 2, 3, 4, 5], [5, 4, 3, 2, 1]]))
    rows = 10  # 2 sequences × 5 positions, padding or not: everything the matmuls ran on
    assert counter.flops["blocks"] == rows * 3 * 240  # 3 blocks, 240 FLOPs per token (hand count above)
    assert counter.flops["logits"] == rows * 2 * 4 * 10
    assert flops.block_linear_flops(config) == 240 and flops.logit_flops(config) == 80


def test_check_outputs_passes_equal_outputs_and_covers_partial_columns() -> None:
    ref = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])
    outputs = {"ours#0": ref, "peer#0": ref + 1e-5, "loop#0": ref[:, [0, 2]].clone()}
    check = check_outputs(outputs, "ours#0", 1e-3, {"loop#0": [0, 2]})
    assert check["max"] == pytest.approx(1e-5, rel=1e-2)
    assert check["max_abs_diff"]["loop#0"] == 0.0 and check["n_values"] == 6


@pytest.mark.parametrize("bad, message", [
    (lambda ref: ref + torch.tensor([[0.0, 0.0, 0.01], [0.0, 0.0, 0.0]]), "peer#0 differs by 0.01"),
    (lambda ref: ref * float("nan"), "peer#0 differs by nan"),
    (lambda ref: ref[:, :2], "peer#0 has shape (2, 2)"),
])
def test_check_outputs_fails_when_outputs_differ(bad, message) -> None:
    ref = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])
    with pytest.raises(OutputsDisagree, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_outputs({"ours#0": ref, "peer#0": bad(ref)}, "ours#0", 1e-3)


def test_interleaved_rotates_the_order_and_honours_repetition_counts() -> None:
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    timer = lambda fn: ({"seconds": 1.0}, fn())
    runs, outputs = interleaved(fns, {"a": 3, "b": 3, "c": 1}, timer)
    assert calls == ["a", "b", "c", "b", "a", "a", "b"]  # rep 0: a b c; rep 1: b (c) a; rep 2: (c) a b
    assert [len(runs[n]) for n in "abc"] == [3, 3, 1] and outputs == {}
