"""The methods being compared. Each scores every (question, option) sequence of a :class:`Bench`
at its norms and returns the per-option log-likelihoods, a (sequences, norms) tensor (the
plain-forward limits return None: they only bound the cost).

* :func:`run_ours`: the sweep's scoring as ``run_sweep`` drives it (``score_chunk`` per chunk
  of items, then the task's records);
* :func:`run_loop`: the per-norm protocol, hooks anew per norm and one forward per sequence;
* :func:`run_peer`: the steering-vectors library, one ``apply`` per norm, batched forwards;
* :func:`run_limit_same_batches`: plain base-model forwards of given padded batches;
* :func:`run_limit_per_norm`: plain full-model forwards of every sequence, once per norm.
"""

from __future__ import annotations

import contextlib
import time
from types import SimpleNamespace

from benchmarks.inputs import Bench

MAIN_METHODS = ("ours", "ours_no_sharing", "loop", "peer", "limit_same_batches", "limit_per_norm")


def item_chunks(count: int, chunk_size: int) -> list[list[int]]:
    """Item ids in the chunks ``run_sweep`` scores them in."""
    return [list(range(s, min(s + chunk_size, count))) for s in range(0, count, chunk_size)]


def n_items(task) -> int:
    return len(task.items if task.kind == "alignment" else task.questions)


def sweep_plan(b: Bench, norms=None, layers=None, *, share_lower=True, share_prompts=True,
               batch_size=None):
    """The ``SweepPlan`` a sweep of ``b`` with these options builds (its defaults otherwise)."""
    from repe_tradeoff.workflows.sweep import SweepPlan

    extra = {"batch_size": batch_size} if batch_size else {}
    return SweepPlan(norms=list(b.norms if norms is None else norms), tasks=[b.task],
                     layers=list(b.layers if layers is None else layers), share_lower=share_lower,
                     share_prompts=share_prompts, **extra)


def run_ours(b: Bench, norms=None, layers=None, vector=None, *, share_lower=True,
             share_prompts=True, batch_size=None):
    """The sweep's scoring, chunk by chunk, including the records (no file writes)."""
    import torch

    from repe_tradeoff.engine.batching import score_chunk
    from repe_tradeoff.engine.steering import Steering

    plan = sweep_plan(b, norms, layers, share_lower=share_lower, share_prompts=share_prompts,
                      batch_size=batch_size)
    steering = Steering(b.vector if vector is None else vector, tuple(plan.layers), plan.positions,
                        plan.operator, plan.share_lower, plan.share_prompts)
    seqs, task = b.seqs, b.task
    out = torch.empty(len(seqs.prompts), len(plan.norms))
    n_records = 0
    for ids in item_chunks(n_items(task), plan.chunk_size):
        wanted = set(ids)
        rows = [r for r, owner in enumerate(seqs.owners) if owner in wanted]
        scores = score_chunk(b.model, b.tokenizer, seqs, rows, plan, steering)
        n_records += len(task.records(scores, plan.norms, ids))
        out[rows] = scores.continuation
    assert n_records == n_items(task) * len(plan.norms)
    return out


def option_logliks(logits, ids, prompt_lens, cont_lens) -> list[float]:
    """Summed log-probabilities of each row's continuation tokens from full-sequence logits."""
    import torch

    logprobs = torch.log_softmax(logits.float(), dim=-1)
    values = []
    for i, (lp, lc) in enumerate(zip(prompt_lens, cont_lens)):
        pos = torch.arange(lp - 1, lp + lc - 1, device=logits.device)
        values.append(float(logprobs[i, pos, ids[i, lp : lp + lc]].sum()))
    return values


def run_loop(b: Bench, norms=None, per_norm_seconds: list | None = None):
    """The per-norm protocol: hooks anew per norm, one full forward per sequence (batch 1)."""
    import torch

    from repe_tradeoff.engine.steering import steer

    norms = b.norms if norms is None else norms
    out = torch.empty(len(b.seqs.prompts), len(norms))
    with torch.no_grad():
        for k, r in enumerate(norms):
            t0 = time.perf_counter()
            with steer(b.model, b.vector, r, layers=b.layers):
                for s, (p, c) in enumerate(zip(b.seqs.prompts, b.seqs.continuations)):
                    ids = torch.tensor([list(p) + list(c)], device=b.model.device)
                    out[s, k] = option_logliks(b.model(ids).logits, ids, [len(p)], [len(c)])[0]
            if per_norm_seconds is not None:
                per_norm_seconds.append(time.perf_counter() - t0)
    return out


def loop_norms(b: Bench, count: int) -> list[int]:
    """Indices of the norms the loop runs: the extremes first, then inwards (0 = all)."""
    n = len(b.norms)
    if count <= 0 or count >= n:
        return list(range(n))
    return sorted(sorted(range(n), key=lambda k: (-abs(b.norms[k]), k))[:count])


def padded_batches(b: Bench, batch: int):
    """Right-padded batches of every (question, option) sequence, similar lengths together."""
    import torch

    pad = b.tokenizer.pad_token_id if b.tokenizer.pad_token_id is not None else 0
    seqs = [list(p) + list(c) for p, c in zip(b.seqs.prompts, b.seqs.continuations)]
    order = sorted(range(len(seqs)), key=lambda s: (len(seqs[s]), s))
    out = []
    for start in range(0, len(order), batch):
        rows = order[start : start + batch]
        width = max(len(seqs[s]) for s in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, s in enumerate(rows):
            ids[i, : len(seqs[s])] = torch.tensor(seqs[s])
            mask[i, : len(seqs[s])] = 1
        out.append((rows, ids.to(b.model.device), mask.to(b.model.device)))
    return out


def peer_vector(b: Bench):
    """The steering-vectors equivalent of ``b.vector``: ``apply(model, multiplier=r)`` adds
    r · the unit direction to each steered block's output, as the sweep's add operator does."""
    from steering_vectors import SteeringVector as PeerVector

    return PeerVector(layer_activations={l: b.vector[l].float().clone() for l in b.layers},
                      layer_type="decoder_block")


def run_peer(b: Bench, batch: int, norms=None):
    """The steering-vectors library: one ``apply`` per norm, batched full forwards."""
    import torch

    norms = b.norms if norms is None else norms
    vec, batches = peer_vector(b), padded_batches(b, batch)
    out = torch.empty(len(b.seqs.prompts), len(norms))
    with torch.no_grad():
        for k, r in enumerate(norms):
            with vec.apply(b.model, multiplier=r):
                for rows, ids, mask in batches:
                    logits = b.model(input_ids=ids, attention_mask=mask).logits
                    values = option_logliks(logits, ids, [len(b.seqs.prompts[s]) for s in rows],
                                            [len(b.seqs.continuations[s]) for s in rows])
                    out[rows, k] = torch.tensor(values)
    return out


def run_limit_per_norm(b: Bench, batch: int, n_norms=None) -> None:
    """Plain full-model batched forwards of every sequence, once per norm."""
    import torch

    batches = padded_batches(b, batch)
    with torch.no_grad():
        for _ in range(len(b.norms) if n_norms is None else n_norms):
            for _, ids, mask in batches:
                _ = b.model(input_ids=ids, attention_mask=mask).logits


@contextlib.contextmanager
def dry_base(model):
    """Record every (input_ids, attention_mask) given to the base model, without running it.

    The base model returns zeros of the right shape instead, so a whole scoring run costs only
    its bookkeeping; the recorded batches are exactly the ones a real run would compute.
    """
    import torch

    base, seen = model.base_model, []

    def fake_forward(input_ids=None, attention_mask=None, **kwargs):
        seen.append((input_ids.clone(), attention_mask.clone()))
        hidden = torch.zeros(*input_ids.shape, model.config.hidden_size, device=input_ids.device,
                             dtype=model.dtype)
        return SimpleNamespace(last_hidden_state=hidden)

    base.forward = fake_forward
    try:
        yield seen
    finally:
        del base.forward


def capture_same_batches(b: Bench, batch_size=None):
    """The padded batches ``ours_no_sharing`` runs through the base model."""
    with dry_base(b.model) as seen:
        run_ours(b, share_lower=False, share_prompts=False, batch_size=batch_size)
    return seen


def run_limit_same_batches(b: Bench, batches) -> None:
    """Plain base-model forwards of exactly ``batches``: no steering, logits or records."""
    import torch

    with torch.no_grad():
        for ids, mask in batches:
            b.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)


def method_fns(b: Bench, peer_batch: int, same_batches, loop_idx, loop_times, ours_batch=None):
    """Zero-argument callables of every method, by name."""
    size = {"batch_size": ours_batch}
    return {
        "ours": lambda: run_ours(b, **size),
        "ours_flat_shared_lower": lambda: run_ours(b, share_prompts=False, **size),
        "ours_no_sharing": lambda: run_ours(b, share_lower=False, share_prompts=False, **size),
        "loop": lambda: run_loop(b, [b.norms[k] for k in loop_idx], loop_times),
        "peer": lambda: run_peer(b, peer_batch),
        "limit_same_batches": lambda: run_limit_same_batches(b, same_batches),
        "limit_per_norm": lambda: run_limit_per_norm(b, peer_batch),
    }


def warm_up(b: Bench) -> None:
    """One small forward of each kind, so no method pays for first-call setup."""
    import torch

    from repe_tradeoff.engine.steering import steer

    ids = torch.tensor([list(b.seqs.prompts[0]) + list(b.seqs.continuations[0])], device=b.model.device)
    with torch.no_grad(), steer(b.model, b.vector, 1.0, layers=b.layers):
        b.model(ids)
        b.model(ids.repeat(8, 1))
    with torch.no_grad():
        b.model.base_model(input_ids=ids.repeat(8, 1), use_cache=False)
